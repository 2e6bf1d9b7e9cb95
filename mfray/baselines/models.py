"""The classical baselines and their hyperparameter grids (METHOD.md section 6).

Every baseline implements one narrow interface, :meth:`Baseline.search`: fit each configuration of a
grid on the training fold, score it by mean squared error on the validation fold, and return the best
configuration refitted, with the validation MSE of every configuration. Selection never sees the test
fold. Ties go to the earlier configuration in grid order (the grid's axes vary last-axis-fastest).

- ``rf``: :class:`sklearn.ensemble.RandomForestRegressor`. The reference grid (360 configurations,
  99,000 trees) is searched exactly with a fraction of the fits, see :class:`RandomForestBaseline`.
- ``svr``: :class:`sklearn.svm.SVR` with an RBF kernel, labels standardised on the training fold.
- ``lf_linear``: ``y = a + b * lf`` by least squares on one LF column (no molecular structure): the
  floor every transductive label strategy must beat.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from mfray.utils.registry import Registry

BASELINES: Registry = Registry("baseline")

Grid = Mapping[str, Sequence[Any]]


@dataclass
class SearchResult:
    """What a grid search returns.

    Attributes:
        model: the selected configuration, refitted on the training fold (has ``predict(X) -> [n]``).
        best_params: the selected configuration.
        configs: every configuration, in grid order.
        valid_mse: ``[len(configs)]`` validation MSE of each configuration.
        info: counts and notes about how the search ran (fits, trees, shortcuts taken).
    """

    model: Any
    best_params: dict[str, Any]
    configs: list[dict[str, Any]]
    valid_mse: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def best_index(self) -> int:
        return int(np.argmin(self.valid_mse))


class Baseline:
    """A baseline: named grids plus a search over one of them.

    Subclasses set ``grids`` (``name -> {param: values}``) and implement :meth:`search`.
    ``uses_descriptors`` is False for a baseline that reads only an LF column.
    """

    grids: ClassVar[dict[str, dict[str, list[Any]]]] = {}
    uses_descriptors: ClassVar[bool] = True
    default_aux_key: ClassVar[str | None] = None

    def configs(self, grid: str | Grid) -> list[dict[str, Any]]:
        """The cartesian product of a named grid (or of a ``{param: values}`` mapping), in order."""
        if isinstance(grid, str):
            if grid not in self.grids:
                raise ValueError(f"{type(self).__name__} has no grid {grid!r}; choices: {sorted(self.grids)}")
            grid = self.grids[grid]
        self.check_params(grid)
        keys = list(grid)
        return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(grid[k] for k in keys))]

    def check_params(self, grid: Grid) -> None:
        """Reject parameter names the model does not take (a typo is an error, not a silent default)."""

    def search(self, X_train: np.ndarray, y_train: np.ndarray, X_valid: np.ndarray, y_valid: np.ndarray,
               configs: list[dict[str, Any]], *, seed: int = 0, n_jobs: int = 1) -> SearchResult:
        """Fit ``configs`` on train, select by validation MSE, return the selected model refitted.

        Shapes:
            ``X_*``: ``[n, width]`` float32; ``y_*``: ``[n]`` (finite).
        """
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(grids={sorted(self.grids)})"


def _mse(pred: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean((np.asarray(pred, dtype=np.float64) - y) ** 2))


def _check_sklearn_params(estimator: Any, grid: Grid, what: str) -> None:
    allowed = set(estimator.get_params())
    unknown = sorted(set(grid) - allowed)
    if unknown:
        raise ValueError(f"unknown {what} parameter(s) {unknown}; accepted: {sorted(allowed)}")


@BASELINES.register("rf")
class RandomForestBaseline(Baseline):
    """Random forest regression (bootstrap, all features at each split: sklearn's defaults).

    The search fits one forest per distinct tree configuration, with as many trees as the largest
    ``n_estimators`` of the grid, and scores every smaller ``n_estimators`` from the running mean of
    the first trees' predictions. This is exact, not an approximation: sklearn seeds tree ``i`` with
    the ``i``-th draw from ``RandomState(random_state)`` whatever the forest's size (the same fact its
    ``warm_start`` relies on), so the first ``n`` trees of a 500-tree forest *are* the ``n``-tree forest.
    Two more exact shortcuts: sklearn fits with ``min_samples_split = max(min_samples_split,
    2 * min_samples_leaf)``, so configurations equal after that share one forest; and a forest whose
    trees all stay shallower than ``max_depth = D`` never hit the limit, so it is also the ``D``-limited
    forest. The selected configuration is refitted from scratch and its validation MSE must equal the
    searched one (a check of these claims on every run). Sparse, binary inputs (fingerprints) are
    fitted in CSC form, which sklearn's sparse splitter turns into the same trees, about twice as fast.

    Args:
        sparse: fit in sparse form: True, False, or None for automatic (density below 0.1).
    """

    grids: ClassVar[dict[str, dict[str, list[Any]]]] = {
        "reference": {
            "n_estimators": list(range(50, 501, 50)),
            "max_depth": [None, 25, 50, 100],
            "min_samples_leaf": [1, 2, 4],
            "min_samples_split": [2, 5, 10],
        },
        "fast": {"n_estimators": [25, 50], "max_depth": [None], "min_samples_leaf": [1, 4]},
    }

    def __init__(self, sparse: bool | None = None) -> None:
        self.sparse = sparse

    def __repr__(self) -> str:
        return f"RandomForestBaseline(sparse={self.sparse}, grids={sorted(self.grids)})"

    def check_params(self, grid: Grid) -> None:
        from sklearn.ensemble import RandomForestRegressor

        _check_sklearn_params(RandomForestRegressor(), grid, "RandomForestRegressor")

    def _estimator(self, params: dict[str, Any], seed: int, n_jobs: int):
        from sklearn.ensemble import RandomForestRegressor

        return RandomForestRegressor(**{"n_estimators": 100, **params}, random_state=seed, n_jobs=n_jobs)

    def _as_fit_input(self, X: np.ndarray):
        sparse = self.sparse if self.sparse is not None else float(np.count_nonzero(X)) / max(X.size, 1) < 0.1
        if not sparse:
            return X
        import scipy.sparse as sp

        return sp.csc_matrix(X)

    @staticmethod
    def _tree_key(params: dict[str, Any]) -> tuple:
        """The parameters that shape one tree, in sklearn's effective form (no n_estimators)."""
        p = {k: v for k, v in params.items() if k != "n_estimators"}
        leaf, split = p.get("min_samples_leaf", 1), p.get("min_samples_split", 2)
        if isinstance(leaf, int) and isinstance(split, int):
            p["min_samples_split"] = max(split, 2 * leaf)
            p["min_samples_leaf"] = leaf
        return tuple(sorted((k, repr(v)) for k, v in p.items()))

    def search(self, X_train, y_train, X_valid, y_valid, configs, *, seed=0, n_jobs=1):
        X_fit = self._as_fit_input(X_train)
        groups: dict[tuple, list[int]] = {}
        for i, c in enumerate(configs):
            groups.setdefault(self._tree_key(c), []).append(i)

        def depth_limit(c: dict[str, Any]) -> float:
            d = c.get("max_depth")
            return float("inf") if d is None else float(d)

        def others(key: tuple) -> tuple:
            return tuple(kv for kv in key if kv[0] != "max_depth")

        # deepest limits first, so a shallower limit can reuse an unconstrained forest
        order = sorted(groups, key=lambda k: -depth_limit(configs[groups[k][0]]))
        fitted: list[dict[str, Any]] = []  # per forest: key, limit, n trees, deepest tree, running means
        valid_mse = np.full(len(configs), np.nan)
        trees = reused = 0
        for key in order:
            members = groups[key]
            params = {k: v for k, v in configs[members[0]].items() if k != "n_estimators"}
            limit = depth_limit(params)
            need = max(configs[i].get("n_estimators", 100) for i in members)
            hit = next((f for f in fitted if f["others"] == others(key) and f["limit"] >= limit
                        and f["n"] >= need and f["deepest"] < limit), None)
            if hit is None:
                forest = self._estimator({**params, "n_estimators": need}, seed, n_jobs).fit(X_fit, y_train)
                per_tree = np.stack([t.predict(X_valid) for t in forest.estimators_]).astype(np.float64)
                hit = {"others": others(key), "limit": limit, "n": need,
                       "deepest": max(t.get_depth() for t in forest.estimators_),
                       "running": np.cumsum(per_tree, axis=0) / np.arange(1, need + 1)[:, None]}
                fitted.append(hit)
                trees += need
                del forest
            else:
                reused += 1
            for i in members:
                valid_mse[i] = _mse(hit["running"][configs[i].get("n_estimators", 100) - 1], y_valid)

        best = int(np.argmin(valid_mse))
        model = self._estimator(configs[best], seed, n_jobs).fit(X_fit, y_train)
        refit_mse = _mse(model.predict(X_valid), y_valid)
        if not np.isclose(refit_mse, valid_mse[best], rtol=1e-9, atol=1e-12):
            raise RuntimeError(
                f"the refitted random forest {configs[best]} scores validation MSE {refit_mse!r}, the search "
                f"scored {valid_mse[best]!r}: this sklearn version no longer seeds the first n trees of a forest "
                "as it seeds an n-tree forest, which the shared-forest search relies on (an mfray bug to report)")
        naive = sum(c.get("n_estimators", 100) for c in configs)
        info = {"configs": len(configs), "forests_fitted": len(fitted), "forests_reused": reused,
                "trees_fitted": trees + configs[best].get("n_estimators", 100), "trees_naive": naive,
                "sparse_input": not isinstance(X_fit, np.ndarray)}
        return SearchResult(model=model, best_params=dict(configs[best]),
                            configs=configs, valid_mse=valid_mse, info=info)


