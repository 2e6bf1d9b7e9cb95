"""Censored labels in training and evaluation: the one-sided loss, the fit loop, the scaler, the metrics
and the classical baselines."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mfray.baselines import run_baseline
from mfray.data.tasks import load_task
from mfray.models import ModelSpec, build_model
from mfray.train.loop import TrainConfig, _task_loss, censored_squared_error, evaluate_loss, fit
from mfray.train.metrics import compute_metrics
from mfray.train.task import HFRunConfig, _datasets, train_hf

SMALL = {"hidden_dim": 32, "latent_dim": 8, "head_hidden_dim": 32}


def test_loss_is_zero_on_the_right_side_of_a_bound_and_grows_on_the_wrong_side():
    y = torch.tensor([1.0, 1.0, 1.0])
    lower = torch.tensor([1, 1, 1], dtype=torch.int8)  # true value >= 1
    upper = -lower  # true value <= 1
    fitted = torch.zeros(3, dtype=torch.int8)
    pred = torch.tensor([0.0, 1.0, 3.0])
    assert censored_squared_error(pred, y, lower).tolist() == [1.0, 0.0, 0.0]
    assert censored_squared_error(pred, y, upper).tolist() == [0.0, 0.0, 4.0]
    assert censored_squared_error(pred, y, fitted).tolist() == [1.0, 0.0, 4.0]
    assert censored_squared_error(pred, y, None).tolist() == [1.0, 0.0, 4.0]
    wrong = [float(censored_squared_error(torch.tensor([p]), torch.tensor([1.0]), torch.tensor([-1], dtype=torch.int8)))
             for p in (1.5, 2.0, 3.0)]
    assert wrong == [0.25, 1.0, 4.0]  # grows quadratically with the distance past the bound
    # mean over the finite targets only; gradients only from the wrong side
    p = torch.tensor([[0.0, 5.0], [2.0, 0.0]], requires_grad=True)
    yy = torch.tensor([[1.0, float("nan")], [1.0, 0.0]])
    c = torch.tensor([[-1, 0], [-1, 0]], dtype=torch.int8)
    loss = _task_loss(p, yy, "regression", c)
    assert float(loss.detach()) == pytest.approx((0 + 1 + 0) / 3)
    loss.backward()
    assert p.grad.tolist() == [[0.0, 0.0], [pytest.approx(2 / 3), 0.0]]


def test_metrics_on_a_hand_made_fold():
    # fitted: (5, 5.5), (6, 5.0), (7, 7.5); below 4 (inactive): preds 3.0 (right), 4.5 (wrong); above 8: 9 (right)
    y = np.array([5.0, 6.0, 7.0, 4.0, 4.0, 8.0, np.nan])
    p = np.array([5.5, 5.0, 7.5, 3.0, 4.5, 9.0, 1.0])
    c = np.array([0, 0, 0, -1, -1, 1, 0], dtype=np.int8)
    m = compute_metrics("regression", y, p, c)
    err = np.array([0.5, -1.0, 0.5])
    assert m["mae"] == pytest.approx(np.abs(err).mean())
    assert m["rmse"] == pytest.approx(math.sqrt((err**2).mean()))
    assert m["r2"] == pytest.approx(1 - (err**2).sum() / ((np.array([5, 6, 7]) - 6.0) ** 2).sum())
    assert m["pearson"] == pytest.approx(np.corrcoef([5, 6, 7], [5.5, 5.0, 7.5])[0, 1])
    assert m["censored_acc"] == pytest.approx(2 / 3)
    # actives (fitted) 5.5, 5.0, 7.5 vs inactives 3.0, 4.5: every active above every inactive
    assert m["active_auroc"] == 1.0
    assert (m["n_fitted"], m["n_censored"]) == (3.0, 3.0)
    p2 = p.copy()
    p2[4] = 5.0  # ties an active (5.0): half a pair; 5.5 and 7.5 still above it
    assert compute_metrics("regression", y, p2, c)["active_auroc"] == pytest.approx((3 + 2.5) / 6)
    # no bounds in a fold: the extra numbers are undefined, not zero
    none = compute_metrics("regression", y[:3], p[:3], c[:3])
    assert math.isnan(none["censored_acc"]) and math.isnan(none["active_auroc"]) and none["n_censored"] == 0
    assert "censored_acc" not in compute_metrics("regression", y[:3], p[:3])


def test_fit_and_early_stopping_use_the_one_sided_loss(demo_store):
    """Targets that are all lower bounds far below any prediction cost nothing: train and valid loss 0."""
    task = load_task(demo_store, demo_store.manifest["spec"]["split"]["seeds"][0])
    spec = ModelSpec(readout="sum", n_targets=1, vgae=False, encoder="gin", **{k: v for k, v in SMALL.items() if k != "latent_dim"})
    ids = task.train.mol_ids[:64]
    y = np.full((64, 1), -100.0, dtype=np.float32)
    data = _datasets(demo_store, spec, ids, y, None, np.ones((64, 1), dtype=np.int8))
    torch.manual_seed(0)
    model = build_model(spec)
    res = fit(model, data, data, TrainConfig(lr=1e-3, batch_size=16, max_epochs=2, patience=0))
    assert all(h.train_loss == 0.0 and h.valid_loss == 0.0 for h in res.history)
    plain = _datasets(demo_store, spec, ids, y, None)  # the same numbers as measurements: a huge loss
    assert evaluate_loss(model, plain, 64) > 1000.0


@pytest.fixture(scope="module")
def runs(censored_store):
    out = {}
    for policy in ("censored", "drop", "as_value"):
        task = load_task(censored_store, 11, censored=policy)
        cfg = HFRunConfig(strategy="label", readout="sum", model=SMALL,
                          train=TrainConfig(lr=3e-3, batch_size=32, max_epochs=12, patience=0, seed=1))
        out[policy] = (task, train_hf(task, cfg))
    return out


def test_policies_train_differently_and_are_evaluated_alike(runs):
    preds = {p: r.predictions.sort("fold", "mol_id") for p, (_, r) in runs.items()}
    assert preds["censored"].select("fold", "mol_id", "y_true", "censor").equals(
        preds["drop"].select("fold", "mol_id", "y_true", "censor"))
    assert not np.allclose(preds["censored"]["y_pred"], preds["as_value"]["y_pred"])
    for _, r in runs.values():
        t = r.metrics["test"]
        assert t["n_fitted"] > 0 and t["n_censored"] > 0
        assert set(t) >= {"r2", "mae", "censored_acc", "active_auroc"}
    # the one-sided loss puts the bounded molecules under their bound more often than bounds taken as
    # values (aimed at exactly) and far more often than "drop", whose model never saw an inactive
    # (here about 0.53 / 0.34 / 0.13)
    train = {p: r.metrics["train"]["censored_acc"] for p, (_, r) in runs.items()}
    assert train["censored"] > train["as_value"] + 0.1 and train["censored"] > train["drop"] + 0.25


def test_scaler_is_fitted_on_the_fitted_values(runs, tmp_path):
    task, _ = runs["censored"]
    res = train_hf(task, HFRunConfig(strategy="label", readout="sum", model=SMALL,
                                     train=TrainConfig(max_epochs=1, patience=0)), out_dir=tmp_path)
    scaler = torch.load(res.checkpoint, weights_only=True)["scalers"]["y"]
    fitted = task.train.y[task.train.censor == 0]
    assert scaler["mean"][0] == pytest.approx(float(fitted.mean()), rel=1e-6)
    assert scaler["std"][0] == pytest.approx(float(fitted.std()), rel=1e-5)


def test_baselines_fit_the_fitted_values_under_censored(censored_store):
    for policy, n_expected, fit_on in (("censored", "fitted", "fitted values only"), ("drop", "fitted", "fitted values only"),
                                       ("as_value", "all", "all values")):
        task = load_task(censored_store, 11, censored=policy)
        res = run_baseline(task, "lf_linear")
        n = task.train.counts()["fitted"] if n_expected == "fitted" else len(task.train)
        assert res.search["n_fit"] == n and res.search["fit_on"].startswith(fit_on)
        assert {"censored_acc", "active_auroc"} <= set(res.metrics["test"])
