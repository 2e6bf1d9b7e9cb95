"""One finished run as a value (:class:`RunRecord`) and the long/tidy row schema it becomes.

A run is one model fit evaluated on its folds: (study, task, setting, strategy, readout, model,
split_seed, config). :meth:`RunRecord.to_arrow` turns it into one row per (fold, metric)::

    study  task             setting       strategy readout model split_seed fold metric value  ...
    s1     aid1445:hf/DR    transductive  label    st      gnn   0          test r2     0.64   ...
    s1     aid1445:hf/DR    transductive  label    st      gnn   0          test mae    0.21   ...

Column order and types are :data:`BASE_SCHEMA` followed by the run's ``params_*`` columns (sorted).
The resolved config is flattened to scalars: nested keys are joined by ``__`` (``{"model":
{"hidden_dim": 256}}`` -> ``params_model__hidden_dim``), because dots in column names need quoting
in SQL/DuckDB and clash with struct-field access in Arrow tooling. Lists and tuples are stored as
canonical JSON strings (they identify a config, they are not data to compute on); ``None`` is a
null of Arrow type ``null``, which unions with any type when runs are concatenated.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from mfray.utils.errors import MfrayError
from mfray.utils.hashing import hash_obj

SETTINGS = ("transductive", "inductive")
CENSORED_POLICIES = ("drop", "as_value", "censored")  # as mfray.data.specs (results import no data layer)
FOLDS = ("train", "valid", "test")
PARAM_PREFIX = "params_"
PARAM_SEP = "__"

# the fields that identify a run: two records equal on these are the same run (written once)
KEY_FIELDS = ("study", "task", "setting", "strategy", "readout", "model", "split_seed", "config_hash")

_TS = pa.timestamp("us", tz="UTC")
BASE_SCHEMA = pa.schema([
    ("study", pa.string()),
    ("task", pa.string()),
    ("dataset", pa.string()),
    ("setting", pa.string()),
    # censored-label policy the run trained under (drop / as_value / censored); null: no qualifiers
    ("censored", pa.string()),
    ("strategy", pa.string()),
    ("readout", pa.string()),
    ("model", pa.string()),
    ("split_seed", pa.int64()),
    ("fold", pa.string()),
    ("metric", pa.string()),
    ("value", pa.float64()),
    ("n_train_hf", pa.int64()),
    ("best_epoch", pa.int64()),
    ("config_hash", pa.string()),
    ("run_key", pa.string()),
    ("trial_id", pa.string()),
    ("mfray_version", pa.string()),
    ("git_sha", pa.string()),
    ("torch", pa.string()),
    ("ray", pa.string()),
    ("rdkit", pa.string()),
    ("started_at", _TS),
    ("finished_at", _TS),
])

# a study name becomes a folder (study=<name>): keep it portable across file systems and object stores
_STUDY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


class ResultsError(MfrayError):
    """A run record or a results store is malformed (bad name, fold, metric value, params)."""


@dataclass(frozen=True)
class Versions:
    """Software that produced a run. ``git_sha`` ends in ``+dirty`` when the checkout had edits."""

    mfray_version: str
    git_sha: str | None = None
    torch: str | None = None
    ray: str | None = None
    rdkit: str | None = None

    @classmethod
    def current(cls) -> Versions:
        """Versions of this process, read from package metadata (torch and ray are not imported)."""
        return _current_versions()


def _dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git_sha(where: Path) -> str | None:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}+dirty" if dirty else sha or None


@functools.cache
def _current_versions() -> Versions:
    from mfray import __version__

    return Versions(
        mfray_version=__version__,
        git_sha=_git_sha(Path(__file__).resolve().parent),
        torch=_dist_version("torch"),
        ray=_dist_version("ray"),
        rdkit=_dist_version("rdkit"),
    )


def make_run_key(*, study: str, task: str, setting: str, strategy: str, readout: str | None, model: str,
                 split_seed: int, config_hash: str) -> str:
    """The run key of a run with this identity (:data:`KEY_FIELDS`), known before the run is fitted:
    a study checks ``ResultsStore.has_run(make_run_key(...))`` to skip work that is already stored."""
    ident = {"study": study, "task": task, "setting": setting, "strategy": strategy, "readout": readout,
             "model": model, "split_seed": split_seed, "config_hash": config_hash}
    return hash_obj({k: ident[k] for k in KEY_FIELDS}, n=20)


def flatten_params(params: Mapping[str, Any], prefix: str = PARAM_PREFIX) -> dict[str, Any]:
    """``{"lr": 1e-3, "model": {"hidden_dim": 256}}`` -> ``{"params_lr": ..., "params_model__hidden_dim": 256}``.

    Leaves must be bool, int, float, str or None; lists/tuples of those become canonical JSON strings.
    """
    out: dict[str, Any] = {}

    def walk(obj: Mapping[str, Any], path: tuple[str, ...]) -> None:
        for k, v in obj.items():
            if not isinstance(k, str) or not k:
                raise ResultsError(f"params key {k!r} at {'.'.join(path) or '<top>'} must be a non-empty string")
            p = (*path, k)
            if isinstance(v, Mapping):
                walk(v, p)
                continue
            name = prefix + PARAM_SEP.join(p)
            if v is None or isinstance(v, bool | int | float | str):
                out[name] = v
            elif isinstance(v, list | tuple):
                try:
                    out[name] = json.dumps(list(v), sort_keys=True, separators=(",", ":"), allow_nan=True)
                except TypeError as e:
                    raise ResultsError(f"params {'.'.join(p)}: list items must be JSON scalars ({e})") from None
            else:
                raise ResultsError(f"params {'.'.join(p)} = {v!r} ({type(v).__name__}): expected a scalar "
                                   "(bool, int, float, str, None), a list of scalars or a nested mapping")
    walk(params, ())
    if len(out) != len(set(out)):  # pragma: no cover - dict keys are unique by construction
        raise ResultsError("params flatten to duplicate column names")
    return out


def _param_type(v: Any) -> pa.DataType:
    if v is None:
        return pa.null()
    if isinstance(v, bool):
        return pa.bool_()
    if isinstance(v, int):
        return pa.int64()
    if isinstance(v, float):
        return pa.float64()
    return pa.string()


def _utc(ts: datetime | None) -> datetime | None:
    if ts is None:
        return None
    # naive timestamps are taken as UTC (what datetime.utcnow() gives); aware ones are converted
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


@dataclass(frozen=True)
class RunRecord:
    """One finished run, ready for :meth:`mfray.results.ResultsStore.append_run`.

    Args:
        study: study name (a folder name: letters, digits, ``_ . -``).
        task: task name, ``Task.name`` (``"aid1445:hf/DR"``).
        dataset: dataset name (``"aid1445"``).
        setting: ``"transductive"`` or ``"inductive"``.
        censored: the censored-label policy the run trained under (``"drop"``, ``"as_value"``,
            ``"censored"``), None when the task's labels carry no qualifier. Not part of the run key by
            itself: the study puts it into the config hash.
        strategy: transfer strategy (``"base"``, ``"label"``, ...; baselines use their own name,
            e.g. the LF-label floor is strategy ``"lf_linear"``, model ``"lf_linear"``).
        model: model family (``"gnn"``, ``"rf"``, ``"svr"``, ``"lf_linear"``).
        split_seed: the split seed the run was fitted and evaluated on.
        metrics: ``fold -> metric -> value`` (folds from :data:`FOLDS`; values float, NaN allowed).
        params: the resolved config (nested mapping of scalars), flattened into ``params_*`` columns.
        n_train_hf: number of HF training molecules.
        readout: readout name for GNNs (``"sum"``, ``"st"``, ...), None otherwise.
        config_hash: hash of the resolved config; default ``hash_obj(params)``. Pass the study's own
            config hash when it has one, so the run key and the study's cache keys agree.
        trial_id: Ray Tune / Optuna trial id of the selected config (None for refits without a trial).
        best_epoch: epoch of the best-validation checkpoint (None for non-epoch models).
        started_at, finished_at: UTC timestamps (naive ones are taken as UTC); finished_at defaults
            to the moment the record is turned into rows.
        versions: software versions; default :meth:`Versions.current`.
    """

    study: str
    task: str
    dataset: str
    setting: str
    strategy: str
    model: str
    split_seed: int
    metrics: Mapping[str, Mapping[str, float]]
    params: Mapping[str, Any] = field(default_factory=dict)
    n_train_hf: int | None = None
    readout: str | None = None
    config_hash: str | None = None
    trial_id: str | None = None
    best_epoch: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    versions: Versions | None = None
    censored: str | None = None

    def __post_init__(self) -> None:
        if self.censored is not None and self.censored not in CENSORED_POLICIES:
            raise ResultsError(f"censored {self.censored!r} is not one of {', '.join(CENSORED_POLICIES)} (or None)")
        if not isinstance(self.study, str) or not _STUDY_RE.match(self.study):
            raise ResultsError(f"study name {self.study!r} must match {_STUDY_RE.pattern} (it becomes a folder name)")
        for name in ("task", "dataset", "strategy", "model"):
            v = getattr(self, name)
            if not isinstance(v, str) or not v:
                raise ResultsError(f"run record field {name!r} must be a non-empty string, got {v!r}")
        if self.setting not in SETTINGS:
            raise ResultsError(f"setting {self.setting!r} is not one of {', '.join(SETTINGS)}")
        if isinstance(self.split_seed, bool) or not isinstance(self.split_seed, int):
            raise ResultsError(f"split_seed must be an int, got {self.split_seed!r}")
        if not self.metrics:
            raise ResultsError("a run record needs at least one metric")
        for fold, ms in self.metrics.items():
            if fold not in FOLDS:
                raise ResultsError(f"metrics fold {fold!r} is not one of {', '.join(FOLDS)}")
            for m, v in ms.items():
                if not isinstance(m, str) or not m:
                    raise ResultsError(f"metric name {m!r} in fold {fold!r} must be a non-empty string")
                if isinstance(v, bool) or not isinstance(v, int | float) and not hasattr(v, "__float__"):
                    raise ResultsError(f"metric {fold}/{m} = {v!r} is not a number")
        flatten_params(self.params)  # validate early, where the caller can see which key is wrong

    @property
    def resolved_config_hash(self) -> str:
        return self.config_hash if self.config_hash is not None else hash_obj(dict(self.params))

    @property
    def run_key(self) -> str:
        """Content key of the run's identity (:data:`KEY_FIELDS`); the file name of its part."""
        ident = {k: getattr(self, k) for k in KEY_FIELDS if k != "config_hash"}
        return make_run_key(**ident, config_hash=self.resolved_config_hash)

    def to_arrow(self) -> pa.Table:
        """The run's rows: one per (fold, metric), folds in train/valid/test order, metrics sorted."""
        versions = self.versions or Versions.current()
        finished = _utc(self.finished_at) or datetime.now(UTC)
        folds_metrics = [(f, m, float(self.metrics[f][m]))
                         for f in FOLDS if f in self.metrics for m in sorted(self.metrics[f])]
        n = len(folds_metrics)
        const = {
            "study": self.study, "task": self.task, "dataset": self.dataset, "setting": self.setting,
            "censored": self.censored,
            "strategy": self.strategy, "readout": self.readout, "model": self.model,
            "split_seed": int(self.split_seed), "n_train_hf": None if self.n_train_hf is None else int(self.n_train_hf),
            "best_epoch": None if self.best_epoch is None else int(self.best_epoch),
            "config_hash": self.resolved_config_hash, "run_key": self.run_key,
            "trial_id": None if self.trial_id is None else str(self.trial_id),
            "mfray_version": versions.mfray_version, "git_sha": versions.git_sha, "torch": versions.torch,
            "ray": versions.ray, "rdkit": versions.rdkit,
            "started_at": _utc(self.started_at), "finished_at": finished,
        }
        cols: dict[str, pa.Array] = {}
        for fld in BASE_SCHEMA:
            if fld.name == "fold":
                cols["fold"] = pa.array([f for f, _, _ in folds_metrics], fld.type)
            elif fld.name == "metric":
                cols["metric"] = pa.array([m for _, m, _ in folds_metrics], fld.type)
            elif fld.name == "value":
                cols["value"] = pa.array([v for _, _, v in folds_metrics], fld.type)
            else:
                cols[fld.name] = pa.array([const[fld.name]] * n, fld.type)
        fields = list(BASE_SCHEMA)
        for name, v in sorted(flatten_params(self.params).items()):
            t = _param_type(v)
            cols[name] = pa.array([v] * n, t)
            fields.append(pa.field(name, t))
        return pa.table(cols, schema=pa.schema(fields))


