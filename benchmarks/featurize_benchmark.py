"""Featurisation benchmark on a real primary screen (issue: foundation).

Measures, side by side in one run:
  1. per-core throughput of mfray's standardise+extract (GraphExtractor) vs bare Chem.MolFromSmiles on
     the same SMILES: chunks of the two are interleaved over several rounds and the median rate of each
     is compared, so a stall of the shared machine hits both alike (target: ratio >= 0.6);
  2. the whole `featurize_dataset` pipeline in one process vs Ray Data with N workers (speed-up);
  3. graph store size on disk per molecule (target <= 100 bytes) and peak RSS of each whole run
     (the driver plus every Ray process, sampled every 0.2 s).

    python benchmarks/featurize_benchmark.py [--csv PATH] [--limit N] [--workers 2]

Default data: ../shared/data/mfpcba/full/serine__SD873__HF1431__full.csv.gz (214k real molecules).
"""

from __future__ import annotations

import argparse
import gzip
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CSV = ROOT.parent / "shared" / "data" / "mfpcba" / "full" / "serine__SD873__HF1431__full.csv.gz"


def load_smiles(path: Path, limit: int | None) -> list[str]:
    out = []
    with gzip.open(path, "rt") if path.suffix == ".gz" else open(path) as f:
        r = csv.DictReader(f)
        for row in r:
            out.append(row["SMILES"])
            if limit and len(out) >= limit:
                break
    return out


def per_core(smiles: list[str], rounds: int = 5, chunk: int = 2000) -> dict[str, float]:
    from rdkit import Chem, RDLogger

    from mfray.chem.graph import GraphExtractor

    RDLogger.DisableLog("rdApp.*")
    ext = GraphExtractor()
    parse_rates, feat_rates = [], []
    chunks = [smiles[i : i + chunk] for i in range(0, len(smiles), chunk)]
    for _ in range(rounds):
        for c in chunks:
            t = time.perf_counter()
            for s in c:
                Chem.MolFromSmiles(s)
            parse_rates.append(len(c) / (time.perf_counter() - t))
            t = time.perf_counter()
            ext(c)
            feat_rates.append(len(c) / (time.perf_counter() - t))
    p, f = statistics.median(parse_rates), statistics.median(feat_rates)
    return {"parse_per_s": p, "featurise_per_s": f, "ratio": f / p}


def _rss_of_tree(root_pid: int) -> int:
    import psutil

    total = 0
    procs = []
    try:
        procs = [psutil.Process(root_pid)] + psutil.Process(root_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return 0
    seen = {p.pid for p in procs}
    # Ray's raylet/gcs/workers are not children of the driver: count every process of this Ray session
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(p.info.get("cmdline") or [])
        if p.pid not in seen and ("ray::" in cmd or "/ray/" in cmd or "raylet" in cmd or "gcs_server" in cmd):
            procs.append(p)
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def run_pipeline(spec_path: Path, executor: str, workers: int, out: Path) -> dict[str, float]:
    cmd = [sys.executable, "-c", (
        "import json,sys,time;from mfray.data.specs import load_spec;from mfray.run.featurize import featurize_dataset;"
        f"s=load_spec({str(spec_path)!r});t=time.perf_counter();"
        f"r=featurize_dataset(s,{str(out)!r},executor={executor!r},num_workers={workers},progress=False,force=True,log=lambda m:None);"
        "m=r.store.manifest;print(json.dumps({'seconds':time.perf_counter()-t,'molecules':m['counts']['molecules'],"
        "'rows':m['counts']['rows_read'],'quarantined':m['counts']['rows_quarantined'],'graph_bytes':m['graph_bytes'],"
        "'timings':m['timings_s']}))"
    )]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, _rss_of_tree(proc.pid))
            stop.wait(0.2)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    stdout, stderr = proc.communicate()
    stop.set()
    th.join()
    if proc.returncode != 0:
        raise SystemExit(f"pipeline run failed:\n{stderr[-3000:]}")
    import json

    res = json.loads(stdout.strip().splitlines()[-1])
    res["peak_rss_mb"] = peak / 1e6
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    ap.add_argument("--limit", type=int, default=None, help="only the first N molecules (default: all)")
    ap.add_argument("--per-core-n", type=int, default=10000, help="molecules for the per-core comparison")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    if not args.csv.exists():
        raise SystemExit(f"{args.csv}: not found (the benchmark reads ../shared/data)")

    smiles = load_smiles(args.csv, args.per_core_n)
    pc = per_core(smiles, rounds=args.rounds)
    print(f"== per-core throughput on {len(smiles):,} real SMILES ({args.csv.name}), median of interleaved chunks")
    print(f"  bare Chem.MolFromSmiles   {pc['parse_per_s']:9.0f} mol/s")
    print(f"  mfray standardise+extract {pc['featurise_per_s']:9.0f} mol/s")
    print(f"  ratio                     {pc['ratio']:9.2f}   (target >= 0.60)")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = args.csv
        if args.limit:
            data = tmp / "subset.csv"
            with gzip.open(args.csv, "rt") as f, open(data, "w") as g:
                for i, line in enumerate(f):
                    if i > args.limit:
                        break
                    g.write(line)
        spec = tmp / "bench.toml"
        spec.write_text(
            'name = "bench"\nduplicates = "mean"\nfidelities = ["lf"]\n[source]\nkind = "local"\n'
            f'[source.files.primary]\npath = "{data}"\nsmiles_column = "SMILES"\n'
            '[[source.labels]]\nfidelity = "lf"\ntarget = "SD"\nfile = "primary"\ncolumn = "SD_score"\n'
        )
        local = run_pipeline(spec, "local", 1, tmp / "store_local")
        ray_ = run_pipeline(spec, "ray", args.workers, tmp / "store_ray")
    print(f"\n== whole featurise pipeline on {local['rows']:,} rows ({local['molecules']:,} molecules stored, "
          f"{local['quarantined']:,} quarantined)")
    print(f"  {'run':<22}{'wall s':>9}{'featurise s':>13}{'mol/s':>9}{'peak RSS MB':>13}")
    for name, r in (("single process", local), (f"Ray Data, {args.workers} workers", ray_)):
        print(f"  {name:<22}{r['seconds']:9.1f}{r['timings']['featurize']:13.1f}{r['rows'] / r['seconds']:9.0f}{r['peak_rss_mb']:13.0f}")
    print(f"  speed-up (wall)          {local['seconds'] / ray_['seconds']:.2f}x   "
          f"(featurise step {local['timings']['featurize'] / ray_['timings']['featurize']:.2f}x)")
    print("\n== graph store size")
    print(f"  {ray_['graph_bytes'] / 1e6:.1f} MB for {ray_['molecules']:,} molecules = "
          f"{ray_['graph_bytes'] / ray_['molecules']:.1f} bytes/molecule   (target <= 100)")


if __name__ == "__main__":
    main()
