"""`ray job submit` against a local head: mfray runs as a cluster job and writes its store.

The head is started with ``ray start --head --block`` in its own process group, and only that group is
stopped at the end: other Ray processes on the machine are left alone.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.ray


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def local_head():
    ray_bin = Path(sys.executable).parent / "ray"
    if not ray_bin.exists():
        pytest.skip("the ray CLI is not installed next to this Python")
    tmp = tempfile.mkdtemp(prefix="mfray-rj-", dir="/tmp")  # short: Ray's socket paths have a length limit
    dash = _free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    proc = subprocess.Popen(
        [str(ray_bin), "start", "--head", "--block", "--num-cpus=2", f"--port={_free_port()}",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", f"--temp-dir={tmp}", "--disable-usage-stats",
         f"--ray-client-server-port={_free_port()}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    url = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.time() + 120
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


def test_featurize_as_a_ray_job(local_head, repo, tmp_path):
    store = tmp_path / "store"
    excludes = json.dumps({"excludes": [".venv", ".git", "runs", ".mfray", "*.ckpt"]})
    out = subprocess.run(
        [local_head["ray"], "job", "submit", "--address", local_head["url"], "--working-dir", str(repo),
         "--runtime-env-json", excludes, "--", sys.executable, "-m", "mfray", "featurize", "aid1445",
         "--out", str(store), "--no-progress"],
        env=local_head["env"], capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "succeeded" in out.stdout + out.stderr
    assert "rows read                655" in out.stdout
    manifest = json.loads(next(store.glob("aid1445/*/manifest.json")).read_text())
    assert manifest["counts"]["molecules"] == 655 and manifest["timings_s"]["executor"] == "ray"
