"""Human labels for the registry names a results table carries: the one place figures and LaTeX tables
take them from (Markdown and CSV reports keep the registry names, which are what ``--base`` and the
study files accept).

One dict per kind of name, merged into :data:`LABELS`; a name that no dict knows is shown as it is
(a new strategy appears under its registry name until it is given a label here, and
``tests/results/test_labels.py`` fails until it is).
"""

from __future__ import annotations

import re

#: transfer strategies (mfray.transfer) and the choices a study records as strategies
STRATEGY_LABELS = {
    "base": "Base (HF only)",
    "label": "LF label",
    "hybrid_label": "Hybrid LF label",
    "predicted_label": "Predicted LF label",
    "delta": "Δ-learning",
    "embeddings": "LF embeddings",
    "tune_vgae": "Fine-tune VGAE",
    "tune_readout": "Fine-tune readout",
    "selected": "Selected (by valid)",
}
#: baselines (mfray.baselines) and the model column's other values
MODEL_LABELS = {
    "lf_linear": "LF-linear floor",
    "rf": "Random forest",
    "svr": "SVR",
    "gnn": "GNN",
    "gcn": "GCN",
    "gin": "GIN",
    "gine": "GINE",
}
#: graph readouts (mfray.nn.readouts)
READOUT_LABELS = {
    "sum": "sum",
    "mean": "mean",
    "max": "max",
    "sum_mean_max": "sum+mean+max",
    "attention": "attention",
    "deepsets": "Deep Sets",
    "set_transformer": "Set Transformer",
    "gmt": "GMT",
    "st": "Set Transformer",  # the short name older studies and the synthetic fixtures record
}
#: metrics (mfray.train.metrics) and the report's own columns
METRIC_LABELS = {
    "r2": "R²",
    "mae": "MAE",
    "rmse": "RMSE",
    "mse": "MSE",
    "pearson": "Pearson r",
    "censored_acc": "censored accuracy",
    "active_auroc": "active AUROC",
    "auroc": "AUROC",
    "mcc": "MCC",
    "loss": "loss",
    "n_fitted": "fitted molecules",
    "n_censored": "censored molecules",
}


def _merge(*parts: dict[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in parts:
        for k, v in part.items():
            if out.get(k, v) != v:
                raise ValueError(f"label of {k!r} given twice: {out[k]!r} and {v!r}")
            out[k] = v
    return out


LABELS = _merge(STRATEGY_LABELS, MODEL_LABELS, READOUT_LABELS, METRIC_LABELS)
_METHOD = re.compile(r"^(?P<name>[^\[\]]+)\[(?P<inner>[^\[\]]+)\]$")


def label(name: str) -> str:
    """The human label of one registry name (``"r2"`` -> ``"R²"``); unknown names come back unchanged."""
    return LABELS.get(name, name)


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


def method_label(method: str) -> str:
    """The human label of a report method (``strategy[model/readout]``, see :mod:`mfray.results.report`).

    ``"delta[attention]"`` -> ``"Δ-learning (attention)"``; a strategy whose label already ends in a
    bracket takes the parts inside it: ``"base[gnn/st]"`` -> ``"Base (HF only; GNN/Set Transformer)"``.
    """
    m = _METHOD.match(method)
    if m is None:
        return label(method)
    name, inner = label(m["name"]), "/".join(label(p) for p in m["inner"].split("/"))
    if name.endswith(")"):
        return f"{name[:-1]}; {inner})"
    return f"{name} ({inner})"
