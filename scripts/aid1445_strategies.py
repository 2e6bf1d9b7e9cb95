"""Evidence run: every augmentation strategy on the bundled AID 1445 data over its 5 MF-PCBA split seeds.

    python scripts/aid1445_strategies.py [--epochs 500] [--patience 100] [--jobs 2] [--out runs/aid1445_table]

Trains one HF model per (strategy, seed) with the reference protocol (Adam 1e-4, batch 32,
ReduceLROnPlateau 0.75/15, early stopping on validation loss, best-validation weights evaluated on
test), in ``--jobs`` processes of one torch thread each, and prints test MAE / R2 mean +- std.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
STRATEGIES = ["base", "label", "predicted_label", "hybrid_label", "embeddings"]


def one(args: tuple[str, int, int, int, str, str]) -> dict:
    strategy, seed, epochs, patience, store_root, out = args
    from mfray.data.catalog import resolve_spec
    from mfray.data.tasks import load_task
    from mfray.run.featurize import featurize_dataset
    from mfray.train.loop import TrainConfig
    from mfray.train.task import HFRunConfig, train_hf

    spec = resolve_spec(str(ROOT / "data_specs" / "aid1445.toml"))
    store = featurize_dataset(spec, store_root, executor="local", progress=False, log=lambda m: None).store
    task = load_task(store, seed)
    cfg = HFRunConfig(strategy=strategy, train=TrainConfig(max_epochs=epochs, patience=patience, seed=seed))
    res = train_hf(task, cfg, Path(out) / strategy / f"seed{seed}")
    return {"strategy": strategy, "seed": seed, **{f"test_{k}": v for k, v in res.metrics["test"].items()},
            "best_epoch": res.fit.best_epoch, "epochs": res.fit.epochs_run, "seconds": res.fit.seconds}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=500)
    ap.add_argument("--patience", type=int, default=100)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--out", default=str(ROOT / "runs" / "aid1445_table"))
    ap.add_argument("--store-root", default=None)
    a = ap.parse_args()
    from mfray.data.catalog import resolve_spec
    from mfray.run.featurize import featurize_dataset

    spec = resolve_spec(str(ROOT / "data_specs" / "aid1445.toml"))
    featurize_dataset(spec, a.store_root, executor="local", progress=False, log=lambda m: None)
    jobs = [(s, seed, a.epochs, a.patience, a.store_root, a.out) for s in a.strategies.split(",") for seed in spec.split.seeds]
    t0 = time.time()
    rows = []
    with ProcessPoolExecutor(a.jobs) as ex:
        for r in ex.map(one, jobs):
            rows.append(r)
            print(json.dumps(r), flush=True)
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "results.json").write_text(json.dumps(rows, indent=1))
    import polars as pl

    df = pl.DataFrame(rows)
    table = df.group_by("strategy", maintain_order=True).agg(
        pl.col("test_mae").mean().alias("mae_mean"), pl.col("test_mae").std().alias("mae_std"),
        pl.col("test_r2").mean().alias("r2_mean"), pl.col("test_r2").std().alias("r2_std"),
        pl.col("best_epoch").mean().alias("best_epoch"), pl.len().alias("seeds"))
    print(f"\nAID 1445, test set, mean +- std over {df['seed'].n_unique()} seeds ({time.time() - t0:.0f} s wall)")
    print(f"{'strategy':<18}{'MAE':>18}{'R2':>18}{'best epoch':>12}")
    for r in table.iter_rows(named=True):
        print(f"{r['strategy']:<18}{r['mae_mean']:>9.3f} +- {r['mae_std']:<6.3f}{r['r2_mean']:>9.3f} +- {r['r2_std']:<6.3f}{r['best_epoch']:>12.0f}")


if __name__ == "__main__":
    main()
