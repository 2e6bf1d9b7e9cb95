"""``mfray study trials``: every search trial of a study as one table, read from what was recorded.

A finished search left ``search/<key>/trials.json`` (one entry per Ray Tune trial: its parameters,
status, attempts, epochs reported, best validation loss and timestamps; ``best.json`` names the
winner). A search still running, or interrupted, has no such file yet: its trials are read from Ray
Tune's own records in the experiment folder (``ray/search-<key>/<trial>/``: ``params.json``, the
reports in ``result.json``, ``error.txt``). Nothing is recomputed, no Ray runs, nothing is trained.

The table has one row per trial: ``task``, ``setting``, ``strategy``, ``search`` (the search key),
``trial_id``, ``state`` (finished, error, running, interrupted, pending), ``attempts``, ``epochs``,
``valid_loss`` (the best validation loss the trial reported: what ASHA and Optuna compared),
``best`` (the search's chosen trial), ``seconds``, ``error``, ``source`` (``trials.json`` or
``ray tune``) and one ``param_<name>`` column per searched parameter.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from mfray.run.study.plan import SearchPlan, StudyPlan

#: the fixed columns of :func:`trials_table`, in order; ``param_<name>`` columns follow
COLUMNS = ("task", "setting", "strategy", "search", "trial_id", "state", "attempts", "epochs", "valid_loss",
           "best", "seconds", "error", "source")
SCHEMA = {"task": pl.String, "setting": pl.String, "strategy": pl.String, "search": pl.String,
          "trial_id": pl.String, "state": pl.String, "attempts": pl.Int64, "epochs": pl.Int64,
          "valid_loss": pl.Float64, "best": pl.Boolean, "seconds": pl.Float64, "error": pl.String,
          "source": pl.String}


@dataclass
class SearchTrials:
    """The trials of one search and where they were read from (``state``: done, failed, running,
    interrupted or pending; ``source``: trials.json, ray tune, or None when nothing ran yet)."""

    search: SearchPlan
    state: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    source: str | None = None
    best_trial: str | None = None


def search_trials(plan: StudyPlan, search: SearchPlan, driver_live: bool = False) -> SearchTrials:
    """The recorded trials of ``search`` (see the module docstring); ``driver_live``: a study driver is
    running now, so a search with a Tune experiment but no record is running rather than interrupted."""
    best = search.best.read_json() if search.best.exists() else None
    experiment = _latest_experiment(plan, search)
    if best is None and experiment is not None and _is_newer(experiment, search):
        rows = _tune_rows(experiment, plan.study.failure.trial_retries, driver_live)
        return SearchTrials(search, "running" if driver_live else "interrupted", rows, "ray tune")
    if search.trials.exists():
        rec = search.trials.read_json()
        chosen = best["trial_id"] if best else None
        rows = [_record_row(t, chosen) for t in rec["trials"]]
        return SearchTrials(search, "done" if best else "failed", rows, "trials.json", chosen)
    return SearchTrials(search, "pending")


def trials_table(plan: StudyPlan, driver_live: bool = False) -> pl.DataFrame:
    """Every trial of every search of ``plan`` (pending searches have none), as described above."""
    rows = [dict(r, **_labels(s.search), source=s.source)
            for s in (search_trials(plan, sp, driver_live) for sp in plan.searches) for r in s.rows]
    return to_frame(rows)


def to_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """Rows of trials -> the table: fixed columns typed by :data:`SCHEMA`, parameters as ``param_<name>``
    columns (a parameter a search does not have is null)."""
    names: list[str] = []
    for r in rows:
        names += [k for k in r.get("params", {}) if k not in names]
    data: dict[str, list[Any]] = {c: [r.get(c) for r in rows] for c in COLUMNS}
    frame = pl.DataFrame(data, schema=SCHEMA)
    params = []
    for k in names:
        values = [r.get("params", {}).get(k) for r in rows]
        params.append(pl.Series(f"param_{k}", values, dtype=_dtype(values), strict=False))
    return frame.with_columns(params) if params else frame


def _dtype(values: list[Any]) -> pl.DataType:
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return pl.Boolean
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pl.Int64
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return pl.Float64
    return pl.String


def _labels(search: SearchPlan) -> dict[str, Any]:
    return {"task": search.task.dataset, "setting": search.setting, "strategy": search.strategy,
            "search": search.key}


def _record_row(t: dict[str, Any], chosen: str | None) -> dict[str, Any]:
    """One entry of ``trials.json`` (written by the study runner from Ray Tune's results)."""
    t0, t1 = t.get("t_start"), t.get("t_end")
    return {"trial_id": t["trial_id"], "state": t["status"], "attempts": t.get("attempts"), "epochs": t.get("epochs"),
            "valid_loss": t.get("valid_loss"), "best": t["trial_id"] == chosen,
            "seconds": (t1 - t0) if t0 is not None and t1 is not None else None, "error": t.get("error"),
            "params": t.get("params") or {}}


def _experiments(plan: StudyPlan, search: SearchPlan) -> list[Path]:
    root = plan.ray_storage
    if not root.is_local or not root.path.is_dir():
        return []
    name = f"search-{search.key}"
    return [p for p in root.path.iterdir() if p.is_dir() and (p.name == name or p.name.startswith(f"{name}-r"))]


def _latest_experiment(plan: StudyPlan, search: SearchPlan) -> Path | None:
    found = _experiments(plan, search)
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def _is_newer(experiment: Path, search: SearchPlan) -> bool:
    """The Tune experiment is not the one ``trials.json`` already records (a retried failed search)."""
    if not search.trials.exists():
        return True
    recorded = str(search.trials.read_json().get("experiment", "")).rstrip("/").rsplit("/", 1)[-1]
    return experiment.name != recorded


def _tune_rows(experiment: Path, retries: int, driver_live: bool) -> list[dict[str, Any]]:
    """Ray Tune's per-trial records of a search that has not finished: ``params.json`` (the configuration
    Optuna suggested), the last report in ``result.json`` (``valid_loss`` = best so far, ``epoch``,
    ``attempt``, ``t_start``, ``t``, ``done``) and ``error.txt`` (one "Failure #" per failed attempt)."""
    rows = []
    for d in sorted((p for p in experiment.iterdir() if p.is_dir() and (p / "params.json").exists()), key=_trial_index):
        params = json.loads((d / "params.json").read_text())
        last = _last_report(d / "result.json")
        failures, message = _failures(d / "error.txt")
        if last.get("done"):
            state = "finished"
        elif failures > retries:
            state = "error"
        elif not last and not failures:
            state = "pending" if driver_live else "interrupted"
        else:
            state = "running" if driver_live else "interrupted"
        t0, t1 = last.get("t_start"), last.get("t")
        # attempts: the reporting attempt's number; after failures, the failed ones and (unless it gave
        # up) the one that followed them
        attempts = last.get("attempt") if state == "finished" else (
            failures if state == "error" else (failures + 1 if failures else last.get("attempt", 1)))
        rows.append({"trial_id": last.get("trial_id") or _trial_id(d.name), "state": state, "attempts": attempts,
                     "epochs": last.get("training_iteration"), "valid_loss": last.get("valid_loss"), "best": False,
                     "seconds": (t1 - t0) if t0 is not None and t1 is not None else None,
                     "error": message if state == "error" else None, "params": params})
    return rows


def _last_report(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    for ln in reversed(lines):  # a line being written when we read is incomplete: take the one before
        try:
            return json.loads(ln)
        except json.JSONDecodeError:
            continue
    return {}


def _failures(path: Path) -> tuple[int, str | None]:
    if not path.exists():
        return 0, None
    text = path.read_text(errors="replace")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return sum(ln.startswith("Failure #") for ln in lines), (lines[-1][:500] if lines else None)


def _trial_id(dirname: str) -> str:
    """``hf_trial_<id>_<n>_<params>_<date>`` (Ray Tune's trial folder) -> ``<id>``."""
    parts = dirname.split("_")
    return parts[2] if len(parts) > 2 and dirname.startswith("hf_trial_") else dirname


def _trial_index(path: Path) -> tuple[int, str]:
    """Order of Tune's trial folders: by the trial's number (``hf_trial_<id>_<n>_...``)."""
    parts = path.name.split("_")
    return (int(parts[3]) if len(parts) > 3 and parts[3].isdigit() else 1 << 30, path.name)


def render(plan: StudyPlan, driver_live: bool = False) -> str:
    """The trial table per search, as text (what ``mfray study trials`` prints)."""
    out = []
    for sp in plan.searches:
        st = search_trials(plan, sp, driver_live)
        head = f"{sp.label} [{sp.key}]: {st.state}"
        if st.rows:
            n = {}
            for r in st.rows:
                n[r["state"]] = n.get(r["state"], 0) + 1
            head += " (" + ", ".join(f"{v} {k}" for k, v in n.items()) + ")"
        out.append(head)
        if not st.rows:
            continue
        names: list[str] = []
        for r in st.rows:
            names += [k for k in r["params"] if k not in names and not (k == "strategy" and r["params"][k] == sp.strategy)]
        cols = ["trial", "state", "attempts", "epochs", "valid loss", *names]
        table = []
        for r in sorted(st.rows, key=lambda r: (r["valid_loss"] is None, r["valid_loss"] or 0.0)):
            table.append([("* " if r["best"] else "  ") + str(r["trial_id"]), r["state"], _fmt(r["attempts"]),
                          _fmt(r["epochs"]), _fmt(r["valid_loss"]), *(_fmt(r["params"].get(k)) for k in names)])
        widths = [max(len(c), *(len(row[i]) for row in table)) for i, c in enumerate(cols)]
        out.append("  " + "  ".join(c.ljust(w) for c, w in zip(cols, widths)).rstrip())
        for row in table:
            out.append("  " + "  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())
        errors = [r for r in st.rows if r["state"] == "error" and r["error"]]
        for r in errors[:3]:
            out.append(f"  {r['trial_id']}: {r['error']}")
    return "\n".join(out) + "\n"


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e-3 or abs(v) >= 1e4 else f"{v:.4f}"
    return str(v)
