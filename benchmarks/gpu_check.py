"""The GPU check, in one command (``make gpu-check``): what a GPU machine must show before mfray's GPU
paths are trusted. CI never has a GPU; run this whenever one is available and quote its output.

1. The devices: torch and CUDA versions, each GPU's name and memory, bf16 support.
2. CPU/GPU parity of the loss: the paper-size LF model (GCN supervised VGAE + Set Transformer 1024
   wide, ~14.4 M parameters), the same seed and the same batches of real molecules (the bundled AID
   1445 set), ``--parity-steps`` optimiser steps on CPU fp32, GPU fp32 and GPU bf16-mixed (the encoder's
   sampling off: the devices' random streams differ): the supervised LF loss of every step, and the
   largest relative difference to CPU fp32 (GPU fp32 within 5e-3, bf16 within 2%).
3. NCCL DDP pretraining on every GPU present (Ray Train, one worker per GPU): the paper-size LF model
   in bf16-mixed with the packed Set Transformer and size-bucketed batches, batch 512 per worker,
   ``--steps`` steps on ``--spec`` (serine's whole primary screen when ../shared/data is there, else the
   bundled AID 1445 set), and fp32 beside it: graphs/s and peak GPU memory per worker.

    python benchmarks/gpu_check.py [--spec serine] [--steps 20] [--parity-steps 5]

Exit status 0 when every check passed, 1 when one failed, 2 when there is no CUDA device.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]


def parity(steps: int) -> bool:
    import numpy as np
    import torch

    from mfray.data.specs import load_spec
    from mfray.run.featurize import featurize_dataset
    from mfray.train.loop import TrainConfig, _batch_loss
    from mfray.train.task import LFRunConfig, prepare_lf

    with tempfile.TemporaryDirectory() as tmp:
        store = featurize_dataset(load_spec(ROOT / "data_specs" / "aid1445.toml"), tmp, executor="local",
                                  progress=False, log=lambda m: None).store
        losses: dict[str, list[float]] = {}
        for name, device, precision in (("cpu fp32", "cpu", "32"), ("gpu fp32", "cuda", "32"),
                                        ("gpu bf16-mixed", "cuda", "bf16-mixed")):
            cfg = LFRunConfig(readout="set_transformer",
                              train=TrainConfig(lr=5e-5, batch_size=128, precision=precision, device=device))
            prep = prepare_lf(store, cfg)  # seeded: the same initial weights every time
            model = prep.model.to(device)
            model.train()
            model.encoder.eval()  # no sampled latents: CPU and CUDA random streams differ, the math must not
            opt = torch.optim.Adam(model.parameters(), lr=5e-5)
            out = []
            for idx in prep.train.batch_indices(128, shuffle=True, rng=np.random.default_rng(0))[:steps]:
                g, y, aux, censor = prep.train.batch(idx)
                g, y = g.to(device), y.to(device)
                loss, _ = _batch_loss(model, g, y, None, cfg.train, False, None, None)  # the supervised LF loss
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                out.append(float(loss))
            losses[name] = out
            print(f"  {name:<15} loss per step: " + " ".join(f"{v:.4f}" for v in out), flush=True)
    ok = True
    ref = np.array(losses["cpu fp32"])
    for name, tol in (("gpu fp32", 5e-3), ("gpu bf16-mixed", 2e-2)):
        rel = float(np.max(np.abs(np.array(losses[name]) - ref) / np.abs(ref)))
        good = rel <= tol
        ok &= good
        print(f"  {name} vs cpu fp32: largest relative difference {rel:.2e} (tolerance {tol:g}) "
              f"{'OK' if good else 'FAILED'}")
    return ok


def ddp(spec: str, steps: int, gpus: int) -> bool:
    import torch

    from mfray.data.catalog import resolve_spec
    from mfray.run.featurize import featurize_dataset
    from mfray.run.pretrain import pretrain_lf_distributed
    from mfray.run.runtime import ensure_ray
    from mfray.train.loop import TrainConfig
    from mfray.train.task import LFRunConfig

    store = featurize_dataset(resolve_spec(spec), None, executor="local", progress=False, log=lambda m: None).store
    print(f"  store {spec}: {store.manifest['counts']['molecules']:,} molecules", flush=True)
    ensure_ray()
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for precision, packed in (("32", False), ("bf16-mixed", True)):
            cfg = LFRunConfig(readout="set_transformer", model={"readout_kwargs": {"packed": packed}},
                              valid_fraction=0.01,
                              train=TrainConfig(lr=5e-5, batch_size=512, max_epochs=1, patience=0, precision=precision,
                                                bucket_by_size=packed, max_steps_per_epoch=steps))
            t0 = time.perf_counter()
            try:
                r = pretrain_lf_distributed(store.path, cfg, Path(tmp) / precision, storage_path=Path(tmp) / "ray",
                                            name=f"gpu-check-{uuid.uuid4().hex[:8]}", num_workers=gpus, use_gpu=True,
                                            log=lambda m: None)
            except Exception as e:  # noqa: BLE001 - report and go on to the summary
                print(f"  DDP {precision}: FAILED: {type(e).__name__}: {e}")
                ok = False
                continue
            h = r.history[-1]
            loss_ok = all(x == x and abs(x) < 1e6 for x in (h["train_loss"], h["valid_loss"]))
            ok &= loss_ok
            label = "fp32, padded readout" if precision == "32" else "bf16-mixed, packed, bucketed"
            print(f"  DDP nccl {gpus} GPU worker(s), {label}: {h['steps']} steps x 512 per worker, "
                  f"{h['graphs_per_s']:,.0f} graphs/s ({h['graphs_per_s'] / gpus:,.0f} per GPU), peak GPU memory per "
                  f"worker " + " / ".join(f"{m:,.0f}" for m in r.peak_gpu_mb) + " MB, train loss "
                  f"{h['train_loss']:.3f}, {time.perf_counter() - t0:.0f} s with start-up"
                  + ("" if loss_ok else " (loss not finite: FAILED)"), flush=True)
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spec", help="LF dataset for the DDP check (default: serine if ../shared/data is there, "
                    "else the bundled aid1445)")
    ap.add_argument("--steps", type=int, default=20, help="DDP optimiser steps per worker (default 20)")
    ap.add_argument("--parity-steps", type=int, default=5, help="steps of the CPU/GPU parity check (default 5)")
    a = ap.parse_args()

    import torch

    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, available: {torch.cuda.is_available()}")
    if not torch.cuda.is_available():
        print("gpu-check: no CUDA device on this machine: nothing to check", file=sys.stderr)
        return 2
    gpus = torch.cuda.device_count()
    for i in range(gpus):
        p = torch.cuda.get_device_properties(i)
        print(f"  GPU {i}: {p.name}, {p.total_memory / 2**30:.0f} GiB, bf16 {torch.cuda.is_bf16_supported()}")
    spec = a.spec or ("serine" if (ROOT.parent / "shared" / "data" / "mfpcba").is_dir() else "aid1445")
    print(f"\n1. CPU/GPU parity of the LF loss (paper size, {a.parity_steps} steps):", flush=True)
    ok = parity(a.parity_steps)
    print(f"\n2. NCCL DDP LF pretraining on {gpus} GPU(s), paper size:", flush=True)
    ok &= ddp(spec, a.steps, gpus)
    print(f"\ngpu-check: {'all checks passed' if ok else 'a check FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
