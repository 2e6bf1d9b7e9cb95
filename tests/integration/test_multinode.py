"""Several Ray nodes on one machine: a head that does no work and two worker nodes started with `ray start`,
each with its own ``MFRAY_CACHE``. A study driven against that cluster runs its trials and refits on the
worker nodes; each worker builds its own graph store (same key as the driver's). One worker node is then
killed mid-study (its process group only): the trial it held is retried on the other node, the study
finishes with complete results and no duplicate rows, and `mfray study status` / `mfray study trials` say
what happened.

Each node is a ``ray start --block`` in its own process group; only those groups are stopped.
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
name = "nodes"
tasks = ["aid1445"]
strategies = ["base"]
baselines = ["lf_linear"]
max_seeds = 2

[train]
max_epochs = 60            # trials long enough (tens of seconds) that a node killed as one starts is mid-trial
patience = 0
batch_size = 64

[model]
hidden_dim = 16
latent_dim = 8
head_hidden_dim = 16

[search]
num_samples = 2
max_concurrent_trials = 2
grace_period = 60

[search.space]
readout = ["sum", "mean"]
lr = { low = 1e-4, high = 1e-2, log = true }

[failure]
trial_retries = 2
"""


class Cluster:
    """A head (no CPUs) and worker nodes (1 CPU each, a custom resource ``node_<i>``) on 127.0.0.1."""

    def __init__(self, root: Path):
        self.ray = str(Path(sys.executable).parent / "ray")
        self.root = root
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.tmp = tempfile.mkdtemp(prefix="mfray-mn-", dir="/tmp")  # short: Ray's socket paths are limited
        self.procs: dict[str, subprocess.Popen] = {}
        self.env = {**os.environ, "RAY_AUTH_MODE": "disabled", "OMP_NUM_THREADS": "1"}
        self.env.pop("RAY_ADDRESS", None)

    def _start(self, name: str, args: list[str], cache: Path) -> None:
        env = {**self.env, "MFRAY_CACHE": str(cache)}
        log = open(self.root / f"{name}.log", "w")
        self.procs[name] = subprocess.Popen([self.ray, "start", "--block", "--disable-usage-stats",
                                             "--node-ip-address=127.0.0.1", *args], env=env, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)

    def _start_until_up(self, name: str, args: list[str], cache: Path, nodes: int, tries: int = 3) -> None:
        """Start a node and wait until the cluster has ``nodes`` alive. On a loaded machine a node can miss
        Ray's fixed 30 s start-up deadline and exit; it is started again (at most ``tries`` times)."""
        for attempt in range(1, tries + 1):
            self._start(name, args, cache)
            if self.wait_nodes(nodes, name):
                return
            print(f"ray node {name} exited during start-up (try {attempt}): "
                  f"{(self.root / f'{name}.log').read_text()[-300:]}")
            self.procs.pop(name)
        pytest.fail(f"ray node {name} did not start in {tries} tries")

    def start_head(self) -> None:
        self._start_until_up("head", ["--head", f"--port={self.port}", "--num-cpus=0", f"--temp-dir={self.tmp}",
                                      "--include-dashboard=false", f"--ray-client-server-port={free_port()}"],
                             self.root / "cache_head", 1)

    def add_worker(self, i: int, nodes: int) -> None:
        self._start_until_up(f"worker{i}", [f"--address={self.address}", "--num-cpus=1",
                                            f"--resources={json.dumps({f'node_{i}': 1})}"], self.cache(i), nodes)

    def cache(self, i: int) -> Path:
        return self.root / f"cache_w{i}"

    def alive_nodes(self) -> int:
        """Alive nodes, asked of the cluster by a fresh client; 0 when it cannot answer yet (a head still
        starting can keep a client waiting: the probe gives up after 60 s and the caller asks again)."""
        code = ("import ray, json, sys; ray.init(address=sys.argv[1], logging_level='ERROR');"
                "print(json.dumps(sum(1 for n in ray.nodes() if n['Alive'])))")
        try:
            out = subprocess.run([sys.executable, "-c", code, self.address], env=self.env, capture_output=True,
                                 text=True, timeout=60)
        except subprocess.TimeoutExpired:
            return 0
        return int(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 and out.stdout.strip() else 0

    def wait_nodes(self, n: int, starting: str) -> bool:
        """Wait until ``n`` nodes are alive (True), or until node ``starting`` exits (False)."""
        deadline = time.time() + 600  # bounds a node that never comes up; the wait ends when it does
        while self.alive_nodes() < n:
            if self.procs[starting].poll() is not None:
                return False
            for name, p in self.procs.items():
                if p.poll() is not None and name != starting:
                    pytest.fail(f"ray node {name} exited: {(self.root / f'{name}.log').read_text()[-2000:]}")
            if time.time() > deadline:
                pytest.fail(f"{n} Ray node(s) did not come up")
            time.sleep(1)
        return True

    def kill(self, name: str) -> None:
        p = self.procs.pop(name)
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait(timeout=60)

    def stop(self) -> None:
        for name in [n for n in self.procs if n != "head"] + ["head"]:
            if name in self.procs:
                p = self.procs.pop(name)
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                    p.wait(timeout=30)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    try:
                        os.killpg(p.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.fixture
def cluster(tmp_path):
    if not (Path(sys.executable).parent / "ray").exists():
        pytest.skip("the ray CLI is not installed next to this Python")
    c = Cluster(tmp_path)
    try:
        c.start_head()
        c.add_worker(1, nodes=2)
        c.add_worker(2, nodes=3)
        yield c
    finally:
        c.stop()


def _driver(spec: Path, storage: Path, cluster: Cluster, cache: Path, **kw) -> subprocess.Popen:
    env = {**cluster.env, "RAY_ADDRESS": cluster.address, "MFRAY_CACHE": str(cache)}
    return subprocess.Popen([sys.executable, "-m", "mfray", "study", "run", str(spec), "--storage", str(storage),
                             "--no-report"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _stores(cache: Path) -> list[str]:
    return sorted(p.parent.name for p in cache.glob("graphs/aid1445/*/manifest.json"))


def _check_results(storage: Path) -> "object":
    import polars as pl

    files = sorted((storage / "results" / "study=nodes").glob("run-*.parquet"))
    df = pl.concat([pl.read_parquet(f) for f in files], how="diagonal_relaxed")
    # (base + lf_linear + the selection) x 2 seeds, one part (one row set) each
    assert len(files) == 6, len(files)
    assert df.select("strategy", "split_seed").unique().height == 6
    assert df.group_by("run_key", "fold", "metric").len()["len"].max() == 1
    return df


def test_a_study_across_worker_nodes_survives_losing_one(cluster, tmp_path):
    """Trials and refits run on the worker nodes, each of which builds its own graph store (same key as the
    driver's); worker node 2 is killed mid-search; the study finishes on node 1 with complete results."""
    spec = tmp_path / "nodes.toml"
    spec.write_text(SPEC)
    storage = tmp_path / "storage"
    proc = _driver(spec, storage, cluster, tmp_path / "cache_driver")
    # kill worker node 2 once the first search has trials running on both nodes (each built its store)
    deadline = time.time() + 1200
    while not (_stores(cluster.cache(1)) and _stores(cluster.cache(2))):
        if proc.poll() is not None:
            pytest.fail(f"the study ended before the kill point: {proc.stderr.read()[-3000:]}")
        if time.time() > deadline:
            proc.kill()
            pytest.fail("timed out waiting for both worker nodes to start work")
        time.sleep(0.5)
    driver_store = _stores(tmp_path / "cache_driver")
    assert len(driver_store) == 1  # the driver featurised (655 rows: in-process)
    for i in (1, 2):  # every worker node built its own copy under its own MFRAY_CACHE, with the same key
        assert _stores(cluster.cache(i)) == driver_store, (i, _stores(cluster.cache(i)))
    print(f"\nstore {driver_store[0]}: built by the driver and by worker nodes 1 and 2")
    cluster.kill("worker2")
    print(f"\nkilled worker node 2 mid-search at {time.strftime('%H:%M:%S')}")
    out, err = proc.communicate(timeout=1800)
    assert proc.returncode == 0, err[-4000:]
    print(err[-1500:])
    _check_results(storage)
    assert _stores(tmp_path / "cache_head") == []  # the head did no work
    env = {**cluster.env, "RAY_ADDRESS": cluster.address, "MFRAY_CACHE": str(tmp_path / "cache_driver")}
    status = subprocess.run([sys.executable, "-m", "mfray", "study", "status", str(spec), "--storage", str(storage)],
                            env=env, capture_output=True, text=True, timeout=300)
    assert status.returncode == 0 and "finished" in status.stdout.splitlines()[0], status.stdout + status.stderr
    print(status.stdout)
    # what happened: the work the lost node held failed and was run again (a search trial or a refit)
    assert "retried after an error" in status.stdout or "succeeded when run again" in status.stdout, status.stdout
    trials = subprocess.run([sys.executable, "-m", "mfray", "study", "trials", str(spec), "--storage", str(storage)],
                            env=env, capture_output=True, text=True, timeout=300)
    assert trials.returncode == 0, trials.stderr
    print(trials.stdout)
    assert "recovered by a retry" in err or "retrying" in err, err[-3000:]

