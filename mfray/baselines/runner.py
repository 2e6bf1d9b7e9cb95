"""``run_baseline(task, model, ...)``: features, grid search on the validation fold, test metrics."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mfray.baselines.features import Descriptor, aux_matrix, build_features, resolve_aux_key
from mfray.baselines.models import BASELINES, Baseline, Grid
from mfray.data.tasks import FOLD_NAMES, Task
from mfray.train.metrics import compute_metrics


@dataclass
class Predictions:
    """Predictions for one fold, aligned with ``mol_ids``: ``y_true``, ``y_pred`` are ``[n, 1]``."""

    mol_ids: np.ndarray
    y_true: np.ndarray
    y_pred: np.ndarray

    def __len__(self) -> int:
        return len(self.mol_ids)


@dataclass
class BaselineResult:
    """One baseline on one task (one split seed).

    Attributes:
        metrics: ``fold -> {metric: value}`` for train, valid and test, in label units.
        best_params: the configuration selected on the validation fold (lf_linear: ``{}``).
        test_predictions: the selected model's test predictions.
        timings: seconds for ``features``, ``search`` (all fits and the refit), ``predict``, ``total``.
        search: how the search ran (configuration count, fits, trees, and the fitted line for lf_linear).
    """

    task: str
    split_seed: int
    model: str
    features: str | None
    augment: str | None
    aux_key: str | None
    grid: str
    seed: int
    metrics: dict[str, dict[str, float]]
    best_params: dict[str, Any]
    valid_mse: float
    test_predictions: Predictions
    timings: dict[str, float]
    search: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (predictions excluded: they go to a table, not into JSON)."""
        return {
            "task": self.task, "split_seed": self.split_seed, "model": self.model, "features": self.features,
            "augment": self.augment, "aux_key": self.aux_key, "grid": self.grid, "seed": self.seed,
            "metrics": self.metrics, "best_params": self.best_params, "valid_mse": self.valid_mse,
            "n_test": len(self.test_predictions), "timings": self.timings, "search": self.search,
        }


def run_baseline(
    task: Task,
    model: str | Baseline,
    features: str | Descriptor | None = "morgan",
    augment: str | None = None,
    aux_key: str | None = None,
    grid: str | Grid = "reference",
    seed: int = 0,
    n_jobs: int = 1,
    options: Mapping[str, Any] | None = None,
) -> BaselineResult:
    """Fit a classical baseline on ``task``'s training fold, select on valid, report every fold.

    Args:
        task: a single-target task from :func:`mfray.data.tasks.load_task`.
        model: a name in :data:`BASELINES` (``"rf"``, ``"svr"``, ``"lf_linear"``) or a built baseline.
        features: a descriptor name in :data:`mfray.chem.fingerprints.DESCRIPTORS` (``"morgan"``,
            ``"rdkit2d"``) or a built descriptor; ignored by ``lf_linear``, which reads no structure.
        augment: None, ``"label"``, ``"predicted_label"`` or ``"embeddings"``: an LF input appended to
            the features (see :mod:`mfray.baselines.features`). ``lf_linear`` takes none.
        aux_key: the task aux input the augmentation reads instead of its default; for ``lf_linear``,
            the LF column it regresses on (default ``"lf_label"``).
        grid: ``"reference"`` (METHOD.md section 6), ``"fast"``, or a ``{param: values}`` mapping.
        seed: ``random_state`` of the models (the split seed is ``task.seed``).
        n_jobs: parallel jobs (trees of a forest; SVR configurations).
        options: constructor arguments of the baseline (e.g. ``{"epsilon": 0.2}`` for svr).

    Raises:
        DataError: an aux input is absent, or NaN for some molecule (message names the fold and key).
    """
    t0 = time.perf_counter()
    name = model if isinstance(model, str) else type(model).__name__
    baseline: Baseline = BASELINES.build(model, **dict(options or {}))
    if task.train.y.shape[1] != 1:
        raise ValueError(f"baselines fit one target; task {task.name} has {task.train.y.shape[1]} "
                         f"({task.targets}); load it with targets=[...]")
    if baseline.uses_descriptors:
        key = resolve_aux_key(task, augment, aux_key)
        fs = build_features(task, features, key)
        descriptor = fs.descriptor
        X = fs.X
    else:
        if augment is not None:
            raise ValueError(f"{name} reads one LF column and takes no augmentation; choose the column with "
                             f"aux_key (default {baseline.default_aux_key!r})")
        key, descriptor = aux_key or baseline.default_aux_key, None
        X = {f: aux_matrix(task, key, f) for f in FOLD_NAMES}
    t_features = time.perf_counter() - t0

    configs = baseline.configs(grid)
    y = {f: task.folds[f].y[:, 0].astype(np.float64) for f in FOLD_NAMES}
    # censored labels: these models take no bounds, so under "censored" (and "drop") they fit and
    # select on the fitted values only; under "as_value" the bounds count as measurements
    fit_policy = "drop" if task.censored == "censored" else task.censored
    fit_y = {f: task.folds[f].training_labels(fit_policy)[0][:, 0].astype(np.float64) for f in ("train", "valid")}
    fit_rows = {f: np.isfinite(fit_y[f]) for f in ("train", "valid")}
    t1 = time.perf_counter()
    found = baseline.search(X["train"][fit_rows["train"]], fit_y["train"][fit_rows["train"]],
                            X["valid"][fit_rows["valid"]], fit_y["valid"][fit_rows["valid"]],
                            configs, seed=seed, n_jobs=n_jobs)
    t_search = time.perf_counter() - t1

    t2 = time.perf_counter()
    preds = {f: np.asarray(found.model.predict(X[f]), dtype=np.float64) for f in FOLD_NAMES}
    t_predict = time.perf_counter() - t2
    censor = {f: task.folds[f].censor[:, 0] if task.censored is not None else None for f in FOLD_NAMES}
    metrics = {f: compute_metrics(task.task_type, y[f], preds[f], censor[f]) for f in FOLD_NAMES}
    test = task.folds["test"]
    return BaselineResult(
        task=task.name, split_seed=task.seed, model=name, features=descriptor, augment=augment, aux_key=key,
        grid=grid if isinstance(grid, str) else "custom", seed=seed, metrics=metrics,
        best_params=_plain(found.best_params), valid_mse=float(found.valid_mse[found.best_index]),
        test_predictions=Predictions(mol_ids=test.mol_ids, y_true=test.y[:, :1].astype(np.float64),
                                     y_pred=preds["test"][:, None]),
        timings={"features": round(t_features, 3), "search": round(t_search, 3), "predict": round(t_predict, 3),
                 "total": round(time.perf_counter() - t0, 3)},
        search=_plain({**found.info, "fit_on": FIT_ON[fit_policy], "n_fit": int(fit_rows["train"].sum())}),
    )


#: what a baseline was fitted on, by the censored-label policy it applied (for the record)
FIT_ON = {None: "all values (no qualifiers)", "drop": "fitted values only (bounds left out)",
          "as_value": "all values (bounds as if measured)"}


def _plain(d: dict[str, Any]) -> dict[str, Any]:
    """numpy scalars -> Python scalars (JSON/TOML-ready)."""
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in d.items()}
