"""Training throughput per readout on real molecules (issue: models and transfer strategies).

For every registered readout, one training epoch of the supervised VGAE (GCN 3 x 256, 50-d latents,
reconstruction + KL + task loss, Adam) over real molecules, at the HF batch size (32) and the LF batch
size (512). Each configuration runs in a fresh subprocess (one torch thread) so its peak RSS is its
own. Throughput is printed in graphs/s and as a ratio to the `sum` readout measured in the same run.

    python benchmarks/train_throughput.py [--molecules 2048] [--readouts sum,set_transformer] [--device cpu]

Molecules: the HF set of ../shared/data/mfpcba/serine__SD873__HF1431.csv (real MF-PCBA molecules);
falls back to the bundled AID 1445 demo when ../shared/data is absent.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, os, resource, sys, time
import numpy as np, torch
from mfray.data.store import GraphStore
from mfray.chem.featurizers import build_featurizers
from mfray.models import ModelSpec, build_model
from mfray.models.freezing import train_mode
from mfray.nn.vgae import kl_loss, recon_loss
from mfray.train.data import GraphDataset
torch.set_num_threads(1)
store_path, readout, batch_size, n_mol, device, steps_cap = sys.argv[1:7]
batch_size, n_mol, steps_cap = int(batch_size), int(n_mol), int(steps_cap)
store = GraphStore(store_path)
ids = store.table("molecules")["mol_id"].to_numpy()[:n_mol]
spec = ModelSpec(readout=readout)
model = build_model(spec).to(device)
a, b = build_featurizers(spec.featurizer, spec.max_atomic_number)
y = np.random.default_rng(0).normal(size=(len(ids), 1)).astype(np.float32)
data = GraphDataset(store.graphs(ids), y, None, a, b)
opt = torch.optim.Adam(model.parameters(), lr=1e-4)
def step(g, yb):
    out = model(g)
    loss = torch.nn.functional.mse_loss(out.pred, yb) + recon_loss(out.z, g.edge_index, g.batch) + 1e-3 * kl_loss(out.mu, out.logstd, g.batch)
    opt.zero_grad(); loss.backward(); opt.step()
train_mode(model)
# warm-up step (allocator, kernels)
g, yb, _, _ = data.batch(np.arange(min(batch_size, len(ids))))
step(g.to(device), yb.to(device))
if device.startswith("cuda"): torch.cuda.synchronize()
n_graphs, steps = 0, 0
t0 = time.perf_counter()
for g, yb, _, _ in data.batches(batch_size, shuffle=True, rng=np.random.default_rng(0)):
    step(g.to(device), yb.to(device)); n_graphs += g.num_graphs; steps += 1
    if steps >= steps_cap: break
if device.startswith("cuda"): torch.cuda.synchronize()
dt = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
gpu = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None
print(json.dumps({"readout": readout, "batch": batch_size, "graphs": n_graphs, "seconds": dt,
                  "graphs_per_s": n_graphs / dt, "peak_rss_mb": peak, "gpu_peak_mb": gpu,
                  "params": sum(p.numel() for p in model.parameters())}))
"""


def build_store(tmp: Path) -> str:
    from mfray.data.catalog import resolve_spec
    from mfray.run.featurize import featurize_dataset

    shared = ROOT.parent / "shared" / "data" / "mfpcba" / "serine__SD873__HF1431.csv"
    name = "serine_hf" if shared.exists() else "aid1445"
    spec = resolve_spec(name)
    res = featurize_dataset(spec, tmp, executor="local", progress=False, log=lambda m: None)
    return str(res.store.path), name


def main() -> None:
    from mfray.nn import READOUTS

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--molecules", type=int, default=2048)
    ap.add_argument("--readouts", default=",".join(READOUTS.names()))
    ap.add_argument("--batches", default="32,512")
    ap.add_argument("--max-steps", type=int, default=64, help="cap on optimiser steps per configuration")
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    with tempfile.TemporaryDirectory() as tmp:
        store, name = build_store(Path(tmp))
        rows = []
        for bs in [int(b) for b in a.batches.split(",")]:
            for r in a.readouts.split(","):
                out = subprocess.run([sys.executable, "-c", CHILD, store, r, str(bs), str(a.molecules), a.device,
                                      str(a.max_steps)], capture_output=True, text=True, env=env, cwd=ROOT)
                if out.returncode != 0:
                    print(f"{r} @ {bs}: FAILED\n{out.stderr[-2000:]}")
                    continue
                rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"training throughput, supervised VGAE (GCN 3x256, 50-d) + readout + head, {name} molecules, "
          f"device {a.device}, 1 torch thread")
    print(f"{'batch':>6} {'readout':<16}{'params':>12}{'graphs/s':>11}{'vs sum':>8}{'peak RSS MB':>13}"
          + (f"{'GPU MB':>9}" if a.device != "cpu" else ""))
    for bs in sorted({r["batch"] for r in rows}):
        base = next((r["graphs_per_s"] for r in rows if r["batch"] == bs and r["readout"] == "sum"), None)
        for r in [r for r in rows if r["batch"] == bs]:
            ratio = f"{r['graphs_per_s'] / base:8.2f}" if base else f"{'':>8}"
            gpu = f"{r['gpu_peak_mb']:9.0f}" if r.get("gpu_peak_mb") is not None else ""
            print(f"{bs:>6} {r['readout']:<16}{r['params']:>12,}{r['graphs_per_s']:>11.0f}{ratio}{r['peak_rss_mb']:>13.0f}{gpu}")


if __name__ == "__main__":
    main()
