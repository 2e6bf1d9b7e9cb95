"""One driver per study and storage: a lease in the study's storage folder.

Two drivers on one storage would both pretrain, both refit, and one would "resume" the other's live
search. So a driver holds a lease while it runs: ``studies/<name>/driver.json`` (the heartbeat file the
driver rewrites every few seconds, with its host, pid and a random token) says who holds it, and

- on a local (or shared) path, an exclusive ``flock`` on ``studies/<name>/driver.lock`` makes taking it
  atomic on one machine; the kernel drops it when the process dies, ``kill -9`` included;
- on object storage (no locks there), the driver writes its token and reads it back; a driver that
  finds another token in the heartbeat file later has lost the lease and stops cleanly.

A lease is live while its driver's heartbeat is younger than :data:`STALE_AFTER_S` seconds and, on
this machine, its process exists. A second driver exits with status 2 naming the holder; a lease
whose driver is gone without a trace (another machine, killed, heartbeat stale) is taken over
automatically once stale, or at once with ``mfray study run --force-unlock``.
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import UTC, datetime
from typing import Any

from mfray.utils.errors import MfrayError
from mfray.utils.location import Location
from mfray.utils.process import pid_alive

#: a heartbeat older than this (seconds) is a driver that is gone; the driver writes one every 10 s
STALE_AFTER_S = 90.0


class StudyLocked(MfrayError):
    """Another driver holds the study's lease (exit status 2)."""


def age_s(record: dict[str, Any]) -> float | None:
    """Seconds since the driver record's last heartbeat (None: none readable)."""
    try:
        stamp = datetime.fromisoformat(str(record.get("updated_at")))
    except ValueError:
        return None
    return (datetime.now(UTC) - stamp).total_seconds()


def holds_lease(record: dict[str, Any]) -> bool:
    """Whether the driver of ``record`` (driver.json) is live: it says it is running, its heartbeat is
    younger than :data:`STALE_AFTER_S`, and when it ran on this machine its process still exists."""
    if not isinstance(record, dict) or record.get("state") != "running":
        return False
    age = age_s(record)
    if age is None or age > STALE_AFTER_S:
        return False
    pid = record.get("pid")
    return not (record.get("host") == socket.gethostname() and isinstance(pid, int) and not pid_alive(pid))


def live_holder(loc: Location, token: str | None = None) -> dict[str, Any] | None:
    """The driver record in ``loc`` (driver.json) when another live driver holds the lease, else None."""
    try:
        if not loc.exists():
            return None
        record = loc.read_json()
    except (OSError, ValueError):  # unreadable or half-written: no live driver can be told from it
        return None
    if not isinstance(record, dict) or record.get("token") == token or record.get("pid") == os.getpid() \
            and record.get("host") == socket.gethostname():
        return None
    return record if holds_lease(record) else None


def describe(record: dict[str, Any]) -> str:
    age = age_s(record)
    seen = f"last heartbeat {age:.0f} s ago" if age is not None else "no readable heartbeat"
    return (f"pid {record.get('pid')} on {record.get('host')}, running since {record.get('started_at')}, "
            f"phase {record.get('phase')}, {seen}")


class DriverLease:
    """The lease of ``study_dir`` (a :class:`Location`) for this process; see the module docstring."""

    def __init__(self, study_dir: Location, study: str, force: bool = False) -> None:
        self.dir = study_dir
        self.record = study_dir.child("driver.json")
        self.study = study
        self.force = force
        self.token = uuid.uuid4().hex
        self._lock_file = None

    def _refuse(self, holder: dict[str, Any], extra: str = "") -> None:
        raise StudyLocked(f"study {self.study} in {self.dir.uri.rsplit('/studies/', 1)[0]} is being run by another "
                          f"driver ({describe(holder)}); wait for it, or stop it and run again{extra}")

    def acquire(self, log) -> None:
        """Take the lease or raise :class:`StudyLocked`; the caller then writes driver.json with
        :attr:`token` (the heartbeat) and checks :meth:`still_ours` on each beat."""
        if self.dir.is_local:
            import fcntl

            self.dir.path.mkdir(parents=True, exist_ok=True)
            f = open(self.dir.path / "driver.lock", "a+")  # noqa: SIM115 - held open for the driver's life
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                f.close()
                holder = live_holder(self.record) or {"pid": "?", "host": socket.gethostname()}
                self._refuse(holder, " (a live process on this machine holds its lock: --force-unlock does not "
                                     "apply)")
            self._lock_file = f
        holder = live_holder(self.record, self.token)
        if holder is not None:
            if not self.force:
                self._refuse(holder, f", or if that driver is gone, wait until its heartbeat is {STALE_AFTER_S:.0f} "
                                     "s old or pass --force-unlock")
            log(f"--force-unlock: taking the study over from {describe(holder)}")

    def confirm(self) -> None:
        """After the first heartbeat is written: on object storage, read it back; a different token means
        another driver wrote at the same moment and won."""
        if self.dir.is_local:
            return
        if not self.still_ours():
            holder = live_holder(self.record, self.token) or {}
            self.release()
            self._refuse(holder)

    def still_ours(self) -> bool:
        try:
            return self.record.read_json().get("token") == self.token
        except (OSError, ValueError, AttributeError):
            return True  # a failed read is no evidence of another driver

    def release(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()  # drops the flock
            self._lock_file = None
