"""Settings are a data-layer view of a task (inductive: new molecules, unseen by the LF model), and the
delta strategy starts at the lf_linear floor by construction."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from mfray.baselines import run_baseline
from mfray.cli.main import main
from mfray.data.tasks import holdout_ids, load_task
from mfray.train.loop import TrainConfig
from mfray.train.task import LF_MOLECULES, HFRunConfig, LFRunConfig, lf_setup, pretrain_lf, train_hf
from mfray.utils.errors import DataError, MfrayError

SMALL = {"hidden_dim": 16, "latent_dim": 8, "head_hidden_dim": 16}


def test_inductive_hides_the_new_molecules_lf_labels(demo_store, demo_spec):
    seed = demo_spec.split.seeds[0]
    t = load_task(demo_store, seed)
    ind = t.for_setting("inductive")
    assert ind.setting == "inductive" and t.setting == "transductive"
    assert np.array_equal(ind.train.aux["lf_label"], t.train.aux["lf_label"])
    for f in ("valid", "test"):
        assert np.isnan(ind.folds[f].aux["lf_label"]).all() and np.isfinite(t.folds[f].aux["lf_label"]).all()
        assert np.array_equal(ind.folds[f].aux["artifact:STPredSD"], t.folds[f].aux["artifact:STPredSD"])
        assert np.array_equal(ind.folds[f].y, t.folds[f].y)
    with pytest.raises(DataError, match="unknown setting 'semi'"):
        t.for_setting("semi")
    # label cannot run inductively; hybrid_label falls back to the LF prediction for the new molecules
    with pytest.raises(MfrayError, match="does not run in the inductive setting"):
        train_hf(ind, HFRunConfig(strategy="label"))


def test_lf_pretraining_for_the_inductive_setting_leaves_the_new_molecules_out(demo_store, demo_spec, tmp_path):
    seeds = list(demo_spec.split.seeds[:2])
    held = holdout_ids(demo_store, seeds)
    n_lf = demo_store.table("task_labels").filter(pl.col("fidelity") == "lf").height
    assert 0 < len(held) < n_lf
    cfg = LFRunConfig(readout="sum", model=SMALL, train=TrainConfig(lr=1e-3, batch_size=64, max_epochs=1, patience=0),
                      holdout_seeds=seeds)
    setup = lf_setup(demo_store, cfg)
    seen = np.concatenate([setup.train_ids, setup.valid_ids])
    assert len(seen) == n_lf - len(held) and not np.isin(seen, held).any()
    assert setup.holdout["seeds"] == seeds and setup.holdout["n"] == len(held)
    path, _ = pretrain_lf(demo_store, cfg, tmp_path / "lf")
    mols = pl.read_parquet(tmp_path / "lf" / LF_MOLECULES)
    assert mols.height == len(seen) and not mols["mol_id"].is_in(held.tolist()).any()
    import torch

    assert torch.load(path, weights_only=True)["meta"]["holdout"]["seeds"] == seeds
    # transductive pretraining sees every LF molecule
    full = lf_setup(demo_store, LFRunConfig(readout="sum", model=SMALL))
    assert len(full.train_ids) + len(full.valid_ids) == n_lf and full.holdout is None


def test_mfray_train_warns_when_an_inductive_lf_model_saw_the_test_molecules(demo_store, demo_spec, tmp_path, capsys):
    cfg = LFRunConfig(readout="sum", model=SMALL, train=TrainConfig(lr=1e-3, batch_size=64, max_epochs=1, patience=0))
    path, _ = pretrain_lf(demo_store, cfg, tmp_path / "lf")
    args = ["train", "aid1445", "--strategy", "predicted_label", "--setting", "inductive", "--epochs", "1",
            "--lf-checkpoint", str(path), "--hidden-dim", "16", "--latent-dim", "8", "--out", str(tmp_path / "o"),
            "--no-progress", "--store-root", str(demo_store.path.parents[1])]
    assert main(args) == 0
    assert "this inductive run is not inductive" in capsys.readouterr().err


def test_delta_starts_at_the_lf_linear_floor(demo_store, demo_spec):
    task = load_task(demo_store, demo_spec.split.seeds[0])
    untrained = train_hf(task, HFRunConfig(strategy="delta", model=SMALL, train=TrainConfig(max_epochs=0)))
    floor = run_baseline(task, "lf_linear")
    test = untrained.predictions.filter(pl.col("fold") == "test").sort("mol_id")
    order = np.argsort(floor.test_predictions.mol_ids)
    assert np.allclose(test["y_pred"].to_numpy(), floor.test_predictions.y_pred[order, 0], atol=1e-4)
    assert untrained.metrics["test"]["r2"] == pytest.approx(floor.metrics["test"]["r2"], abs=1e-4)
    # trained, it learns a residual: not the line any more
    trained = train_hf(task, HFRunConfig(strategy="delta", model=SMALL,
                                         train=TrainConfig(lr=3e-3, max_epochs=3, patience=0)))
    assert not np.allclose(trained.predictions["y_pred"].to_numpy(), untrained.predictions["y_pred"].to_numpy())


def test_delta_with_a_constant_lf_input_starts_at_the_mean(demo_store, demo_spec):
    """An LF input that never varies says nothing: the line is the training mean, not an error."""
    task = load_task(demo_store, demo_spec.split.seeds[0])
    for f in ("train", "valid", "test"):
        task.folds[f].aux["lf_label"] = np.full_like(task.folds[f].aux["lf_label"], 20.0)
    res = train_hf(task, HFRunConfig(strategy="delta", model=SMALL, train=TrainConfig(max_epochs=0)))
    test = res.predictions.filter(pl.col("fold") == "test")["y_pred"].to_numpy()
    assert np.allclose(test, float(np.nanmean(task.train.y)), atol=1e-4)


def test_the_starting_point_is_a_candidate_for_the_best_epoch(demo_store, demo_spec):
    """The untrained model's validation loss is measured: training keeps a later epoch only if it is
    better, so delta is never worse than its starting point, the floor, on validation."""
    task = load_task(demo_store, demo_spec.split.seeds[0])
    cfg = dict(strategy="delta", model=SMALL)
    floor = train_hf(task, HFRunConfig(**cfg, train=TrainConfig(max_epochs=0, monitor="task")))
    assert floor.fit.best_epoch == -1 and np.isfinite(floor.fit.best_valid_loss)
    trained = train_hf(task, HFRunConfig(**cfg, train=TrainConfig(lr=3e-3, max_epochs=4, patience=0, monitor="task")))
    assert trained.fit.best_valid_loss <= floor.fit.best_valid_loss
    if trained.fit.best_epoch == -1:
        assert np.allclose(trained.predictions["y_pred"].to_numpy(), floor.predictions["y_pred"].to_numpy(), atol=1e-5)
