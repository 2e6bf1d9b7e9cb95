"""Which of the paper's three transfer claims hold in a results store of the mfpcba9_transfer study.

    .venv/bin/python scripts/paper_claims.py results/mfpcba9_transfer [--metric r2] [--tie 0.005] [--min-seeds 2]

Reads the study ``mfpcba9_transfer`` (every strategy, Set Transformer LF model) and, when present,
its companion ``mfpcba9_transfer_sum`` (predicted_label and embeddings from the sum-readout LF model),
averages the test metric over split seeds per (task, setting, method), and counts per task wins,
ties (|change| < --tie) and losses for:

(a) each LF-model strategy against base in the inductive setting (the valid/test molecules are new:
    only LF-model outputs describe them);
(b) tune_readout (adaptive readout) against tune_vgae (sum readout), both settings;
(c) embeddings (and predicted_label) from the Set Transformer LF model against the same strategy from
    the sum-readout LF model, both settings.

Each line prints W/T/L over the tasks both sides ran, the mean change (positive = better), and the
two-sided sign-test p-value over the non-tied tasks. Only tasks with every compared method are counted,
and with ``--min-seeds K`` only a method whose metric is defined on at least K split seeds of the task
(a metric of censored labels can rest on one seed: active_auroc needs a censored and a fitted test
molecule, R2 two fitted ones).
"""

from __future__ import annotations

import argparse
import math
import sys

import polars as pl

from mfray.results.report import higher_is_better, seed_values
from mfray.results.store import ResultsStore

MAIN, SUM = "mfpcba9_transfer", "mfpcba9_transfer_sum"
LF_STRATEGIES = ("predicted_label", "embeddings", "tune_vgae", "tune_readout", "delta", "hybrid_label")


def task_means(store: ResultsStore, study: str, metric: str) -> pl.DataFrame:
    """Mean over split seeds per (task, setting, strategy), with the number of seeds."""
    df = store.read(study)
    if df.is_empty():
        return pl.DataFrame(schema={"task": pl.String, "setting": pl.String, "strategy": pl.String,
                                    "n": pl.UInt32, "mean": pl.Float64})
    vals = seed_values(df, metric, "test")
    return (vals.group_by("task", "setting", "strategy")
            .agg(n=pl.col("value").count(), mean=pl.col("value").mean()))


def sign_test(wins: int, losses: int) -> float:
    n = wins + losses
    if n == 0:
        return float("nan")
    k = min(wins, losses)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def compare(a: pl.DataFrame, b: pl.DataFrame, setting: str, metric: str, tie: float) -> dict | None:
    """a vs b (frames of task, mean) in one setting: W/T/L, mean change, sign-test p."""
    j = (a.filter(pl.col("setting") == setting).select("task", x="mean")
         .join(b.filter(pl.col("setting") == setting).select("task", y="mean"), on="task")
         .drop_nulls())
    if j.is_empty():
        return None
    sign = 1.0 if higher_is_better(metric) else -1.0
    d = (j["x"] - j["y"]) * sign
    w, l_ = int((d >= tie).sum()), int((d <= -tie).sum())
    return {"tasks": j.height, "W": w, "T": j.height - w - l_, "L": l_, "mean": float(d.mean()),
            "p": sign_test(w, l_), "per_task": dict(zip(j["task"], d.round(3), strict=True))}


def fmt(name: str, r: dict | None) -> str:
    if r is None:
        return f"| {name} | no tasks | | | |"
    per = ", ".join(f"{t} {v:+.3f}" for t, v in sorted(r["per_task"].items()))
    return f"| {name} | {r['W']}/{r['T']}/{r['L']} of {r['tasks']} | {r['mean']:+.3f} | {r['p']:.2f} | {per} |"


def _at_least_1(text: str) -> int:
    try:
        k = int(text)
    except ValueError:
        k = 0
    if k < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number >= 1")
    return k


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("store", help="results store root holding study=mfpcba9_transfer[_sum]/")
    ap.add_argument("--metric", default="r2")
    ap.add_argument("--tie", type=float, default=0.005, help="|change| below this is a tie (default 0.005)")
    ap.add_argument("--min-seeds", type=_at_least_1, default=1, metavar="K",
                    help="count a task's method only where the metric is defined on at least K split seeds (default 1)")
    ap.add_argument("--extra", metavar="CSV", help="per-task means measured elsewhere (columns study, task, setting, "
                    "strategy, metric, mean; '#' lines are comments), added for tasks the store lacks")
    args = ap.parse_args(argv)
    store = ResultsStore(args.store)
    if MAIN not in store.studies():
        print(f"error: {args.store}: no results of study {MAIN!r} (studies: {', '.join(store.studies()) or 'none'})",
              file=sys.stderr)
        return 2
    try:
        main_df = task_means(store, MAIN, args.metric)
        sum_df = task_means(store, SUM, args.metric) if SUM in store.studies() else None
    except Exception as e:  # a metric the store lacks
        print(f"error: {args.store}: {e}", file=sys.stderr)
        return 2

    if args.extra:
        try:
            extra = pl.read_csv(args.extra, comment_prefix="#").filter(pl.col("metric") == args.metric)
        except (OSError, pl.exceptions.PolarsError) as e:
            print(f"error: --extra {args.extra}: {e}", file=sys.stderr)
            return 2

        def add(df: pl.DataFrame | None, study: str) -> pl.DataFrame | None:
            rows = extra.filter(pl.col("study") == study)
            if df is not None:
                rows = rows.filter(~pl.col("task").is_in(df["task"].unique().to_list()))
            rows = rows.select("task", "setting", "strategy", n=pl.lit(None, pl.UInt32), mean=pl.col("mean").cast(pl.Float64))
            return rows if df is None else pl.concat([df, rows], how="vertical_relaxed")

        main_df, sum_df = add(main_df, MAIN), add(sum_df, SUM)

    if args.min_seeds > 1:  # measured-elsewhere means (n unknown) stay
        main_df, sum_df = ((df.filter(pl.col("n").is_null() | (pl.col("n") >= args.min_seeds))
                            if df is not None else None) for df in (main_df, sum_df))

    def strat(df: pl.DataFrame, s: str) -> pl.DataFrame:
        return df.filter(pl.col("strategy") == s)

    tasks = sorted(main_df["task"].unique().to_list())
    print(f"test {args.metric}, mean over split seeds per task; {len(tasks)} task(s): {', '.join(tasks)}; "
          f"tie = |change| < {args.tie}"
          + (f"; a method counts where {args.metric} is defined on >= {args.min_seeds} seeds" if args.min_seeds > 1 else "")
          + "\n")
    print("| comparison | W/T/L | mean change | sign-test p | per task |\n|---|---|---:|---:|---|")
    base = strat(main_df, "base")
    for s in LF_STRATEGIES:
        print(fmt(f"(a) {s} vs base, inductive", compare(strat(main_df, s), base, "inductive", args.metric, args.tie)))
    for setting in ("inductive", "transductive"):
        print(fmt(f"(b) tune_readout vs tune_vgae, {setting}",
                  compare(strat(main_df, "tune_readout"), strat(main_df, "tune_vgae"), setting, args.metric, args.tie)))
    if sum_df is not None:
        for s in ("embeddings", "predicted_label"):
            for setting in ("inductive", "transductive"):
                print(fmt(f"(c) {s}: ST LF vs sum LF, {setting}",
                          compare(strat(main_df, s), strat(sum_df, s), setting, args.metric, args.tie)))
    else:
        print(f"| (c) | no study {SUM!r} in the store | | | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
