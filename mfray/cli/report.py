"""``mfray report STORAGE``: tables (Markdown, LaTeX, CSV) and figures from the results store."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mfray.cli.common import tell_skipped
from mfray.utils.errors import MfrayError


def add_parser(sub) -> None:
    p = sub.add_parser(
        "report",
        help="tables and figures from a results store",
        description="Read the results store (one Parquet part per finished run) and print, per study and "
        "metric: mean +- std over split seeds per task and strategy, the change over the base strategy, "
        "average ranks, and paired tests across tasks (Wilcoxon) and across seeds. The lf_linear floor is "
        "shown beside the label strategies.",
    )
    p.add_argument("storage", metavar="STORAGE",
                   help="results store root (a folder or URI holding study=<name>/ folders), or a study storage "
                   "root that has one under results/")
    p.add_argument("--study", metavar="NAME", help="report this study only (default: every study in the store)")
    p.add_argument("--format", dest="fmt", choices=("md", "latex", "csv"), default="md",
                   help="table format (default md; csv is one long table with every number)")
    p.add_argument("--metric", metavar="M[,M...]",
                   help="metrics to report, comma-separated (default: r2,mae where present, else every metric)")
    p.add_argument("--fold", default="test", choices=("test", "valid", "train"), help="fold to report (default test)")
    p.add_argument("--base", default="base", metavar="STRATEGY",
                   help="strategy that changes are measured against (default base)")
    p.add_argument("--seed-test", choices=("ttest", "wilcoxon"), default="ttest",
                   help="paired test across split seeds within a task (default ttest)")
    p.add_argument("--transpose", action="store_true",
                   help="tables with tasks as rows and methods as columns (for many tasks; no effect on csv)")
    p.add_argument("--plots", metavar="DIR",
                   help="also write figures into DIR: per metric by task, gain over base, gain heatmap; per task a "
                   "parity plot when STORAGE is a study storage whose runs/ kept their predictions")
    p.add_argument("--plot-format", metavar="EXT[,EXT]", default="png",
                   help="figure formats, comma-separated, from png, pdf, svg (default png)")
    p.add_argument("--out", metavar="FILE", help="write the report to FILE instead of printing it")
    p.set_defaults(func=run)


def _store(storage: str):
    from mfray.results.store import ResultsStore

    store = ResultsStore(storage)
    if not store.studies():  # a study's storage root (local or object storage): its results/ store
        nested = ResultsStore(f"{storage.rstrip('/')}/results" if "://" in storage else Path(storage) / "results")
        if nested.studies():
            return nested
    if "://" not in storage and not Path(storage).exists():
        raise MfrayError(f"results store {storage} does not exist")
    if not store.studies():
        raise MfrayError(f"no finished runs under {storage} (expected study=<name>/run-<key>.parquet parts)")
    return store


def run(args: argparse.Namespace) -> int:
    from mfray.results.plots import check_formats
    from mfray.results.report import make_report
    from mfray.utils.io import atomic_path

    formats = check_formats(args.plot_format.split(","))
    if args.plot_format != "png" and not args.plots:
        raise MfrayError("--plot-format needs --plots DIR (where to write the figures)")
    store = _store(args.storage)
    if args.study is not None and args.study not in store.studies():
        raise MfrayError(f"unknown study {args.study!r} in {store.uri}; studies: {', '.join(store.studies())}")
    metrics = [m.strip() for m in args.metric.split(",") if m.strip()] if args.metric else None
    try:
        text = make_report(store, study=args.study, metrics=metrics, fmt=args.fmt, plots_dir=args.plots,
                           base=args.base, fold=args.fold, seed_test=args.seed_test, plot_formats=formats,
                           transpose_tables=args.transpose)
    finally:
        tell_skipped(store)
    if args.out:
        with atomic_path(args.out) as tmp:
            tmp.write_text(text)
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    if args.plots:
        print(f"figures in {args.plots}", file=sys.stderr)
    return 0
