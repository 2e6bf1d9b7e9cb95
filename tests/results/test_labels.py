"""Human labels: every registered name has one, methods fold their readout in, unknown names pass through."""

from __future__ import annotations

import pytest

from mfray.results.labels import LABELS, label, method_label, metric_label


@pytest.mark.parametrize("registry", ["strategies", "baselines", "readouts", "metrics"])
def test_every_registered_name_has_a_label(registry):
    if registry == "strategies":
        from mfray.transfer import STRATEGIES as reg
    elif registry == "baselines":
        from mfray.baselines import BASELINES as reg
    elif registry == "readouts":
        from mfray.nn import READOUTS as reg
    else:
        from mfray.train.metrics import CENSORED_METRICS, CLASSIFICATION_METRICS, REGRESSION_METRICS
        reg = (*REGRESSION_METRICS, *CENSORED_METRICS, *CLASSIFICATION_METRICS)
    missing = [n for n in reg if n not in LABELS]
    assert not missing, f"give these {registry} a label in mfray/results/labels.py: {missing}"


def test_labels():
    assert metric_label("r2") == "R²" and metric_label("mae") == "MAE"
    assert label("tune_readout") == "Fine-tune readout" and label("lf_linear") == "LF-linear floor"
    assert method_label("delta[attention]") == "Δ-learning (attention)"
    assert method_label("base[gnn/st]") == "Base (HF only; GNN/Set Transformer)"
    assert method_label("new_strategy") == "new_strategy" and method_label("x[y]") == "x (y)"
