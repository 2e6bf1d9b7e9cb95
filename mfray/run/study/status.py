"""``mfray study status``: what is done, running, failed, pending (read from storage; no Ray, no training)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mfray.results.store import ResultsStore
from mfray.run.study.plan import StudyPlan, baseline_identity, refit_identity, run_key

#: a driver whose heartbeat is older than this is taken to be gone
STALE_SECONDS = 60


@dataclass
class StepStatus:
    step: str
    name: str
    state: str  # done | running | interrupted | failed | pending
    detail: str = ""


@dataclass
class StudyStatus:
    study: str
    driver: dict[str, Any] | None
    steps: list[StepStatus] = field(default_factory=list)
    missing: list[tuple[str, str]] = field(default_factory=list)

    def counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for s in self.steps:
            out.setdefault(s.step, {}).setdefault(s.state, 0)
            out[s.step][s.state] += 1
        return out

    def driver_state(self) -> str:
        d = self.driver
        if not d:
            return "never run"
        if d.get("state") != "running":
            return str(d.get("state"))
        try:
            age = (datetime.now(UTC) - datetime.fromisoformat(d["updated_at"])).total_seconds()
        except (KeyError, ValueError):
            age = float("inf")
        if _gone(d) or age > STALE_SECONDS:
            return f"interrupted (driver pid {d.get('pid')} on {d.get('host')} silent for {age:.0f} s; re-run to resume)"
        return f"running (pid {d.get('pid')} on {d.get('host')}, phase {d.get('phase')})"

    def render(self, verbose: bool = False) -> str:
        lines = [f"study {self.study}: {self.driver_state()}"]
        if self.missing:
            lines.append(f"  {len(self.missing)} task(s) skipped, no data here:")
            for ds, why in self.missing:
                lines.append(f"    {ds}: {why}")
        for step, c in self.counts().items():
            lines.append(f"  {step:<10} " + ", ".join(f"{n} {state}" for state, n in sorted(c.items())))
        shown = self.steps if verbose else [s for s in self.steps if s.state not in ("done", "pending")]
        for s in shown:
            lines.append(f"    {s.step:<10} {s.state:<11} {s.name}" + (f"  {s.detail}" if s.detail else ""))
        return "\n".join(lines) + "\n"


def _gone(driver: dict[str, Any]) -> bool:
    """The driver ran on this machine and its process no longer exists."""
    import os
    import socket

    if driver.get("host") != socket.gethostname() or not isinstance(driver.get("pid"), int):
        return False
    try:
        os.kill(driver["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _ray_dir_exists(plan: StudyPlan, name: str) -> bool:
    return plan.ray_storage.child(name).exists()


def study_status(plan: StudyPlan) -> StudyStatus:
    import os

    from mfray.data.store import MANIFEST

    driver_loc = plan.study_dir.child("driver.json")
    driver = driver_loc.read_json() if driver_loc.exists() else None
    live = driver is not None and driver.get("state") == "running"
    st = StudyStatus(study=plan.study.name, driver=driver, missing=list(plan.missing))
    for t in plan.tasks:
        done = os.path.exists(os.path.join(t.store_path, MANIFEST))
        st.steps.append(StepStatus("featurise", t.dataset, "done" if done else "pending"))
    for lf in plan.lf:
        if lf.checkpoint.exists():
            state, detail = "done", ""
        elif _ray_dir_exists(plan, f"lf-{lf.key}"):
            state, detail = ("running" if live else "interrupted"), "resumes from its last checkpoint"
        else:
            state, detail = "pending", ""
        st.steps.append(StepStatus("pretrain", f"{lf.dataset}/{lf.readout} [{lf.key}]", state, detail))
    store = ResultsStore(plan.results.uri)
    names: dict[str, str] = {}
    from mfray.run.study.runner import task_names

    names = task_names(plan)  # tasks not featurised yet are absent: their runs are pending
    for s in plan.searches:
        label = f"{s.label} [{s.key}]"
        if s.best.exists():
            best = s.best.read_json()
            failed = f", {best['n_failed']} trial(s) failed" if best.get("n_failed") else ""
            st.steps.append(StepStatus("search", label, "done",
                                       f"{best['n_trials']} trials, best valid loss {best['valid_loss']:.4f}{failed}"))
            tname = names.get(s.task.id)
            for seed in s.task.seeds:
                if tname is None:
                    st.steps.append(StepStatus("runs", f"{s.label} seed {seed}", "pending"))
                    continue
                key = run_key(refit_identity(plan, s, best["config"], seed, tname))
                st.steps.append(StepStatus("runs", f"{s.label} seed {seed}",
                                           "done" if store.has_run(key, plan.study.name) else "pending"))
        elif s.trials.exists():
            errs = [t for t in s.trials.read_json()["trials"] if t["status"] == "error"]
            st.steps.append(StepStatus("search", label, "failed",
                                       f"no trial finished; {len(errs)} error(s), e.g. {errs[0]['error'] if errs else '?'}"))
        elif any(p.name.startswith(f"search-{s.key}") for p in _ray_children(plan)):
            st.steps.append(StepStatus("search", label, "running" if live else "interrupted"))
        else:
            st.steps.append(StepStatus("search", label, "pending"))
    for t in plan.tasks:
        tname = names.get(t.id)
        for b in plan.study.baselines:
            for seed in t.seeds:
                state = "pending"
                if tname is not None and store.has_run(run_key(baseline_identity(plan, t, b, seed, tname)), plan.study.name):
                    state = "done"
                st.steps.append(StepStatus("baselines", f"{t.dataset} {b} seed {seed}", state))
    return st


def _ray_children(plan: StudyPlan):
    from pathlib import Path

    if not plan.ray_storage.is_local or not plan.ray_storage.path.is_dir():
        return []
    return list(Path(plan.ray_storage.path).iterdir())