@BASELINES.register("svr")
class SVRBaseline(Baseline):
    """Support vector regression with an RBF kernel.

    Labels are standardised with the training fold's mean and std before fitting (METHOD.md section 7,
    and it makes ``epsilon`` and the ``C`` grid independent of the label's units); predictions are
    mapped back. Configurations are fitted in parallel over ``n_jobs`` processes.

    Args:
        epsilon: the epsilon-tube width, in standardised label units (default 0.1, sklearn's).
        scale_y: standardise labels (default True).
    """

    grids: ClassVar[dict[str, dict[str, list[Any]]]] = {
        "reference": {"C": np.logspace(-2, 3, 10).tolist(), "gamma": np.logspace(-5, 2, 20).tolist()},
        "fast": {"C": [1.0, 10.0], "gamma": [1e-3, 1e-2]},
    }

    def __init__(self, epsilon: float = 0.1, scale_y: bool = True) -> None:
        self.epsilon = epsilon
        self.scale_y = scale_y

    def __repr__(self) -> str:
        return f"SVRBaseline(epsilon={self.epsilon}, scale_y={self.scale_y}, grids={sorted(self.grids)})"

    def check_params(self, grid: Grid) -> None:
        from sklearn.svm import SVR

        _check_sklearn_params(SVR(), grid, "SVR")

    def search(self, X_train, y_train, X_valid, y_valid, configs, *, seed=0, n_jobs=1):
        from joblib import Parallel, delayed

        mean, std = (float(np.mean(y_train)), float(np.std(y_train)) or 1.0) if self.scale_y else (0.0, 1.0)
        yt = (np.asarray(y_train, dtype=np.float64) - mean) / std
        Xt, Xv = np.asarray(X_train, dtype=np.float64), np.asarray(X_valid, dtype=np.float64)
        scores = Parallel(n_jobs=n_jobs)(
            delayed(_svr_valid_mse)(Xt, yt, Xv, y_valid, c, self.epsilon, mean, std) for c in configs)
        valid_mse = np.asarray(scores, dtype=np.float64)
        best = int(np.argmin(valid_mse))
        model = _ScaledSVR(self._fit(Xt, yt, configs[best]), mean, std)
        return SearchResult(model=model, best_params=dict(configs[best]), configs=configs, valid_mse=valid_mse,
                            info={"configs": len(configs), "fits": len(configs) + 1, "y_mean": mean, "y_std": std})

    def _fit(self, X: np.ndarray, y: np.ndarray, params: dict[str, Any]):
        return _svr(params, self.epsilon).fit(X, y)


