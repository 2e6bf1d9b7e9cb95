"""Progress within an epoch (``fit(on_step=...)``) and what the loss adds up (``describe_loss``)."""

from dataclasses import replace

import pytest

from mfray.train.loop import StepLog, TrainConfig, describe_loss, fit
from mfray.train.task import LFRunConfig, prepare_lf
from mfray.transfer import FreezePlan


def _prep(store, **train):
    cfg = LFRunConfig(readout="sum", model={"hidden_dim": 16, "latent_dim": 4, "head_hidden_dim": 16},
                      train=TrainConfig(**{"lr": 1e-3, "batch_size": 32, "max_epochs": 2, "patience": 0, **train}),
                      max_molecules=200)
    return prepare_lf(store, cfg), cfg


def test_every_step_is_reported_with_the_running_loss(demo_store):
    prep, cfg = _prep(demo_store)
    steps: list[StepLog] = []
    res = fit(prep.model, prep.train, prep.valid, cfg.train, on_step=steps.append)
    per_epoch = prep.train.num_batches(32)
    assert per_epoch > 1
    assert [(s.epoch, s.step, s.steps) for s in steps] == [(e, k, per_epoch) for e in range(2) for k in range(1, per_epoch + 1)]
    # the last step's running mean is the epoch's training loss
    for e in range(2):
        last = [s for s in steps if s.epoch == e][-1]
        assert last.loss == pytest.approx(res.history[e].train_loss)
    assert all(s.objective == "MSE + VGAE recon + 0.001 KL; valid: the same" for s in steps)


def test_max_steps_caps_what_is_reported(demo_store):
    prep, cfg = _prep(demo_store, max_steps_per_epoch=2, max_epochs=1)
    steps: list[StepLog] = []
    fit(prep.model, prep.train, prep.valid, cfg.train, on_step=steps.append)
    assert [(s.step, s.steps) for s in steps] == [(1, 2), (2, 2)]


def test_the_objective_follows_the_freeze_plan(demo_store):
    """A frozen encoder trains without the VGAE terms; when it thaws they join the loss (and the line)."""
    prep, cfg = _prep(demo_store, max_epochs=2, max_steps_per_epoch=1)
    steps: list[StepLog] = []
    fit(prep.model, prep.train, prep.valid, cfg.train, on_step=steps.append,
        freeze_plan=FreezePlan.of(("encoder",), unfreeze_epoch=1))
    assert [s.objective for s in steps] == ["MSE; valid: the same", "MSE + VGAE recon + 0.001 KL; valid: the same"]


def test_describe_loss():
    cfg = TrainConfig()
    assert describe_loss("regression", False, True, cfg) == "MSE + VGAE recon + 0.001 KL; valid: the same"
    assert describe_loss("regression", True, True, cfg).startswith("censored MSE + ")
    assert describe_loss("classification", False, False, cfg) == "BCE; valid: the same"
    assert describe_loss("regression", False, True, replace(cfg, monitor="task")).endswith("; valid: MSE")
    assert describe_loss("regression", False, True, replace(cfg, kl_weight=1.0, recon_weight=0.5)) == \
        "MSE + 0.5 VGAE recon + KL; valid: the same"


def test_a_censored_task_says_so(censored_store):
    from mfray.data.tasks import load_task
    from mfray.train.task import HFRunConfig, train_hf

    task = load_task(censored_store, 11, censored="censored")
    steps: list[StepLog] = []
    train_hf(task, HFRunConfig(strategy="base", model={"hidden_dim": 16, "latent_dim": 4, "head_hidden_dim": 16},
                               train=TrainConfig(lr=1e-3, max_epochs=1, max_steps_per_epoch=1)), on_step=steps.append)
    assert steps and steps[0].objective.startswith("censored MSE + VGAE recon")
