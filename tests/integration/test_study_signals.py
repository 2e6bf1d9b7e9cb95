"""Ctrl-C and SIGTERM on `mfray study run`: the first one stops the study cleanly (exit 130 / 143, "resume with
the same command"), the search it interrupted is neither recorded as failed nor as done, and running the
same command again finishes the study with no failed search and no duplicate rows. While the first
driver runs, a second one on the same storage is refused (exit 2, naming the first); a driver whose lease
another takes over stops cleanly, and --force-unlock takes a live driver's lease."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from driver_procs import driver_env, mfray, start_study, wait_for

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


def _record(path: Path) -> dict:
    """driver.json, or {} while it is not there (it is replaced atomically, never read half-written)."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}


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
    env = driver_env(tmp_path / "cache")

    # 1. Ctrl-C (SIGINT to the driver's whole process group, as a terminal sends it) during the first search
    log1 = tmp_path / "run1.log"
    proc = start_study(spec, storage, env, stdout=subprocess.DEVNULL, stderr=open(log1, "w"))
    wait_for(proc, lambda: _trial_running(storage), "a search trial ran 2 epochs", log=log1)
    # a second driver on the same storage is refused while the first one runs (issue 13, class 9)
    second = mfray("study", "run", str(spec), "--storage", str(storage), "--no-report", env=env, timeout=300)
    print("\n--- second driver:\n" + second.stderr.strip().splitlines()[-1])
    assert second.returncode == 2, second.stderr[-3000:]
    assert f"is being run by another driver (pid {proc.pid} on " in second.stderr and "Traceback" not in second.stderr
    os.killpg(proc.pid, signal.SIGINT)
    rc = proc.wait(timeout=600)
    err = log1.read_text()
    # the featurise step's counts add up: rows = molecules + repeats + quarantined
    m = re.search(r"([\d,]+) rows: ([\d,]+) molecules \(([\d,]+) rows repeat a stored molecule\), ([\d,]+) rows "
                  r"quarantined", err)
    assert m, err[-3000:]
    rows, mols, repeats, quarantined = (int(g.replace(",", "")) for g in m.groups())
    assert rows == 655 and rows == mols + repeats + quarantined, m.group(0)
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
    proc = start_study(spec, storage, env, stdout=subprocess.DEVNULL, stderr=open(log2, "w"))
    wait_for(proc, lambda: "runs:" in log2.read_text(), "the runs started", log=log2)
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(timeout=600)
    err = log2.read_text()
    print("--- SIGTERM:\n" + "\n".join(err.splitlines()[-3:]))
    assert rc == 143, err[-3000:]
    assert "stopped by SIGTERM" in err
    assert "no trial finished" not in err and not re.search(r"search .* failed", err)  # the search resumed

    # 3. another driver takes the lease (as `--force-unlock` on another machine does: a new token in
    #    driver.json) while this one runs: it stops cleanly at its next heartbeat or phase, and leaves the
    #    new holder's record alone
    log3 = tmp_path / "run3.log"
    record = storage / "studies" / "signals" / "driver.json"
    proc = start_study(spec, storage, env, stdout=subprocess.DEVNULL, stderr=open(log3, "w"))
    wait_for(proc, lambda: _record(record).get("pid") == proc.pid, "the driver wrote its record", log=log3)
    other = {**_record(record), "pid": os.getpid(), "token": "another-driver",  # a live process on this machine
             "updated_at": datetime.now(UTC).isoformat()}
    tmp = record.with_suffix(".tmp")
    tmp.write_text(json.dumps(other))
    os.replace(tmp, record)
    rc = proc.wait(timeout=600)
    err = log3.read_text()
    print("--- lease taken over:\n" + "\n".join(err.splitlines()[-3:]))
    assert rc == 143, err[-3000:]
    assert "another driver has taken this study's lease" in err and "Traceback" not in err
    assert _record(record)["token"] == "another-driver"

    # 4. the same command again, taking the lease back with --force-unlock (its holder's heartbeat is fresh
    #    and its process alive): the study finishes, nothing failed, every run once
    final = mfray("study", "run", str(spec), "--storage", str(storage), "--no-report", "--force-unlock", env=env)
    assert final.returncode == 0, final.stderr[-3000:]
    assert f"--force-unlock: taking the study over from pid {os.getpid()} on " in final.stderr
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
