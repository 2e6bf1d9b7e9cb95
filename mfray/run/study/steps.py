"""The steps of a study as one list: ``mfray study run`` does the ones not done, ``mfray study status``
reports them all (no Ray here, no training).

Each :class:`Step` has a kind (featurise, pretrain, lf outputs, search, runs, baselines), a name to
print, the content key that identifies its output, whether that output exists, and the plan object it
acts on. A run's key is known once its search has chosen a configuration and its task is featurised;
until then it is listed as pending with an empty key and no target.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from mfray.run.study.plan import StudyPlan, baseline_identity, refit_identity, run_key

KINDS = ("featurise", "pretrain", "lf outputs", "search", "runs", "baselines")


@dataclass(frozen=True)
class Step:
    """One step of a study.

    Attributes:
        kind: one of :data:`KINDS`.
        name: what status and logs call it (``"aid1445 transductive label seed 3"``).
        key: the content key of its output (store key, LF model key, search key or run key).
        done: whether its output exists.
        target: what it acts on: a ``TaskPlan``, ``LFPlan`` or ``SearchPlan``; for runs
            ``(SearchPlan, config, seed, trial_id)``, for baselines ``(TaskPlan, baseline, seed)``.
        identity: for runs and baselines, the run identity (``make_run_key`` fields) of its record.
    """

    kind: str
    name: str
    key: str
    done: bool
    target: Any
    identity: dict[str, Any] | None = None


def study_steps(plan: StudyPlan, run_keys: set[str] | None = None, task_names: dict[str, str] | None = None,
                kinds: tuple[str, ...] = KINDS) -> list[Step]:
    """The steps of ``plan`` of ``kinds``, in the order a run does them. ``run_keys``: the run keys already
    in the results store (``ResultsStore.run_keys(study)``); ``task_names``: result-row task names of
    the featurised tasks (``runner.task_names``); both are only needed for runs and baselines."""
    bad = sorted(set(kinds) - set(KINDS))
    if bad:
        raise ValueError(f"unknown step kind(s) {bad}; kinds: {KINDS}")
    return list(_steps(plan, run_keys or set(), task_names or {}, set(kinds)))


def _steps(plan: StudyPlan, run_keys: set[str], task_names: dict[str, str], kinds: set[str]) -> Iterator[Step]:
    from mfray.data.store import MANIFEST

    if "featurise" in kinds:
        for t in plan.tasks:
            yield Step("featurise", t.dataset, t.store_key, os.path.exists(os.path.join(t.store_path, MANIFEST)), t)
    if "pretrain" in kinds:
        for lf in plan.lf:
            yield Step("pretrain", f"{lf.dataset}/{lf.readout} [{lf.key}]", lf.key, lf.checkpoint.exists(), lf)
    if "lf outputs" in kinds:
        outputs = {s.outputs_lf.key: s.outputs_lf for s in plan.searches if s.outputs_lf}
        for lf in outputs.values():
            yield Step("lf outputs", f"{lf.dataset}/{lf.readout} [{lf.key}]", lf.key, lf.outputs.exists(), lf)
    if "search" in kinds:
        for s in plan.searches:
            yield Step("search", f"{s.label} [{s.key}]", s.key, s.best.exists(), s)
    if "runs" in kinds:
        yield from _runs(plan, run_keys, task_names)
    if "baselines" in kinds:
        yield from _baselines(plan, run_keys, task_names)


def _runs(plan: StudyPlan, run_keys: set[str], task_names: dict[str, str]) -> Iterator[Step]:
    for s in plan.searches:
        tname = task_names.get(s.task.id)
        if tname is None or not s.best.exists():  # known once the search has chosen (key "" until then)
            for seed in s.task.seeds:
                yield Step("runs", f"{s.label} seed {seed}", "", False, None)
            continue
        best = s.best.read_json()
        for seed in s.task.seeds:
            ident = refit_identity(plan, s, best["config"], seed, tname)
            key = run_key(ident)
            yield Step("runs", f"{s.label} seed {seed}", key, key in run_keys,
                       (s, best["config"], seed, best["trial_id"]), ident)


def _baselines(plan: StudyPlan, run_keys: set[str], task_names: dict[str, str]) -> Iterator[Step]:
    for t in plan.tasks:
        tname = task_names.get(t.id)
        for b in plan.study.baselines:
            for seed in t.seeds:
                if tname is None:  # not featurised yet: no run name, so no key yet
                    yield Step("baselines", f"{t.dataset} {b} seed {seed}", "", False, None)
                    continue
                ident = baseline_identity(plan, t, b, seed, tname)
                key = run_key(ident)
                yield Step("baselines", f"{t.dataset} {b} seed {seed}", key, key in run_keys, (t, b, seed), ident)
