"""`ray job submit` against a local head: mfray runs as a cluster job and writes its store.

The head is started with ``ray start --head --block`` in its own process group, and only that group is
stopped at the end: other Ray processes on the machine are left alone.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from driver_procs import free_port

pytestmark = pytest.mark.ray


@pytest.fixture
def local_head():
    ray_bin = Path(sys.executable).parent / "ray"
    if not ray_bin.exists():
        pytest.skip("the ray CLI is not installed next to this Python")
    tmp = tempfile.mkdtemp(prefix="mfray-rj-", dir="/tmp")  # short: Ray's socket paths have a length limit
    dash = free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    proc = subprocess.Popen(
        [str(ray_bin), "start", "--head", "--block", "--num-cpus=2", f"--port={free_port()}",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", f"--temp-dir={tmp}", "--disable-usage-stats",
         f"--ray-client-server-port={free_port()}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    url = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.time() + 300  # a bound on a head that never comes up, not a timing window
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/version", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail("the local Ray head did not come up")
            time.sleep(1)
        yield {"url": url, "env": env, "ray": str(ray_bin)}
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(tmp, ignore_errors=True)


def _submit(args: list[str], env: dict, timeout: float) -> subprocess.CompletedProcess:
    """``ray job submit``, retried while the head's job agent is still starting (it answers HTTP 500
    "No available agent to submit job" after the dashboard is up: seconds on an idle machine, minutes on a
    loaded one). The wait ends when the agent answers; the deadline only bounds a head that never gets one."""
    deadline = time.time() + 600
    while True:
        out = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)
        if out.returncode == 0 or "No available agent" not in out.stdout + out.stderr or time.time() > deadline:
            return out
        time.sleep(3)


def test_featurize_as_a_ray_job(local_head, repo, tmp_path):
    store = tmp_path / "store"
    excludes = json.dumps({"excludes": [".venv", ".git", "runs", ".mfray", "*.ckpt"]})
    out = _submit(
        [local_head["ray"], "job", "submit", "--address", local_head["url"], "--working-dir", str(repo),
         "--runtime-env-json", excludes, "--", sys.executable, "-m", "mfray", "featurize", "aid1445",
         "--out", str(store), "--no-progress", "--ray"],  # 655 rows would run in-process by default
        local_head["env"], timeout=300,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "succeeded" in out.stdout + out.stderr
    assert "rows read                655" in out.stdout
    manifest = json.loads(next(store.glob("aid1445/*/manifest.json")).read_text())
    assert manifest["counts"]["molecules"] == 655 and manifest["timings_s"]["executor"] == "ray"


def test_smoke_study_as_a_ray_job(local_head, repo, tmp_path):
    """The demo study's smoke version submitted to the head: LF pretraining (Ray Train, 2 workers),
    searches (Tune + Optuna + ASHA), refits and baselines all run as one cluster job."""
    storage = tmp_path / "storage"
    excludes = json.dumps({"excludes": [".venv", ".git", "runs", ".mfray", "*.ckpt", "mfray_results"]})
    out = _submit(
        [local_head["ray"], "job", "submit", "--address", local_head["url"], "--working-dir", str(repo),
         "--runtime-env-json", excludes, "--", sys.executable, "-m", "mfray", "study", "run", "studies/demo.toml",
         "--smoke", "--storage", str(storage), "--store-root", str(tmp_path / "stores")],
        local_head["env"], timeout=900,
    )
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-4000:]
    assert "succeeded" in log and "## Study demo-smoke" in log
    import polars as pl

    files = sorted((storage / "results" / "study=demo-smoke").glob("run-*.parquet"))
    df = pl.concat([pl.read_parquet(f) for f in files], how="diagonal_relaxed")
    runs = df.select("strategy", "split_seed").unique()
    # 5 strategies + 2 baselines + the per-task selection, 2 seeds each; one part (and one row set) per run
    assert runs.height == 16 and len(files) == 16
    assert runs.filter(pl.col("strategy") == "selected").height == 2
    assert set(df["strategy"]) == {"base", "label", "predicted_label", "embeddings", "tune_readout", "lf_linear", "rf",
                                   "selected"}
    assert (storage / "lf").is_dir() and list(storage.glob("lf/*/lf.ckpt"))
