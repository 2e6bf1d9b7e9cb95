"""LF pretraining throughput at the paper's size: fp32 vs bf16 vs bf16 + packed + bucketed, 1 and 2 workers.

Pretrains the paper's LF model (GCN supervised VGAE 3 x 256, 50-d latents, Set Transformer readout
1024 wide, 16 heads, 32 seeds, ~14.4 M parameters; batch 512 per worker, Adam 5e-5) on a real primary
screen (default: serine, AID 873, 211,756 molecules; the WHOLE store is loaded and sharded over the
workers) through ``mfray.run.pretrain.pretrain_lf_distributed`` (Ray Train, DDP over gloo on CPU, one
torch thread per worker), once per setting and worker count, all in one run:

  fp32            the code path before this benchmark: fp32, readout on the padded block, random batches
  bf16            the same under bf16 autocast
  bf16+pk+bk      bf16, packed Set Transformer (dense maps on node rows), size-bucketed batches
  bf16+pk+bk+ac   the same with activation checkpointing of the readout (memory)

and prints graphs/s (all workers, and per worker), the ratio to the fp32 row with the same worker
count, peak RSS per worker (getrusage maxrss, measured by each worker) and the epoch time the
measured seconds per step imply. Then ``--full-epoch`` trains ONE WHOLE epoch (every training
molecule, the default 5% validation) with the fastest setting and prints its measured time.

    python benchmarks/pretrain_throughput.py [--spec serine] [--workers 1,2] [--max-steps 4] [--full-epoch]
                                             [--device cuda] [--size paper|cpu]

The store of ``--spec`` is featurised first if missing (``mfray featurize serine``, a few minutes).
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

SETTINGS = {  # name -> (precision, packed readout, bucketed batches, activation checkpointing)
    "fp32": ("32", False, False, False),
    "bf16": ("bf16-mixed", False, False, False),
    "bf16+pk+bk": ("bf16-mixed", True, True, False),
    "bf16+pk+bk+ac": ("bf16-mixed", True, True, True),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spec", default="serine", help="dataset spec with a large LF set (default serine)")
    ap.add_argument("--workers", default="1,2", help="Ray Train worker counts (default 1,2)")
    ap.add_argument("--settings", default=",".join(SETTINGS), help=f"subset of {', '.join(SETTINGS)}")
    ap.add_argument("--max-steps", type=int, default=4, help="optimiser steps per worker per row (default 4)")
    ap.add_argument("--full-epoch", action="store_true", help="then one whole epoch with the fastest setting")
    ap.add_argument("--batch-size", type=int, default=512, help="per worker (default 512, the paper's)")
    ap.add_argument("--valid-fraction", type=float, default=0.005, help="for the timed rows (full epoch: 0.05)")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="cuda: one GPU per worker, NCCL")
    ap.add_argument("--size", choices=("paper", "cpu"), default="paper", help="LF model size preset (default paper)")
    a = ap.parse_args()

    import torch

    from mfray.data.catalog import resolve_spec
    from mfray.models.spec import ModelSpec
    from mfray.run.featurize import featurize_dataset
    from mfray.run.pretrain import pretrain_lf_distributed
    from mfray.run.runtime import ensure_ray
    from mfray.train.loop import TrainConfig
    from mfray.train.precision import fast_bf16
    from mfray.train.task import LFRunConfig

    from mfray.models.spec import LF_PRESETS

    kw = dict(LF_PRESETS[a.size].get("readout_kwargs", {}).get("set_transformer", {}))
    t = time.perf_counter()
    res = featurize_dataset(resolve_spec(a.spec), None, executor="local", progress=False, log=lambda m: None)
    store = res.store
    print(f"store {store.path} ({store.manifest['counts']['molecules']:,} molecules; "
          f"{'cache hit' if res.cache_hit else f'featurised in {time.perf_counter() - t:.0f} s'})", flush=True)
    ensure_ray()
    import ray

    use_gpu = a.device == "cuda"
    cpus = int(ray.cluster_resources().get("CPU", 0))
    counts = [int(w) for w in a.workers.split(",")]
    settings = [s for s in a.settings.split(",") if s]

    def config(setting: str, full: bool) -> LFRunConfig:
        precision, packed, bucket, ac = SETTINGS[setting]
        return LFRunConfig(readout="set_transformer", model={"readout_kwargs": {**kw, "packed": packed}},
                           valid_fraction=0.05 if full else a.valid_fraction,
                           train=TrainConfig(lr=5e-5, batch_size=a.batch_size, max_epochs=1, patience=0,
                                             max_steps_per_epoch=None if full else a.max_steps, precision=precision,
                                             bucket_by_size=bucket, activation_checkpointing=ac))

    def run(setting: str, n: int, storage: str, tmp: str, full: bool = False) -> dict:
        t0 = time.perf_counter()
        r = pretrain_lf_distributed(store.path, config(setting, full), Path(tmp) / f"out-{setting}-{n}",
                                    storage_path=storage, name=f"bench-{uuid.uuid4().hex[:8]}", num_workers=n,
                                    use_gpu=use_gpu, log=lambda m: None)
        h = r.history[-1]
        meta = torch.load(r.checkpoint, weights_only=True)["meta"]
        row = {"setting": setting, "workers": n, "graphs_per_s": h["graphs_per_s"], "steps": h["steps"],
               "train_s": h["train_seconds"], "epoch_s": h["seconds"], "rss": r.peak_rss_mb,
               "wall": time.perf_counter() - t0, "n_train": meta["n_train"], "n_valid": meta["n_valid"],
               "loss": h["train_loss"], "precision": h.get("precision", "32")}
        print(f"  {setting:<14} {n} worker(s): {h['steps']} steps x {a.batch_size} in {h['train_seconds']:.0f} s, "
              f"{h['graphs_per_s']:.1f} graphs/s, peak RSS/worker "
              + " / ".join(f"{m:.0f}" for m in r.peak_rss_mb) + f" MB, loss {h['train_loss']:.3f}", flush=True)
        return row

    params = sum(p.numel() for p in __import__("mfray.models", fromlist=["build_model"]).build_model(
        ModelSpec(readout="set_transformer", readout_kwargs=kw)).parameters())
    rows = []
    with tempfile.TemporaryDirectory(prefix="mfray-bench-") as tmp:
        storage = str(Path(tmp) / "ray")
        for n in counts:
            for s in settings:
                rows.append(run(s, n, storage, tmp))
        n_train = rows[0]["n_train"]
        print()
        print(f"LF pretraining throughput, {a.spec}: {n_train:,} training molecules (whole set loaded, sharded over the "
              f"workers); {a.size}-size LF model ({params / 1e6:.1f} M parameters), "
              f"batch {a.batch_size} per worker, {a.max_steps} steps per row, {a.device} "
              f"({'fast bf16: yes' if fast_bf16(a.device if use_gpu else 'cpu') else 'fast bf16: no'}), 1 torch thread "
              f"per worker, {cpus} CPUs in Ray; all rows measured in this run")
        print(f"{'setting':<15}{'workers':>8}{'graphs/s':>10}{'per worker':>12}{'vs fp32':>9}{'peak RSS MB/worker':>20}"
              f"{'s/step':>8}{'epoch min':>11}")
        for r in rows:
            base = next(b for b in rows if b["workers"] == r["workers"] and b["setting"] == settings[0])
            s_step = r["train_s"] / max(r["steps"], 1)
            epoch_min = math.ceil(n_train / (r["workers"] * a.batch_size)) * s_step / 60
            print(f"{r['setting']:<15}{r['workers']:>8}{r['graphs_per_s']:>10.1f}{r['graphs_per_s'] / r['workers']:>12.1f}"
                  f"{r['graphs_per_s'] / base['graphs_per_s']:>9.2f}{' / '.join(f'{m:.0f}' for m in r['rss']):>20}"
                  f"{s_step:>8.1f}{epoch_min:>11.1f}")
        if len(counts) > 1:
            for s in settings:
                one = [r for r in rows if r["setting"] == s and r["workers"] == counts[0]][0]
                for r in rows:
                    if r["setting"] == s and r["workers"] != counts[0]:
                        print(f"ratio {s}: {r['workers']} / {counts[0]} worker(s) = "
                              f"{r['graphs_per_s'] / one['graphs_per_s']:.2f}x")
        print("context (not measured here, from the issue): before this change 18 graphs/s on 1 worker, 27 with 2; "
              "the reference code 8.4 graphs/s, 9.4 GB")
        print(f"load average at the end of the timed rows: {', '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)
        if a.full_epoch:
            best = max(rows, key=lambda r: r["graphs_per_s"])
            print(f"\nfull epoch with the fastest setting ({best['setting']}, {best['workers']} worker(s)), "
                  f"5% validation:", flush=True)
            r = run(best["setting"], best["workers"], storage, tmp, full=True)
            print(f"FULL EPOCH {a.spec}: {r['n_train']:,} training molecules in {r['train_s'] / 60:.1f} min of training "
                  f"({r['graphs_per_s']:.1f} graphs/s, {r['steps']} steps per worker), epoch with validation of "
                  f"{r['n_valid']:,} molecules {r['epoch_s'] / 60:.1f} min, wall with start-up {r['wall'] / 60:.1f} min; "
                  f"peak RSS/worker " + " / ".join(f"{m:.0f}" for m in r["rss"]) + " MB")
            print(f"load average: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
