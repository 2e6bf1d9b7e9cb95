"""A Ray that cannot start (or a cluster that cannot be reached) is tried once more, then reported as one
message with exit 2: what failed, where Ray's logs are, what to try. Never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import mfray.run.runtime as runtime
from mfray.run.runtime import CPUS_ENV, RAY_START_ATTEMPTS, RayStartError, ensure_ray


class FakeRay:
    """Stands in for the ``ray`` module: ``init`` fails ``fail`` times, then succeeds."""

    def __init__(self, fail: int, error: Exception):
        self.fail, self.error = fail, error
        self.inits: list[dict] = []
        self.shutdowns = 0

    def is_initialized(self):
        return False

    def init(self, **kwargs):
        self.inits.append(kwargs)
        if len(self.inits) <= self.fail:
            raise self.error
        return type("Ctx", (), {"dashboard_url": ""})()

    def shutdown(self):
        self.shutdowns += 1


@pytest.fixture
def fake_ray(monkeypatch):
    def make(fail: int, error: Exception | None = None) -> FakeRay:
        fake = FakeRay(fail, error or Exception("The current node timed out during startup."))
        monkeypatch.setitem(sys.modules, "ray", fake)
        return fake

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv(CPUS_ENV, raising=False)
    return make


def test_a_start_that_times_out_once_is_retried(fake_ray):
    fake = fake_ray(fail=1)
    assert ensure_ray(num_cpus=1) is None
    assert len(fake.inits) == 2 and fake.shutdowns == 1  # what the failed try left is stopped first


def test_a_start_that_keeps_failing_is_one_clear_error(fake_ray):
    fake = fake_ray(fail=RAY_START_ATTEMPTS)
    with pytest.raises(RayStartError) as e:
        ensure_ray(num_cpus=2)
    msg = str(e.value)
    assert len(fake.inits) == RAY_START_ATTEMPTS
    assert "could not start a local Ray with 2 CPU(s)" in msg and "timed out during startup" in msg
    assert "session_latest/logs" in msg and CPUS_ENV in msg and "RAY_ADDRESS" in msg


def test_an_unreachable_cluster_names_the_address(fake_ray, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.9:6379")
    fake_ray(fail=9, error=ConnectionError("Could not find any running Ray instance."))
    with pytest.raises(RayStartError, match=r"RAY_ADDRESS=10\.0\.0\.9:6379.*RAY_AUTH_MODE"):
        ensure_ray()


def test_cpus_come_from_the_environment(fake_ray, monkeypatch):
    fake = fake_ray(fail=0)
    monkeypatch.setenv(CPUS_ENV, "1")
    ensure_ray()
    assert fake.inits[0]["num_cpus"] == 1
    monkeypatch.setenv(CPUS_ENV, "zero")
    with pytest.raises(runtime.MfrayError, match=CPUS_ENV):
        ensure_ray()


def test_the_cli_exits_2_with_the_message_when_local_ray_cannot_start(tmp_path):
    """End to end: Ray's temp folder is a file, so a real local Ray start fails (twice)."""
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("")
    env = {**os.environ, "RAY_TMPDIR": str(blocker), "OMP_NUM_THREADS": "1"}
    env.pop("RAY_ADDRESS", None)
    out = subprocess.run([sys.executable, "-m", "mfray", "featurize", "aid1445", "--ray",
                          "--out", str(tmp_path / "graphs"), "--no-progress"],
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    assert "could not start a local Ray" in out.stderr and str(blocker) in out.stderr
