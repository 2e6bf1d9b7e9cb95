"""``mfray predict MODEL INPUT``: score new molecules with a trained model (any strategy), an exported
study model (an ensemble: mean and std across its members) or an LF model."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mfray.cli.common import at_least
from mfray.utils.errors import MfrayError


def add_parser(sub) -> None:
    p = sub.add_parser(
        "predict", help="score new molecules (a CSV/Parquet of SMILES) with a trained model",
        description="Score the SMILES of INPUT with MODEL: a model folder from `mfray study export` (its split-seed "
        "models as an ensemble: mean prediction and std across members), a `mfray train` run folder or best.ckpt, or "
        "an LF model (lf.ckpt). Molecules are standardised and featurised with the model's own recipe; strategies "
        "that read an LF model's predictions or embeddings run it first; label / hybrid_label / transductive delta "
        "models read each molecule's measured LF value from --lf-column. Writes the input columns + prediction "
        "(+ prediction_std for an ensemble, + lf_source for hybrid_label, + the graph embedding with --embeddings) "
        "in input order; rejected rows go to <out>.rejected.csv with their row number and reason.")
    p.add_argument("model", metavar="MODEL", help="model folder (mfray study export / mfray train --out) or checkpoint")
    p.add_argument("input", metavar="INPUT", help="CSV (.csv, .csv.gz, .tsv) or Parquet file with a SMILES column")
    p.add_argument("--out", metavar="FILE", help="predictions file, .csv or .parquet (default <INPUT stem>.preds.csv)")
    p.add_argument("--smiles-column", metavar="NAME", help="the SMILES column (default: a column named smiles, any case)")
    p.add_argument("--lf-column", metavar="NAME", help="measured LF values (label, hybrid_label, transductive delta "
                   "models; in the units the dataset's LF column had); default: a column named like the LF target")
    p.add_argument("--lf-checkpoint", metavar="CKPT", help="the LF model the HF model reads (default: the one in the "
                   "model folder, or the path the model recorded)")
    p.add_argument("--embeddings", action="store_true", help="also write each molecule's graph embedding "
                   "(an ensemble: its first member's); CSV: one column per dimension")
    p.add_argument("--batch-size", type=at_least(1), default=256, metavar="N", help="molecules per forward pass (default 256)")
    p.add_argument("--chunk-rows", type=at_least(1), default=4096, metavar="N",
                   help="rows read, featurised and written at a time (bounds memory; default 4096)")
    p.add_argument("--executor", choices=("auto", "local", "ray"), default="auto",
                   help="local: this process; ray: Ray Data actors (all CPUs); auto: ray from 50,000 rows (default)")
    p.add_argument("--workers", type=at_least(1), metavar="N", help="Ray Data actors (default: one per CPU)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def _default_out(src: Path) -> Path:
    name = src.name
    for suffix in (".csv.gz", ".tsv.gz", ".parquet", ".csv", ".tsv", ".pq", ".smi", ".txt"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return src.with_name(f"{name}.preds.csv")


def run(args: argparse.Namespace) -> int:
    from mfray.predict import load_predictor
    from mfray.predict.stream import count_rows
    from mfray.run.predict import predict_file

    src = Path(args.input)
    out = Path(args.out) if args.out else _default_out(src)
    if not out.name.lower().endswith((".csv", ".parquet", ".pq")):
        raise MfrayError(f"--out {out}: give a .csv or .parquet file name")
    predictor = load_predictor(args.model, args.lf_checkpoint)
    print(f"model: {predictor.describe()}", file=sys.stderr)
    if args.lf_column and not predictor.needs_lf_label:
        print(f"note: --lf-column {args.lf_column} is not used: the {predictor.strategy or 'LF'} model reads no measured "
              "LF value (label, hybrid_label and transductive delta models do)", file=sys.stderr)
    progress = not args.no_progress and sys.stderr.isatty()
    total = count_rows(src) if src.exists() else None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    cols = [TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*cols, disable=not progress, transient=False) as prog:
        task = prog.add_task("rows", total=total)
        summary = predict_file(predictor, src, out, smiles_column=args.smiles_column, lf_column=args.lf_column,
                               embeddings=args.embeddings, batch_size=args.batch_size, chunk_rows=args.chunk_rows,
                               executor=args.executor, workers=args.workers,
                               on_rows=lambda n: prog.update(task, advance=n),
                               log=lambda m: print(m, file=sys.stderr))
    rate = summary.n_input / summary.seconds if summary.seconds > 0 else float("nan")
    print(f"scored {summary.n_scored:,} of {summary.n_input:,} rows in {summary.seconds:.1f} s ({rate:,.0f} rows/s, "
          f"{summary.executor}) -> {summary.out}")
    if summary.n_rejected:
        by = ", ".join(f"{k} {v:,}" for k, v in sorted(summary.rejected_by.items(), key=lambda x: -x[1]))
        print(f"rejected {summary.n_rejected:,} rows ({by}) -> {summary.rejected_file}")
    return 0
