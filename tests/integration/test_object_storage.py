"""A study on object storage: a local S3-compatible server (moto's server mode, on 127.0.0.1, started and
stopped here) stands in for S3. The study's Ray Tune and Ray Train experiments, LF model, search records,
refits and results all land in the bucket; a driver killed mid-study resumes from the bucket with no
duplicate rows; `mfray report` and `mfray study status` read it. The endpoint and credentials come
from the standard AWS environment variables, as they would for AWS S3 or MinIO."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from driver_procs import free_port, mfray

pytestmark = pytest.mark.ray
moto = pytest.importorskip("moto", reason="moto[server] (test extra) is not installed")

BUCKET = "mfray-test"
SPEC = """
name = "s3"
tasks = ["aid1445"]
strategies = ["base", "embeddings"]
baselines = ["lf_linear"]
max_seeds = 2

[train]
max_epochs = 3
patience = 0
batch_size = 64

[model]
hidden_dim = 16
latent_dim = 8
head_hidden_dim = 16

[readout_kwargs.set_transformer]
hidden_dim = 16
num_heads = 2
num_seeds = 2
out_dim = 16

[pretrain]
max_epochs = 1
batch_size = 128
lr = 1e-3
holdout = "always"

[search]
num_samples = 2
max_concurrent_trials = 1
grace_period = 3

[search.space]
lr = { low = 1e-4, high = 1e-2, log = true }
"""


@pytest.fixture
def s3(tmp_path):
    """A moto S3 server on 127.0.0.1 with an empty bucket; yields the AWS environment that points at it."""
    port = free_port()
    exe = Path(sys.executable).parent / "moto_server"
    server = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                              stderr=open(tmp_path / "moto.log", "w"), start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 300
    while True:  # ready when it answers (however long a loaded machine takes to start it)
        try:
            urllib.request.urlopen(f"{url}/moto-api/", timeout=5)
            break
        except OSError:
            if server.poll() is not None or time.time() > deadline:
                server.kill()
                pytest.fail(f"moto server did not start: {(tmp_path / 'moto.log').read_text()[-2000:]}")
            time.sleep(0.2)
    env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": url}
    import boto3

    boto3.client("s3", region_name="us-east-1", endpoint_url=url, aws_access_key_id="test",
                 aws_secret_access_key="test").create_bucket(Bucket=BUCKET)
    try:
        yield env
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)


def _listing(env: dict, prefix: str) -> list[str]:
    import pyarrow.fs as pafs

    fs = pafs.S3FileSystem(endpoint_override=env["AWS_ENDPOINT_URL"], access_key="test", secret_key="test",
                           region="us-east-1")
    infos = fs.get_file_info(pafs.FileSelector(f"{BUCKET}/{prefix}", recursive=True, allow_not_found=True))
    return [i.path[len(BUCKET) + len(prefix) + 2:] for i in infos if i.type == pafs.FileType.File]


def test_a_study_on_object_storage_resumes_after_a_killed_driver(tmp_path, s3):
    spec = tmp_path / "s3.toml"
    spec.write_text(SPEC)
    uri = f"s3://{BUCKET}/studies"
    env = {**os.environ, **s3, "MFRAY_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1",
           "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)

    # 1. kill the driver (its whole process group: the local Ray too) once the first refit's part is in the bucket
    proc = subprocess.Popen([sys.executable, "-m", "mfray", "study", "run", str(spec), "--storage", uri, "--no-report"],
                            env=env, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "run1.log", "w"),
                            start_new_session=True)
    deadline = time.time() + 1200
    while not any(p.startswith("results/study=s3/run-") for p in _listing(s3, "studies")):
        if proc.poll() is not None:
            pytest.fail(f"the study ended before the kill point:\n{(tmp_path / 'run1.log').read_text()[-3000:]}")
        if time.time() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("timed out waiting for the first result part")
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    before = {p for p in _listing(s3, "studies") if p.startswith("results/")}
    print(f"\nkilled with {len(before)} result part(s) in the bucket")

    status = mfray("study", "status", str(spec), "--storage", uri, env=env, timeout=300)
    assert status.returncode == 0 and "interrupted" in status.stdout, status.stdout + status.stderr

    # 2. re-run to the end from the bucket
    final = mfray("study", "run", str(spec), "--storage", uri, "--no-report", env=env)
    assert final.returncode == 0, final.stderr[-3000:]
    assert "search: 2 cached" in final.stderr  # killed in the runs phase: both searches were recorded in the bucket

    files = _listing(s3, "studies")
    top = Counter(f.split("/")[0] for f in files)
    print("bucket:", dict(top))
    for folder in ("results", "lf", "search", "runs", "ray", "studies"):
        assert top[folder] > 0, (folder, top)
    assert any(f.startswith("lf/") and f.endswith("/lf.ckpt") for f in files)       # the LF model
    assert any(f.startswith("ray/lf-") for f in files)                               # Ray Train's run
    assert any(f.startswith("ray/search-") for f in files)                           # Ray Tune's experiments
    assert sum(f.startswith("search/") and f.endswith("/best.json") for f in files) == 2
    assert any(f.startswith("runs/") and f.endswith("/best.ckpt") for f in files)    # refits
    parts = [f for f in files if f.startswith("results/study=s3/run-")]
    # (base + embeddings + lf_linear + the selection) x 2 seeds: one part each, the killed run's parts kept
    assert len(parts) == 8 and before <= set(files)

    import polars as pl
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    fs = pafs.S3FileSystem(endpoint_override=s3["AWS_ENDPOINT_URL"], access_key="test", secret_key="test",
                           region="us-east-1")
    df = pl.concat([pl.from_arrow(pq.read_table(f"{BUCKET}/studies/{p}", filesystem=fs)) for p in parts],
                   how="diagonal_relaxed")
    assert df.group_by("run_key", "fold", "metric").len()["len"].max() == 1  # no row twice
    assert df.select("strategy", "split_seed").unique().height == 8

    report = mfray("report", uri, "--study", "s3", "--metric", "r2", env=env, timeout=300)
    assert report.returncode == 0, report.stderr
    assert "## Study s3" in report.stdout and "embeddings" in report.stdout
    status = mfray("study", "status", str(spec), "--storage", uri, env=env, timeout=300)
    assert status.returncode == 0 and "finished" in status.stdout.splitlines()[0], status.stdout
