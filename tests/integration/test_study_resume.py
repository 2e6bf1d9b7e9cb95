"""Kill the driver of a running study (twice: mid-search, then mid-refits), re-run, and check that
finished trials are not re-run, finished runs are not re-fitted, and no result row is written twice."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
from driver_procs import driver_env, mfray, start_study, wait_for

pytestmark = [pytest.mark.ray, pytest.mark.faults]

SPEC = """
name = "resume"
tasks = ["aid1445"]
strategies = ["base", "label"]
baselines = ["lf_linear"]
max_seeds = 3

[train]
max_epochs = 4
patience = 0
batch_size = 64

[model]
hidden_dim = 16
latent_dim = 8
head_hidden_dim = 16

[search]
num_samples = 3
max_concurrent_trials = 1
grace_period = 4
checkpoint_every = 1       # a trial running at a kill continues from its last epoch

[search.space]
readout = ["sum", "mean"]
lr = { low = 1e-4, high = 1e-2, log = true }
"""


def _kill_when(spec: Path, storage: Path, env: dict, cond, log: Path) -> None:
    """Run the study until ``cond()`` holds, then kill the driver and every Ray process it started (its
    process group), with no clean-up."""
    proc = start_study(spec, storage, env, stdout=subprocess.DEVNULL, stderr=open(log, "w"))
    wait_for(proc, cond, "the kill point", log=log, timeout=400)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)


def _finished_trials(storage: Path, max_epochs: int) -> dict[str, str]:
    """Trials that Ray Tune's saved experiment state records as TERMINATED -> digest of their
    result.json. (A trial that finished after the last state save is unfinished to a restore.)"""
    out = {}
    for exp in storage.glob("ray/search-*"):
        states = sorted(exp.glob("experiment_state-*.json"))
        if not states:
            continue
        try:
            data = json.loads(states[-1].read_text())
        except (OSError, ValueError):  # being written
            continue
        for entry in data.get("trial_data", []):
            t = json.loads(entry[0]) if isinstance(entry[0], str) else entry[0]
            if t.get("status") == "TERMINATED":
                f = exp / t["relative_logdir"] / "result.json"
                if f.exists():
                    out[str(f.parent.relative_to(storage))] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def _parts(storage: Path) -> dict[str, float]:
    return {p.name: p.stat().st_mtime for p in storage.glob("results/study=resume/run-*.parquet")}


def test_killed_driver_resumes_without_duplicates(tmp_path):
    spec = tmp_path / "resume.toml"
    spec.write_text(SPEC)
    storage = tmp_path / "storage"
    env = driver_env(tmp_path / "cache")

    # 1. kill during the first search, once one trial has finished all its epochs
    _kill_when(spec, storage, env, lambda: len(_finished_trials(storage, 4)) >= 1, tmp_path / "run1.log")
    done_trials = _finished_trials(storage, 4)
    print(f"\nkill 1 (mid-search): {len(done_trials)} finished trial(s), {len(_parts(storage))} result parts")
    status = mfray("study", "status", str(spec), "--storage", str(storage), env=env, timeout=120)
    assert status.returncode == 0 and "interrupted" in status.stdout, status.stdout + status.stderr

    # 2. re-run; kill again once a few runs are in the results store
    _kill_when(spec, storage, env, lambda: len(_parts(storage)) >= 2, tmp_path / "run2.log")
    for trial, digest in done_trials.items():  # a finished trial was not trained again
        assert hashlib.sha256((storage / trial / "result.json").read_bytes()).hexdigest() == digest, trial
    before = _parts(storage)
    print(f"kill 2 (mid-runs): {len(before)} result parts")

    # 3. re-run to the end
    final = mfray("study", "run", str(spec), "--storage", str(storage), "--no-report", env=env, timeout=600)
    assert final.returncode == 0, final.stderr[-3000:]
    summary = re.search(r"study resume done in .*", final.stderr).group(0)
    assert "search: 2 cached" in summary
    m = re.search(r"runs: (\d+) cached, (\d+) ran", summary)
    assert m and int(m.group(1)) >= len(before) and int(m.group(1)) + int(m.group(2)) == 9, summary

    after = _parts(storage)
    # (2 strategies + 1 baseline) x 3 seeds, plus the per-task selection's 3 runs: one part each
    assert len(after) == 12
    assert all(after[k] == v for k, v in before.items())  # parts written before the kill were not rewritten
    import polars as pl

    files = sorted((storage / "results" / "study=resume").glob("*.parquet"))
    df = pl.concat([pl.read_parquet(f) for f in files], how="diagonal_relaxed")  # plain Polars, no mfray
    runs = df.select("strategy", "split_seed", "run_key").unique()
    assert runs.height == 12 and runs.select("strategy", "split_seed").unique().height == 12
    assert sorted(runs["strategy"].unique().to_list()) == ["base", "label", "lf_linear", "selected"]
    assert df.group_by("run_key", "fold", "metric").len()["len"].max() == 1  # no row twice
    for s in storage.glob("search/*/trials.json"):
        assert len(json.loads(s.read_text())["trials"]) == 3  # no extra trials after the restore
    print(f"final: {len(after)} parts, {df.height} rows, {runs.height} distinct runs; re-run: {summary}")
