"""``mfray study status``: what is done, running, failed, pending (read from storage; no Ray, no training)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mfray.results.store import ResultsStore
from mfray.run.study.lease import age_s, holds_lease
from mfray.run.study.plan import StudyPlan
from mfray.run.study.steps import study_steps


@dataclass
class StepStatus:
    step: str
    name: str
    state: str  # done | running | interrupted | failed | pending
    detail: str = ""
    note: bool = False  # done, but with something to tell (trials retried): listed without -v too


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
        if not driver_live(d):
            return (f"interrupted (driver pid {d.get('pid')} on {d.get('host')} silent for {_age(d):.0f} s; "
                    "re-run to resume)")
        return f"running (pid {d.get('pid')} on {d.get('host')}, phase {d.get('phase')})"

    def render(self, verbose: bool = False) -> str:
        lines = [f"study {self.study}: {self.driver_state()}"]
        if self.missing:
            lines.append(f"  {len(self.missing)} task(s) skipped, no data here:")
            for ds, why in self.missing:
                lines.append(f"    {ds}: {why}")
        for step, c in self.counts().items():
            lines.append(f"  {step:<10} " + ", ".join(f"{n} {state}" for state, n in sorted(c.items())))
        retries = (self.driver or {}).get("retries") or []
        if retries:
            lines.append(f"  {len(retries)} run(s) failed once and succeeded when run again (last run of the driver):")
            for r in retries:
                lines.append(f"    {r.get('step')} {r.get('run')}: {r.get('error')}")
        shown = self.steps if verbose else [s for s in self.steps if s.state not in ("done", "pending") or s.note]
        for s in shown:
            lines.append(f"    {s.step:<10} {s.state:<11} {s.name}" + (f"  {s.detail}" if s.detail else ""))
        return "\n".join(lines) + "\n"


def read_driver(plan: StudyPlan) -> dict[str, Any] | None:
    """``studies/<name>/driver.json``: who ran the study last, its state and last sign of life."""
    loc = plan.study_dir.child("driver.json")
    return loc.read_json() if loc.exists() else None


def driver_live(driver: dict[str, Any] | None) -> bool:
    """A study driver holds its lease (:func:`mfray.run.study.lease.holds_lease`): it says it is running,
    its heartbeat is fresh, and (on this machine) its process exists."""
    return bool(driver) and holds_lease(driver)


def _age(driver: dict[str, Any]) -> float:
    age = age_s(driver)
    return float("inf") if age is None else age


def study_status(plan: StudyPlan) -> StudyStatus:
    """The state of every step of :func:`mfray.run.study.steps.study_steps`: done from its output; a step
    not done is running or interrupted when Ray left a trace of it (by the driver's liveness), failed when
    its search recorded no finished trial, else pending."""
    from mfray.run.study.runner import task_names

    driver = read_driver(plan)
    live = driver is not None and driver.get("state") == "running"
    st = StudyStatus(study=plan.study.name, driver=driver, missing=list(plan.missing))
    store = ResultsStore(plan.results.uri)
    ray_dirs = [p.name for p in _ray_children(plan)]
    steps = study_steps(plan, set(store.run_keys(plan.study.name)), task_names(plan))
    for step in steps:
        state, detail, note = ("done" if step.done else "pending"), "", False
        if step.kind == "pretrain" and not step.done and f"lf-{step.key}" in ray_dirs:
            state, detail = ("running" if live else "interrupted"), "resumes from its last checkpoint"
        elif step.kind == "search":
            s = step.target
            if step.done:
                best = s.best.read_json()
                failed = f", {best['n_failed']} trial(s) failed" if best.get("n_failed") else ""
                retried = [t for t in (s.trials.read_json()["trials"] if s.trials.exists() else [])
                           if (t.get("attempts") or 1) > 1]
                again = (f", {len(retried)} trial(s) retried after an error (a lost node or a crashed worker; "
                         "`mfray study trials` lists them)") if retried else ""
                detail = f"{best['n_trials']} trials, best valid loss {best['valid_loss']:.4f}{failed}{again}"
                note = bool(retried or best.get("n_failed"))
            elif s.trials.exists():
                errs = [t for t in s.trials.read_json()["trials"] if t["status"] == "error"]
                state = "failed"
                detail = f"no trial finished; {len(errs)} error(s), e.g. {errs[0]['error'] if errs else '?'}"
            elif any(n.startswith(f"search-{s.key}") for n in ray_dirs):
                state = "running" if live else "interrupted"
        st.steps.append(StepStatus(step.kind, step.name, state, detail, note))
    return st


def _ray_children(plan: StudyPlan):
    from pathlib import Path

    if not plan.ray_storage.is_local or not plan.ray_storage.path.is_dir():
        return []
    return list(Path(plan.ray_storage.path).iterdir())
