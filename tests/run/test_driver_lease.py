"""Issue 13, class 9: one driver per study and storage (the lease; no Ray, no training).

The two-drivers case end to end (a second `mfray study run` refused while the first runs) is in
tests/integration/test_study_signals.py."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from mfray.run.study.lease import STALE_AFTER_S, DriverLease, StudyLocked, holds_lease
from mfray.utils.location import Location


def _record(study_dir, **over):
    rec = {"state": "running", "host": socket.gethostname(), "pid": os.getpid(), "token": "theirs",
           "started_at": "2026-12-07T10:00:00+00:00", "phase": "search",
           "updated_at": datetime.now(UTC).isoformat(), **over}
    study_dir.mkdir(parents=True, exist_ok=True)
    (study_dir / "driver.json").write_text(json.dumps(rec))
    return rec


def _sleeper():
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])


def test_a_live_driver_on_this_machine_holds_the_lease(tmp_path):
    proc = _sleeper()
    try:
        _record(tmp_path / "s", pid=proc.pid)
        with pytest.raises(StudyLocked, match=rf"is being run by another driver \(pid {proc.pid} on "):
            DriverLease(Location(tmp_path / "s"), "s").acquire(print)
    finally:
        proc.kill()
        proc.wait()
    # its process is gone: the lease is free at once, no waiting for the heartbeat to go stale
    _acquire_release(tmp_path / "s")


def test_a_driver_on_another_machine_holds_it_until_its_heartbeat_is_stale(tmp_path):
    _record(tmp_path / "s", host="node-7", pid=12345)
    with pytest.raises(StudyLocked, match="pass --force-unlock"):
        DriverLease(Location(tmp_path / "s"), "s").acquire(print)
    said: list[str] = []
    forced = DriverLease(Location(tmp_path / "s"), "s", force=True)
    forced.acquire(said.append)
    forced.release()
    assert "taking the study over from pid 12345 on node-7" in said[0]
    old = (datetime.now(UTC) - timedelta(seconds=STALE_AFTER_S + 5)).isoformat()
    rec = _record(tmp_path / "s", host="node-7", pid=12345, updated_at=old)
    assert not holds_lease(rec)
    DriverLease(Location(tmp_path / "s"), "s").acquire(print)


def _acquire_release(path):
    lease = DriverLease(Location(path), "s")
    lease.acquire(print)
    lease.release()


def test_finished_or_unreadable_records_hold_nothing(tmp_path):
    _record(tmp_path / "s", host="node-7", state="finished")
    _acquire_release(tmp_path / "s")
    (tmp_path / "s" / "driver.json").write_text("{half")
    _acquire_release(tmp_path / "s")


def test_the_lock_file_makes_taking_it_atomic_on_one_machine(tmp_path):
    first = DriverLease(Location(tmp_path / "s"), "s")
    first.acquire(print)
    with pytest.raises(StudyLocked, match="a live process on this machine holds its lock"):
        DriverLease(Location(tmp_path / "s"), "s").acquire(print)
    first.release()
    _acquire_release(tmp_path / "s")


def test_on_object_storage_the_token_is_read_back(tmp_path):
    loc = Location(tmp_path / "s")
    loc.is_local = False  # the object-storage route: no flock, write then read back (pyarrow's local fs)
    mine = DriverLease(loc, "s")
    mine.acquire(print)
    _record(tmp_path / "s", host="node-7", pid=1, token=mine.token)
    assert mine.still_ours()
    mine.confirm()
    _record(tmp_path / "s", host="node-7", pid=1, token="another")  # another driver wrote at the same moment
    assert not mine.still_ours()
    with pytest.raises(StudyLocked, match="pid 1 on node-7"):
        mine.confirm()


def test_a_driver_that_lost_its_lease_stops_and_leaves_the_new_record_alone(tmp_path, monkeypatch):
    """The heartbeat's side: a phase change after another driver took the lease (a new token in
    driver.json) stops this driver as SIGTERM does and writes no record of its own over the new one.
    (End to end, with the exit status: tests/integration/test_study_signals.py.)"""
    from types import SimpleNamespace

    from mfray.run.study import runner

    loc = Location(tmp_path / "s")
    lease = DriverLease(loc, "s")
    lease.acquire(print)
    killed: list[tuple[int, int]] = []
    monkeypatch.setattr(runner.os, "kill", lambda pid, sig: killed.append((pid, sig)))
    said: list[str] = []
    hb = runner._Heartbeat(SimpleNamespace(study_dir=loc), lease, said.append, every=3600)
    with hb:
        hb.phase("search")
        assert json.loads((tmp_path / "s" / "driver.json").read_text())["phase"] == "search"
        assert killed == []
        theirs = _record(tmp_path / "s", token="theirs", phase="runs")  # another driver took it over
        hb.phase("runs")
        hb.phase("selection")
    assert killed == [(os.getpid(), runner.signal.SIGTERM)]  # once
    assert [m for m in said if "another driver has taken this study's lease" in m] == [said[0]]
    assert json.loads((tmp_path / "s" / "driver.json").read_text()) == theirs  # not overwritten, not on exit


def test_a_sigterm_while_ray_starts_is_the_same_clean_stop(monkeypatch):
    """ray.init sets its own SIGTERM handler (sys.exit(15)) until the study takes it back; a SIGTERM in that
    window (a process manager's, or the heartbeat's on losing the lease) stops the study as anywhere else
    (StudyInterrupted: exit 143, "resume with the same command"), not with a bare exit status 15."""
    import signal
    from types import SimpleNamespace

    from mfray.run import runtime
    from mfray.run.study import runner

    def ray_init_gets_sigterm(**kw):
        raise SystemExit(signal.SIGTERM)

    monkeypatch.setattr(runtime, "ensure_ray", ray_init_gets_sigterm)
    said: list[str] = []
    stop = runner._StopSignals(said.append)
    monkeypatch.setattr(runner, "_STOP", stop)
    start = runner._RayOnDemand.__new__(runner._RayOnDemand)
    start.plan, start.log, start.dashboard, start.started = SimpleNamespace(), print, False, False
    with pytest.raises(runner.StudyInterrupted) as e:
        start()
    assert e.value.signum == signal.SIGTERM and stop.received == signal.SIGTERM and not start.started
    assert "SIGTERM: stopping the study cleanly" in said[0]
    stop.received = None
    monkeypatch.setattr(runtime, "ensure_ray", lambda **kw: (_ for _ in ()).throw(SystemExit(3)))
    with pytest.raises(SystemExit):  # any other exit is not a stop request
        start()
    assert stop.received is None
