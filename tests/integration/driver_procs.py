"""What the integration tests share: free ports, the environment of a driver or Ray process they start,
starting `mfray study run` in its own process group, and waiting for a condition while it runs.

(Importable as ``driver_procs``: pytest puts this folder on ``sys.path`` for the tests in it.)"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def driver_env(cache: Path | None = None, **extra: str) -> dict[str, str]:
    """The environment of a process a test starts: one torch thread, Ray's token auth off (the test's
    own clusters run without it), no inherited RAY_ADDRESS, ``MFRAY_CACHE`` = ``cache`` when given."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_AUTH_MODE": "disabled", **extra}
    env.pop("RAY_ADDRESS", None)
    if cache is not None:
        env["MFRAY_CACHE"] = str(cache)
    return env


def start_study(spec: Path, storage: Path | str, env: dict[str, str], *args: str, **popen: Any) -> subprocess.Popen:
    """``mfray study run spec --storage storage --no-report`` in its own process group, so that the test
    can signal or kill the driver together with the local Ray it starts (and a terminal's Ctrl-C would
    reach the whole group)."""
    return subprocess.Popen([sys.executable, "-m", "mfray", "study", "run", str(spec), "--storage", str(storage),
                             "--no-report", *args], env=env, start_new_session=True, **popen)


def mfray(*args: str, env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess:
    """``mfray *args``, to the end, output captured."""
    return subprocess.run([sys.executable, "-m", "mfray", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def wait_for(proc: subprocess.Popen, cond: Callable[[], bool], what: str, *, log: Path | None = None,
             timeout: float = 900, poll: float = 0.2) -> None:
    """Wait until ``cond()`` holds while ``proc`` runs. Fails the test (naming ``what``, with the tail of
    ``log``) if ``proc`` ends first, or, killing its process group, if ``timeout`` passes: a bound on a run
    that never gets there, not a timing window; the wait ends as soon as the condition holds."""
    deadline = time.time() + timeout
    while not cond():
        if proc.poll() is not None:
            tail = log.read_text()[-3000:] if log is not None and log.exists() else ""
            pytest.fail(f"the process ended before {what}:\n{tail}")
        if time.time() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(poll)
