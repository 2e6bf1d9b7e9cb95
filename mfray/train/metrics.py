"""Metrics in original label units: regression (MAE, RMSE, R2, Pearson r), classification (AUROC, MCC).

Every function takes numpy arrays ``y_true`` and ``y_pred`` of shape ``[n]`` or ``[n, T]``; missing
targets (NaN in ``y_true``) are ignored per target, and multi-target results are averaged over targets.

Censored labels (``censor`` given, same shape; 0 fitted, +1 ``y_true`` is a lower bound of the true
value, -1 an upper bound; see :func:`censored_metrics`): MAE, RMSE, R2 and Pearson r are computed on
the fitted values only, whatever policy the model was trained under, and three more numbers say how the
model treats the bounds:

- ``censored_acc``: the fraction of censored molecules predicted on the right side of their bound
  (at or below an upper bound, at or above a lower bound);
- ``active_auroc``: the screening question "which compounds are worth a dose-response?": the AUROC
  of the predicted value for telling molecules with a fitted value (actives: a potency could be fitted)
  from molecules censored below (inactives: weaker than the highest tested concentration). It assumes
  a higher label means more active, as for pXC50; molecules censored above are left out;
- ``n_fitted``, ``n_censored``: how many molecules each part rests on.
"""

from __future__ import annotations

import numpy as np

REGRESSION_METRICS = ("mae", "rmse", "r2", "pearson")
CENSORED_METRICS = ("censored_acc", "active_auroc", "n_fitted", "n_censored")
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


def _auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties counting one half (the Mann-Whitney form)."""
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([pos, neg]))
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def censored_metrics(y_true: np.ndarray, y_pred: np.ndarray, censor: np.ndarray) -> dict[str, float]:
    """Regression metrics on the fitted values plus how the predictions sit against the bounds (see
    the module docstring); averaged over targets like :func:`regression_metrics`."""
    yt = np.asarray(y_true, dtype=np.float64)
    yp = np.asarray(y_pred, dtype=np.float64)
    cs = np.asarray(censor)
    if yt.ndim == 1:
        yt, yp, cs = yt[:, None], yp[:, None], cs[:, None]
    if cs.shape != yt.shape:
        raise ValueError(f"censor {cs.shape} and y_true {yt.shape} differ in shape")
    fitted = np.where(cs == 0, yt, np.nan)
    out = regression_metrics(fitted, yp)
    acc, auroc, n_fit, n_cens = [], [], 0, 0
    for j in range(yt.shape[1]):
        has = np.isfinite(yt[:, j])
        fit = has & (cs[:, j] == 0)
        below, above = has & (cs[:, j] < 0), has & (cs[:, j] > 0)
        n_fit += int(fit.sum())
        n_cens += int((below | above).sum())
        right = np.concatenate([yp[below, j] <= yt[below, j], yp[above, j] >= yt[above, j]])
        acc.append(float(right.mean()) if len(right) else float("nan"))
        auroc.append(_auroc(yp[fit, j], yp[below, j]))
    mean = lambda v: float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")  # noqa: E731
    out.update(censored_acc=mean(np.asarray(acc)), active_auroc=mean(np.asarray(auroc)),
               n_fitted=float(n_fit), n_censored=float(n_cens))
    return out


def compute_metrics(task_type: str, y_true: np.ndarray, y_pred: np.ndarray,
                    censor: np.ndarray | None = None) -> dict[str, float]:
    """The metrics of a fold. ``censor`` (regression): the labels carry qualifiers, see
    :func:`censored_metrics`; None: every value is a measurement."""
    if task_type == "classification":
        return classification_metrics(y_true, y_pred)
    if censor is not None:
        return censored_metrics(y_true, y_pred, censor)
    return regression_metrics(y_true, y_pred)
