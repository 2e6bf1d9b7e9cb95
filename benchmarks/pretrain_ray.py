"""LF pretraining on Ray Train: throughput and memory per worker, 1 vs N workers (issue: Ray Train pretraining).

Pretrains the paper's LF model (GCN supervised VGAE 3 x 256, 50-d latents, Set Transformer readout,
~14M parameters, batch 512 per worker, lr 5e-5) on a real primary screen through
``mfray.run.pretrain.pretrain_lf_distributed`` (TorchTrainer, DDP over gloo on CPU), once per worker
count, and prints beside the 1-worker baseline of the same run:

  - training throughput in graphs/s (all workers together, and per worker) and the ratio N/1;
  - peak RSS of every worker process, measured by the worker (getrusage maxrss), and the part of it
    that is the worker's data: each worker loads only its shard of the training set (data MB falls
    as 1/N), while the model, optimiser and Set Transformer activations at batch 512 stay per worker;
  - the time of a full epoch over the training set, extrapolated from the measured seconds per step.

A full epoch of ~200k molecules with the Set Transformer runs at ~20-30 graphs/s per CPU core, i.e.
hours, so by default every worker takes ``--max-steps`` optimiser steps (the WHOLE training set is still
loaded, so memory is real); ``--full-epoch`` trains one whole epoch instead. Validation runs on a small
``--valid-fraction`` (the default LF split holds out 5%); its time is reported and extrapolated to 5%.

    python benchmarks/pretrain_ray.py [--spec serine] [--workers 1,2] [--max-steps 6 | --full-epoch]

The store of ``--spec`` must be featurised first (``mfray featurize serine``, a few minutes; it goes
under $MFRAY_CACHE); the benchmark featurises it in-process if it is missing.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
import uuid
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spec", default="serine", help="dataset spec with a large LF set (default serine, 212k molecules)")
    ap.add_argument("--workers", default="1,2", help="worker counts to compare; the first is the baseline")
    ap.add_argument("--max-steps", type=int, default=6, help="optimiser steps per worker (default 6)")
    ap.add_argument("--full-epoch", action="store_true", help="train one whole epoch instead of --max-steps")
    ap.add_argument("--batch-size", type=int, default=512, help="per worker (default 512, the paper's LF batch)")
    ap.add_argument("--readout", default="set_transformer")
    ap.add_argument("--valid-fraction", type=float, default=0.005)
    ap.add_argument("--max-molecules", type=int, help="subsample the LF set (default: all of it)")
    ap.add_argument("--storage", help="Ray Train storage (default: a temporary folder)")
    a = ap.parse_args()

    import torch

    from mfray.data.catalog import resolve_spec
    from mfray.run.featurize import featurize_dataset
    from mfray.run.pretrain import pretrain_lf_distributed
    from mfray.run.runtime import ensure_ray
    from mfray.train.loop import TrainConfig
    from mfray.train.task import LFRunConfig

    t = time.perf_counter()
    res = featurize_dataset(resolve_spec(a.spec), None, executor="local", progress=False, log=lambda m: None)
    store = res.store
    print(f"store {store.path} ({store.manifest['counts']['molecules']:,} molecules; "
          f"{'cache hit' if res.cache_hit else f'featurised in {time.perf_counter() - t:.0f} s'})")
    ensure_ray()
    import ray

    cpus = int(ray.cluster_resources().get("CPU", 0))
    counts = [int(w) for w in a.workers.split(",")]
    cfg = LFRunConfig(readout=a.readout, valid_fraction=a.valid_fraction, max_molecules=a.max_molecules,
                      train=TrainConfig(lr=5e-5, batch_size=a.batch_size, max_epochs=1, patience=0,
                                        max_steps_per_epoch=None if a.full_epoch else a.max_steps))
    rows = []
    with tempfile.TemporaryDirectory(prefix="mfray-bench-") as tmp:
        storage = a.storage or str(Path(tmp) / "ray")
        for n in counts:
            t0 = time.perf_counter()
            r = pretrain_lf_distributed(store.path, cfg, Path(tmp) / f"out{n}", storage_path=storage,
                                        name=f"bench-{n}w-{uuid.uuid4().hex[:8]}", num_workers=n, log=lambda m: None)
            wall = time.perf_counter() - t0
            h = r.history[-1]
            meta = torch.load(r.checkpoint, weights_only=True)["meta"]
            rows.append({"workers": n, "graphs_per_s": h["graphs_per_s"], "steps": h["steps"], "graphs": h["graphs"],
                         "train_s": h["train_seconds"], "valid_s": h["seconds"] - h["train_seconds"],
                         "rss": r.peak_rss_mb, "load_s": r.load_seconds, "data_mb": r.data_mb, "wall": wall,
                         "n_train": meta["n_train"], "n_valid": meta["n_valid"]})
            print(f"  {n} worker(s): {h['steps']} steps x {a.batch_size} graphs per worker in {h['train_seconds']:.0f} s, "
                  f"{h['graphs_per_s']:.1f} graphs/s, peak RSS per worker "
                  + ", ".join(f"{m:.0f}" for m in r.peak_rss_mb) + f" MB ({wall:.0f} s with Ray start-up)", flush=True)

    n_train, n_valid = rows[0]["n_train"], rows[0]["n_valid"]
    print()
    print(f"LF pretraining on Ray Train, {a.spec}: {n_train:,} training molecules (whole set loaded, sharded over "
          f"the workers), {n_valid:,} validation; {a.readout} readout, batch {a.batch_size} per worker, CPU (gloo), "
          f"1 torch thread per worker, {cpus} CPUs in Ray, "
          f"{'one full epoch' if a.full_epoch else f'{a.max_steps} steps per worker'}")
    print(f"{'workers':>7}{'graphs/s':>10}{'per worker':>12}{'vs 1':>7}{'peak RSS MB/worker':>20}{'vs 1':>7}"
          f"{'data MB/worker':>16}{'load s':>8}{'s/step':>8}{'full epoch h':>14}{'valid 5% min':>14}")
    base = rows[0]
    for r in rows:
        per_worker = r["graphs_per_s"] / r["workers"]
        rss = max(r["rss"]) if r["rss"] else float("nan")
        base_rss = max(base["rss"]) if base["rss"] else float("nan")
        s_step = r["train_s"] / max(r["steps"], 1)
        full_steps = math.ceil(n_train / (r["workers"] * a.batch_size))
        epoch_h = full_steps * s_step / 3600
        valid_5 = r["valid_s"] * (0.05 * (n_train + n_valid)) / max(n_valid, 1) / 60
        print(f"{r['workers']:>7}{r['graphs_per_s']:>10.1f}{per_worker:>12.1f}{r['graphs_per_s'] / base['graphs_per_s']:>7.2f}"
              f"{' / '.join(f'{m:.0f}' for m in r['rss']):>20}{rss / base_rss:>7.2f}"
              f"{' / '.join(f'{m:.0f}' for m in r['data_mb']):>16}"
              f"{max(r['load_s'] or [0]):>8.1f}{s_step:>8.1f}{epoch_h:>14.2f}{valid_5:>14.1f}")
    for r in rows[1:]:
        print(f"ratio {r['workers']}-worker / {base['workers']}-worker: throughput "
              f"{r['graphs_per_s'] / base['graphs_per_s']:.2f}x (ideal {r['workers'] / base['workers']:.0f}x), "
              f"peak RSS per worker {max(r['rss']) / max(base['rss']):.2f}x")
    print(f"load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())} "
          f"(other processes on the machine share its cores)")


if __name__ == "__main__":
    main()
