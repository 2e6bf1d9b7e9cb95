"""Autoscaling, on one machine: Ray's fake multi-node provider (``provider: type: fake_multinode``) plays the
cloud. The head advertises no CPUs; a study's trials and refits ask for CPUs, so the autoscaler brings up
worker nodes (up to 2), and removes them once they sit idle after the study. A poller records the number of
alive nodes over time; the test shows it rising and falling.

The head is a ``ray start --head --block`` in its own process group (its autoscaler starts and stops the
fake worker nodes in-process); only that group is stopped.
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
from pathlib import Path

import pytest
from driver_procs import free_port

pytestmark = pytest.mark.ray

SPEC = """
name = "autoscale"
tasks = ["aid1445"]
strategies = ["base"]
max_seeds = 2

[train]
max_epochs = 20
patience = 0
batch_size = 64

[model]
hidden_dim = 16
latent_dim = 8
head_hidden_dim = 16

[search]
num_samples = 2
max_concurrent_trials = 2
grace_period = 20

[search.space]
lr = { low = 1e-4, high = 1e-2, log = true }
"""

POLLER = r"""
import json, sys, time
import ray
ray.init(address=sys.argv[1], logging_level="ERROR")
out = open(sys.argv[2], "a")
while True:
    n = sum(1 for x in ray.nodes() if x["Alive"])
    out.write(json.dumps({"t": time.time(), "nodes": n}) + "\n"); out.flush()
    time.sleep(1)
"""


def _node_ip() -> str:
    import ray._private.services

    return ray._private.services.get_node_ip_address()


def autoscaling_config(gcs_address: str, max_nodes: int = 2, idle_minutes: float = 0.25) -> dict:
    """A cluster config for the fake multi-node provider: a head with no CPUs, 1-CPU workers from 0 to max."""
    return {
        "cluster_name": "mfray-fake",
        "max_workers": max_nodes,
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": idle_minutes,
        # several fake nodes share this machine's IP: the autoscaler tells them apart by node id; they are
        # started in-process, so no launch-config check or node updaters (SSH) apply
        "provider": {"type": "fake_multinode", "gcs_address": gcs_address, "use_node_id_as_ip": True,
                     "disable_launch_config_check": True, "disable_node_updaters": True},
        "auth": {"ssh_user": "ubuntu"},
        "docker": {},
        "head_node_type": "ray.head.default",
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
            "ray.worker.cpu": {"resources": {"CPU": 1}, "node_config": {}, "min_workers": 0, "max_workers": max_nodes},
        },
        "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
        "rsync_exclude": [], "rsync_filter": [], "initialization_commands": [], "setup_commands": [],
        "head_setup_commands": [], "worker_setup_commands": [], "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }


@pytest.fixture
def fake_cluster(tmp_path):
    ray_bin = Path(sys.executable).parent / "ray"
    if not ray_bin.exists():
        pytest.skip("the ray CLI is not installed next to this Python")
    port = free_port()
    address = f"{_node_ip()}:{port}"
    cfg = tmp_path / "autoscaling.json"
    cfg.write_text(json.dumps(autoscaling_config(address)))
    tmp = tempfile.mkdtemp(prefix="mfray-as-", dir="/tmp")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1",
           "OMP_NUM_THREADS": "1", "MFRAY_CACHE": str(tmp_path / "cache")}
    from ray.autoscaler._private.fake_multi_node.node_provider import FAKE_HEAD_NODE_ID

    head_env = {**env, "RAY_OVERRIDE_NODE_ID_FOR_TESTING": FAKE_HEAD_NODE_ID}  # the provider knows the head by it
    env.pop("RAY_ADDRESS", None)
    head = subprocess.Popen([str(ray_bin), "start", "--head", "--block", f"--port={port}", "--num-cpus=0",
                             f"--autoscaling-config={cfg}", f"--temp-dir={tmp}", "--disable-usage-stats",
                             "--include-dashboard=false", f"--ray-client-server-port={free_port()}"],
                            env=head_env, stdout=open(tmp_path / "head.log", "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    counts = tmp_path / "nodes.jsonl"
    poller = None
    try:
        deadline = time.time() + 600  # bounds a head that never comes up; the wait ends when it does
        while True:
            try:  # a head still starting can keep a client waiting: give up after 60 s and ask again
                probe = subprocess.run([sys.executable, "-c", "import ray; ray.init(address=%r, logging_level='ERROR')"
                                        % address], env=env, capture_output=True, text=True, timeout=60)
                if probe.returncode == 0:
                    break
            except subprocess.TimeoutExpired:
                pass
            if head.poll() is not None or time.time() > deadline:
                pytest.fail(f"the fake cluster's head did not come up: {(tmp_path / 'head.log').read_text()[-2000:]}")
            time.sleep(2)
        poller = subprocess.Popen([sys.executable, "-c", POLLER, address, str(counts)], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        yield {"address": address, "env": env, "counts": counts, "tmp": tmp_path}
    finally:
        for p in (poller, head):
            if p is None:
                continue
            try:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(timeout=60)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        shutil.rmtree(tmp, ignore_errors=True)


def _counts(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_nodes_come_up_for_a_study_and_go_when_idle(fake_cluster):
    tmp = fake_cluster["tmp"]
    spec = tmp / "autoscale.toml"
    spec.write_text(SPEC)
    t0 = time.time()
    env = {**fake_cluster["env"], "RAY_ADDRESS": fake_cluster["address"]}
    env.pop("RAY_FAKE_CLUSTER")
    run = subprocess.run([sys.executable, "-m", "mfray", "study", "run", str(spec), "--storage", str(tmp / "storage"),
                          "--no-report"], env=env, capture_output=True, text=True, timeout=1800)
    t_done = time.time()
    assert run.returncode == 0, run.stderr[-4000:]
    assert "runs: 2 ran" in run.stderr and "search: 1 ran" in run.stderr, run.stderr[-2000:]
    # the idle worker nodes go after idle_timeout_minutes (15 s): wait for it, however long a loaded machine takes
    deadline = time.time() + 600
    while not (_counts(fake_cluster["counts"]) and _counts(fake_cluster["counts"])[-1]["nodes"] == 1
               and _counts(fake_cluster["counts"])[-1]["t"] > t_done):
        if time.time() > deadline:
            pytest.fail(f"the worker nodes were not removed: {_counts(fake_cluster['counts'])[-5:]}")
        time.sleep(2)
    series = _counts(fake_cluster["counts"])
    during = [c["nodes"] for c in series if t0 <= c["t"] <= t_done]
    print("\nalive nodes over time (s since the study started: nodes, at each change):")
    last = None
    for c in series:
        if c["nodes"] != last:
            print(f"  {c['t'] - t0:7.1f} s: {c['nodes']}")
            last = c["nodes"]
    print(f"  study finished at {t_done - t0:.1f} s")
    assert series[0]["nodes"] == 1  # the head alone before the study
    assert max(during) >= 2  # worker nodes were brought up for the trials (the head has no CPU)
    assert series[-1]["nodes"] == 1  # and removed once idle
