"""Ctrl-C and SIGTERM on `mfray study run`: the first one stops the study cleanly (exit 130 / 143, "resume with
the same command"), the search it interrupted is neither recorded as failed nor as done, and running the
same command again finishes the study with no failed search and no duplicate rows. While the first
driver runs, a second one on the same storage is refused (exit 2, naming the first)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.faults]

SPEC = """
name = "signals"
tasks = ["aid1445"]
strategies = ["base", "label"]
baselines = ["lf_linear"]
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
max_concurrent_trials = 1
grace_period = 20
checkpoint_every = 1

[search.space]
lr = { low = 1e-4, high = 1e-2, log = true }
"""


def _start(spec: Path, storage: Path, env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mfray", "study", "run", str(spec), "--storage", str(storage),
                             "--no-report"], env=env, stdout=subprocess.DEVNULL, stderr=open(log, "w"),
                            start_new_session=True)  # a terminal's Ctrl-C goes to the whole foreground group


def _wait_for(proc: subprocess.Popen, cond, log: Path, timeout: float = 900) -> None:
    deadline = time.time() + timeout  # bounds a study that never gets there; the wait ends when it does
    while not cond():
        if proc.poll() is not None:
            pytest.fail(f"the study ended before the signal point:\n{log.read_text()[-3000:]}")
        if time.time() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("timed out waiting for the signal point")
        time.sleep(0.3)


def _trial_running(storage: Path) -> bool:
    """A search trial has reported at least 2 epochs (so it has a checkpoint to resume from)."""
    for f in storage.glob("ray/search-*/*/result.json"):
        try:
            if len(f.read_text().splitlines()) >= 2:
                return True
        except OSError:
            pass
    return False


def test_ctrl_c_and_sigterm_stop_cleanly_and_the_study_resumes(tmp_path):
    spec = tmp_path / "signals.toml"
    spec.write_text(SPEC)
    storage = tmp_path / "storage"
    env = {**os.environ, "MFRAY_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1", "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)

    # 1. Ctrl-C (SIGINT to the driver's whole process group, as a terminal sends it) during the first search
    log1 = tmp_path / "run1.log"
    proc = _start(spec, storage, env, log1)
    _wait_for(proc, lambda: _trial_running(storage), log1)
    # a second driver on the same storage is refused while the first one runs (issue 13, class 9)
    second = subprocess.run([sys.executable, "-m", "mfray", "study", "run", str(spec), "--storage", str(storage),
                             "--no-report"], env=env, capture_output=True, text=True, timeout=300)
    print("\n--- second driver:\n" + second.stderr.strip().splitlines()[-1])
    assert second.returncode == 2, second.stderr[-3000:]
    assert f"is being run by another driver (pid {proc.pid} on " in second.stderr and "Traceback" not in second.stderr
    os.killpg(proc.pid, signal.SIGINT)
    rc = proc.wait(timeout=600)
    err = log1.read_text()
    print("\n--- Ctrl-C:\n" + "\n".join(err.splitlines()[-4:]))
    assert rc == 130, err[-3000:]
    assert "stopped by SIGINT" in err and "resume with the same command" in err
    after = err.split("SIGINT: stopping")[-1]
    assert not re.search(r"search .* failed|trial\(s\) failed|failure", after), after  # nothing reported as failed
    assert not list(storage.glob("search/*/best.json"))  # the interrupted search was not recorded as done ...
    assert not any("no trial finished" in p.read_text() for p in storage.glob("studies/signals/*.json"))  # ... nor failed
    driver = json.loads((storage / "studies" / "signals" / "driver.json").read_text())
    assert driver["state"] == "interrupted"

    # 2. SIGTERM (to the driver alone, as a process manager sends it) once the runs have started
    log2 = tmp_path / "run2.log"
    proc = _start(spec, storage, env, log2)
    _wait_for(proc, lambda: "runs:" in log2.read_text(), log2)
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(timeout=600)
    err = log2.read_text()
    print("--- SIGTERM:\n" + "\n".join(err.splitlines()[-3:]))
    assert rc == 143, err[-3000:]
    assert "stopped by SIGTERM" in err
    assert "no trial finished" not in err and not re.search(r"search .* failed", err)  # the search resumed

    # 3. the same command again: the study finishes, nothing failed, every run once
    final = subprocess.run([sys.executable, "-m", "mfray", "study", "run", str(spec), "--storage", str(storage),
                            "--no-report"], env=env, capture_output=True, text=True, timeout=900)
    assert final.returncode == 0, final.stderr[-3000:]
    print("--- resumed:\n" + final.stderr.splitlines()[-1])
    assert "failure" not in final.stderr
    assert json.loads((storage / "studies" / "signals" / "failures.json").read_text()) == []
    import polars as pl

    files = sorted((storage / "results" / "study=signals").glob("run-*.parquet"))
    df = pl.concat([pl.read_parquet(f) for f in files], how="diagonal_relaxed")
    assert len(files) == 8  # (base + label + lf_linear + the selection) x 2 seeds
    assert df.group_by("run_key", "fold", "metric").len()["len"].max() == 1
    for rec in storage.glob("search/*/trials.json"):
        trials = json.loads(rec.read_text())["trials"]
        assert len(trials) == 2 and all(t["status"] == "finished" for t in trials)
