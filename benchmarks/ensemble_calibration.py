"""How well the std across an exported ensemble's members (`mfray study export` -> `mfray predict`) tracks
its error, measured on molecules the members did not train on.

An exported model's members are the study's refits, one per split seed, so each was trained on a
different split: a molecule in one member's test fold may be in another's training fold. Scoring the
whole ensemble on any member's test fold would let members that trained on a molecule vouch for it.
So, per molecule with a fitted (uncensored) HF value, only the members for which it lay in the test
fold are used ("held-out members"; validation molecules count as seen, since they chose the best
epoch); molecules with at least two held-out members are scored: the mean and std (ddof 1, as
`mfray predict`) of those members' predictions, taken from each refit's own predictions.parquet.

Prints per strategy: molecules scored, RMSE of the held-out mean, Spearman correlation of |error| with
std (and its p-value), the share within mean ± 1 and ± 2 std (a Gaussian would give 68% and 95%) and
the mean std, as `mfray predict` writes it.

    python benchmarks/ensemble_calibration.py STORAGE STUDY --task TASK [--setting S] [--strategies a,b]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import polars as pl


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("storage")
    ap.add_argument("study")
    ap.add_argument("--task", required=True, help="task or dataset name")
    ap.add_argument("--setting")
    ap.add_argument("--strategies", help="default: every GNN strategy with kept predictions")
    ap.add_argument("--min-members", type=int, default=2)
    a = ap.parse_args()
    from scipy.stats import spearmanr

    from mfray.results.report import latest_runs
    from mfray.results.store import ResultsStore

    root = Path(a.storage)
    df = latest_runs(ResultsStore(root / "results").read(a.study))
    df = df.filter((pl.col("task") == a.task) | (pl.col("dataset") == a.task))
    if a.setting:
        df = df.filter(pl.col("setting") == a.setting)
    runs = df.select("run_key", "strategy", "setting", "split_seed").unique()
    wanted = set(a.strategies.split(",")) if a.strategies else None
    print(f"{'strategy':<16}{'setting':<14}{'members':>8}{'mols':>6}{'rmse':>7}{'spearman':>9}{'p':>8}"
          f"{'in1sd':>7}{'in2sd':>7}{'mean sd':>8}")
    for (strategy, setting), grp in runs.group_by(["strategy", "setting"], maintain_order=True):
        if wanted and strategy not in wanted:
            continue
        frames = []
        for key, seed in grp.select("run_key", "split_seed").iter_rows():
            p = root / "runs" / key / "predictions.parquet"
            if not p.is_file():
                frames = []
                break
            frames.append(pl.read_parquet(p).with_columns(pl.lit(seed).alias("seed")))
        if len(frames) < a.min_members:
            continue
        allp = pl.concat(frames)
        held = allp.filter((pl.col("fold") == "test") & (pl.col("censor") == 0))
        per = held.group_by("mol_id").agg(pl.col("y_true").first(), pl.col("y_pred").mean().alias("mean"),
                                          pl.col("y_pred").std(ddof=1).alias("std"), pl.len().alias("k"))
        per = per.filter(pl.col("k") >= a.min_members)
        if per.height < 5:
            print(f"{strategy:<16}{setting:<14}{len(frames):>8}{per.height:>6}  too few molecules with >= "
                  f"{a.min_members} held-out members")
            continue
        err = (per["mean"] - per["y_true"]).abs().to_numpy()
        std = per["std"].to_numpy()
        rho, p = spearmanr(err, std)
        rmse = float(np.sqrt(np.mean(err ** 2)))
        print(f"{strategy:<16}{setting:<14}{len(frames):>8}{per.height:>6}{rmse:>7.3f}{rho:>9.3f}{p:>8.3f}"
              f"{np.mean(err <= std):>7.0%}{np.mean(err <= 2 * std):>7.0%}{np.mean(std):>8.3f}")


if __name__ == "__main__":
    main()