def _svr(params: dict[str, Any], epsilon: float):
    from sklearn.svm import SVR

    return SVR(**{"kernel": "rbf", "epsilon": epsilon, **params})


def _svr_valid_mse(X, y, Xv, yv, params, epsilon, mean, std) -> float:
    return _mse(_svr(params, epsilon).fit(X, y).predict(Xv) * std + mean, yv)


class _ScaledSVR:
    """A fitted SVR on standardised labels, predicting in the original units."""

    def __init__(self, model: Any, mean: float, std: float) -> None:
        self.model, self.mean, self.std = model, mean, std

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.model.predict(np.asarray(X, dtype=np.float64)) * self.std + self.mean

    def __repr__(self) -> str:
        return f"{self.model!r} on labels standardised with mean {self.mean:.4g}, std {self.std:.4g}"


@BASELINES.register("lf_linear")
class LFLinearBaseline(Baseline):
    """``y_hf = intercept + slope * x`` by least squares on the training fold, ``x`` one LF column.

    ``x`` is the measured LF label (aux ``"lf_label"``) unless another one-column aux key is given
    (e.g. an LF-model prediction, which gives the inductive counterpart of the floor). No molecular
    structure enters, so this is the floor of every transductive label strategy. There is nothing to
    select: every grid has one (empty) configuration.
    """

    grids: ClassVar[dict[str, dict[str, list[Any]]]] = {"reference": {}, "fast": {}}
    uses_descriptors: ClassVar[bool] = False
    default_aux_key: ClassVar[str | None] = "lf_label"

    def search(self, X_train, y_train, X_valid, y_valid, configs, *, seed=0, n_jobs=1):
        if X_train.shape[1] != 1:
            raise ValueError(f"lf_linear fits one LF column; got {X_train.shape[1]} columns (choose a 1-d aux key)")
        A = np.column_stack([np.ones(len(X_train)), X_train[:, 0].astype(np.float64)])
        (intercept, slope), *_ = np.linalg.lstsq(A, np.asarray(y_train, dtype=np.float64), rcond=None)
        model = _Line(float(intercept), float(slope))
        return SearchResult(model=model, best_params={}, configs=[{}],
                            valid_mse=np.array([_mse(model.predict(X_valid), y_valid)]),
                            info={"configs": 1, "intercept": model.intercept, "slope": model.slope})


@dataclass(frozen=True)
class _Line:
    intercept: float
    slope: float

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.intercept + self.slope * np.asarray(X, dtype=np.float64)[:, 0]
