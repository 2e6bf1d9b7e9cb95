"""Metrics in original label units: regression (MAE, RMSE, R2, Pearson r), classification (AUROC, MCC).

Every function takes numpy arrays ``y_true`` and ``y_pred`` of shape ``[n]`` or ``[n, T]``; missing
targets (NaN in ``y_true``) are ignored per target, and multi-target results are averaged over targets.
"""

from __future__ import annotations

import numpy as np

REGRESSION_METRICS = ("mae", "rmse", "r2", "pearson")
CLASSIFICATION_METRICS = ("auroc", "mcc")


def _columns(y_true: np.ndarray, y_pred: np.ndarray):
    yt = np.asarray(y_true, dtype=np.float64)
    yp = np.asarray(y_pred, dtype=np.float64)
    if yt.ndim == 1:
        yt, yp = yt[:, None], yp[:, None]
    if yt.shape != yp.shape:
        raise ValueError(f"y_true {yt.shape} and y_pred {yp.shape} differ in shape")
    for j in range(yt.shape[1]):
        ok = np.isfinite(yt[:, j])
        yield yt[ok, j], yp[ok, j]


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """MAE, RMSE, R2 (coefficient of determination) and Pearson r, averaged over targets."""
    out: dict[str, list[float]] = {k: [] for k in REGRESSION_METRICS}
    for t, p in _columns(y_true, y_pred):
        if len(t) == 0:
            continue
        err = p - t
        out["mae"].append(float(np.mean(np.abs(err))))
        out["rmse"].append(float(np.sqrt(np.mean(err**2))))
        ss_tot = float(np.sum((t - t.mean()) ** 2))
        out["r2"].append(1.0 - float(np.sum(err**2)) / ss_tot if ss_tot > 0 else float("nan"))
        if len(t) > 1 and np.std(t) > 0 and np.std(p) > 0:
            out["pearson"].append(float(np.corrcoef(t, p)[0, 1]))
        else:
            out["pearson"].append(float("nan"))
    return {k: (float(np.mean(v)) if v else float("nan")) for k, v in out.items()}


def classification_metrics(y_true: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """AUROC (from scores) and MCC (scores thresholded at ``threshold``), averaged over targets."""
    from sklearn.metrics import matthews_corrcoef, roc_auc_score

    aurocs, mccs = [], []
    for t, s in _columns(y_true, scores):
        if len(np.unique(t)) < 2:
            aurocs.append(float("nan"))
        else:
            aurocs.append(float(roc_auc_score(t, s)))
        mccs.append(float(matthews_corrcoef(t.astype(int), (s >= threshold).astype(int))) if len(t) else float("nan"))
    return {"auroc": float(np.mean(aurocs)) if aurocs else float("nan"),
            "mcc": float(np.mean(mccs)) if mccs else float("nan")}


def compute_metrics(task_type: str, y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    if task_type == "classification":
        return classification_metrics(y_true, y_pred)
    return regression_metrics(y_true, y_pred)
