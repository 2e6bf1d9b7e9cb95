"""Scoring a primary screen with `mfray predict`: molecules/s and peak memory, against a chemprop-style
single-process loop of the same model, all in one run.

Rows (each in its own subprocess, so peak memory is its own; the Ray row counts every process of the
local Ray it starts: the driver and the scoring actors):

  loop        the baseline: read the whole file, featurise every SMILES, score every molecule, write
              the output (what `chemprop predict` does: memory grows with the input)
  local       mfray predict --executor local: chunks read, featurised, scored and written one at a time
  ray         mfray predict --executor ray: the same on Ray Data, one actor per CPU

Each row prints molecules/s (input rows / wall seconds, start-up included), the ratio to the loop, and
peak RSS: of its largest process and of all its processes together (sampled every 0.2 s with psutil).
With ``--copies 2`` the ray and local rows also run on a file holding the input twice, to show
that memory does not grow with the input.

    python benchmarks/predict_throughput.py MODEL [--input ../shared/data/mfpcba/full/transcription_5__...csv.gz]
           [--rows N] [--copies 1,2] [--rows-loop N] [--modes loop,local,ray]

MODEL: a model folder (mfray study export), a run folder or a checkpoint.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_INPUT = REPO.parent / "shared" / "data" / "mfpcba" / "full" / "transcription_5__SD1259374__HF1259375__full.csv.gz"

LOOP = r"""
import json, sys, time
import numpy as np, polars as pl, pyarrow as pa
from mfray.chem.graph import GraphExtractor
from mfray.chem.standardize import Standardizer, StandardizerConfig
from mfray.predict import load_predictor
t0 = time.perf_counter()
model, src, out = sys.argv[1:4]
pred = load_predictor(model)
df = pl.read_csv(src, infer_schema=False)
ext = GraphExtractor(Standardizer(StandardizerConfig.from_dict(pred.recipe["standardize"])))
res = ext(df["SMILES"].to_list())
ok = np.array(res.ok)
cols = res.graph_columns()
good = pa.array(np.flatnonzero(ok), pa.int64())
rows = pa.table({"mol_id": pa.array(np.arange(int(ok.sum()), dtype=np.int64)), **{k: v.take(good) for k, v in cols.items()}})
scores = pred.score(rows, batch_size=256)
df.filter(pl.Series(ok)).with_columns(pl.Series("prediction", scores.mean[:, 0])).write_csv(out)
print(json.dumps({"rows": df.height, "scored": int(ok.sum()), "seconds": time.perf_counter() - t0}))
"""


def _tree_rss(proc) -> tuple[float, float]:
    """(largest process RSS, sum over the process tree) in MB."""
    import psutil

    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0, 0.0
    rss = []
    for p in procs:
        try:
            rss.append(p.memory_info().rss / 2**20)
        except psutil.Error:
            pass
    return (max(rss) if rss else 0.0), sum(rss)


def run_row(cmd: list[str], env: dict[str, str]) -> tuple[float, float, float, str]:
    """Run ``cmd``; (wall seconds, peak largest-process RSS, peak tree RSS, stdout)."""
    import psutil

    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    ps = psutil.Process(p.pid)
    peak_one = peak_all = 0.0
    while p.poll() is None:
        one, total = _tree_rss(ps)
        peak_one, peak_all = max(peak_one, one), max(peak_all, total)
        time.sleep(0.2)
    out, err = p.communicate()
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}):\n{err[-3000:]}")
    return time.perf_counter() - t0, peak_one, peak_all, out


def _slice(src: Path, rows: int | None, copies: int, dest: Path) -> int:
    """Write the first ``rows`` data rows of ``src`` (all: None), ``copies`` times, to ``dest`` (.csv.gz)."""
    n = 0
    with gzip.open(src, "rt") as f:
        header = f.readline()
        lines = []
        for line in f:
            if rows is not None and len(lines) >= rows:
                break
            lines.append(line)
    with gzip.open(dest, "wt", compresslevel=1) as g:
        g.write(header)
        for _ in range(copies):
            g.writelines(lines)
            n += len(lines)
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="model folder or checkpoint")
    ap.add_argument("--input", default=str(DEFAULT_INPUT), help="a CSV(.gz) with a SMILES column (default: the "
                    "transcription_5 primary screen, 641,736 rows)")
    ap.add_argument("--rows", type=int, help="only the first N rows (default: all)")
    ap.add_argument("--rows-loop", type=int, help="rows for the loop row (default: --rows)")
    ap.add_argument("--copies", default="1", help="input copies for the local/ray rows, e.g. 1,2 (default 1)")
    ap.add_argument("--modes", default="loop,local,ray", help="subset of loop,local,ray")
    a = ap.parse_args()
    modes = [m for m in a.modes.split(",") if m]
    tmp = Path(tempfile.mkdtemp(prefix="mfray_predict_bench_"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    mfray = [sys.executable, "-m", "mfray.cli.main", "predict"]
    results = []
    try:
        for copies in [int(c) for c in a.copies.split(",")]:
            src = tmp / f"input_x{copies}.csv.gz"
            n = _slice(Path(a.input), a.rows, copies, src)
            for mode in modes:
                if mode == "loop":
                    if copies != 1:
                        continue
                    lsrc = src
                    if a.rows_loop and a.rows_loop != a.rows:
                        lsrc = tmp / "input_loop.csv.gz"
                        _slice(Path(a.input), a.rows_loop, 1, lsrc)
                    wall, one, total, out = run_row([sys.executable, "-c", LOOP, a.model, str(lsrc), str(tmp / "loop.csv")], env)
                    rows = json.loads(out.strip().splitlines()[-1])["rows"]
                else:
                    wall, one, total, out = run_row([*mfray, a.model, str(src), "--out", str(tmp / f"{mode}.csv"),
                                                     "--executor", mode, "--no-progress"], env)
                    rows = n
                    print(out.strip().splitlines()[0], flush=True)
                results.append({"mode": mode, "copies": copies, "rows": rows, "seconds": wall,
                                "mol_per_s": rows / wall, "peak_rss_mb": one, "peak_rss_all_mb": total})
                r = results[-1]
                print(f"  {mode:<6} x{copies}: {rows:,} rows in {wall:.0f} s = {r['mol_per_s']:.0f} molecules/s; peak RSS "
                      f"{one:.0f} MB (largest process), {total:.0f} MB (all processes)", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    base = next((r for r in results if r["mode"] == "loop"), None)
    print(f"\nmodel {a.model}; input {a.input}" + (f" (first {a.rows:,} rows)" if a.rows else ""))
    print(f"{'row':<10}{'rows':>10}{'s':>8}{'mol/s':>9}{'x loop':>8}{'RSS MB':>9}{'all MB':>9}")
    for r in results:
        ratio = f"{r['mol_per_s'] / base['mol_per_s']:.2f}" if base else "-"
        print(f"{r['mode'] + ' x' + str(r['copies']):<10}{r['rows']:>10,}{r['seconds']:>8.0f}{r['mol_per_s']:>9.0f}"
              f"{ratio:>8}{r['peak_rss_mb']:>9.0f}{r['peak_rss_all_mb']:>9.0f}")


if __name__ == "__main__":
    main()
