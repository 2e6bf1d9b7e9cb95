"""Every strategy trains end to end on a few real molecules and can overfit them."""

import numpy as np
import pytest

from mfray.data.tasks import load_task
from mfray.train.loop import TrainConfig
from mfray.train.task import HFRunConfig, LFRunConfig, embed_store, pretrain_lf, train_hf
from mfray.transfer import STRATEGIES
from mfray.utils.errors import MfrayError

SMALL = {"hidden_dim": 32, "latent_dim": 8, "head_hidden_dim": 32}
ST_SMALL = {"hidden_dim": 32, "num_heads": 4, "num_seeds": 4, "out_dim": 16}


@pytest.fixture(scope="module")
def task(demo_store, demo_spec):
    t = load_task(demo_store, demo_spec.split.seeds[0])
    # shrink to a few molecules per fold so an overfit test is quick
    for f, n in (("train", 24), ("valid", 8), ("test", 8)):
        t.folds[f] = t.folds[f].subset(slice(0, n))
    return t


@pytest.fixture(scope="module")
def lf_checkpoints(demo_store, tmp_path_factory):
    out = {}
    for readout, kw in (("sum", {}), ("set_transformer", ST_SMALL)):
        model = dict(SMALL)
        cfg = LFRunConfig(readout=readout, model={**model, "readout_kwargs": kw},
                          train=TrainConfig(lr=1e-3, batch_size=64, max_epochs=2, patience=0), max_molecules=200)
        path, res = pretrain_lf(demo_store, cfg, tmp_path_factory.mktemp(f"lf_{readout}"))
        assert res.epochs_run == 2
        out[readout] = str(path)
    return out


def test_the_paper_strategies_and_delta_are_registered():
    assert set(STRATEGIES.names()) == {"base", "label", "predicted_label", "hybrid_label", "embeddings",
                                       "tune_vgae", "tune_readout", "delta"}


@pytest.mark.parametrize("strategy", ["base", "label", "predicted_label", "hybrid_label", "embeddings"])
def test_strategy_overfits_a_few_molecules(task, strategy, tmp_path):
    cfg = HFRunConfig(strategy=strategy, model=SMALL,
                      train=TrainConfig(lr=3e-3, batch_size=8, max_epochs=80, patience=0, kl_weight=0.0))
    res = train_hf(task, cfg, tmp_path)
    first, last = res.fit.history[0].parts["task"], min(h.parts["task"] for h in res.fit.history)
    assert last < 0.2 * first, (strategy, first, last)
    for name in ("best.ckpt", "predictions.parquet", "metrics.json", "history.json"):
        assert (tmp_path / name).exists()


@pytest.mark.parametrize("strategy", ["tune_vgae", "tune_readout"])
def test_pretrained_strategies(task, lf_checkpoints, strategy, tmp_path):
    import torch

    readout = "sum" if strategy == "tune_vgae" else "set_transformer"
    cfg = HFRunConfig(strategy=strategy, lf_checkpoint=lf_checkpoints[readout],
                      train=TrainConfig(lr=3e-3, batch_size=8, max_epochs=60, patience=0, kl_weight=0.0))
    res = train_hf(task, cfg, tmp_path)
    first, last = res.fit.history[0].parts["task"], min(h.parts["task"] for h in res.fit.history)
    assert last < 0.3 * first
    lf = torch.load(lf_checkpoints[readout], weights_only=True)["state_dict"]
    hf = torch.load(tmp_path / "best.ckpt", weights_only=True)["state_dict"]
    enc = [k for k in lf if k.startswith("encoder.")]
    if strategy == "tune_readout":  # encoder frozen: identical to the LF model, BN statistics included
        assert all(torch.equal(lf[k], hf[k]) for k in enc)
        assert res.n_trainable < res.n_params
    else:  # everything fine-tuned
        assert any(not torch.equal(lf[k], hf[k]) for k in enc if lf[k].is_floating_point())
        assert res.n_trainable == res.n_params


def test_lf_model_as_input_source(task, lf_checkpoints, demo_store):
    cfg = HFRunConfig(strategy="embeddings", model=SMALL, lf_checkpoint=lf_checkpoints["set_transformer"],
                      train=TrainConfig(max_epochs=2, patience=0))
    res = train_hf(task, cfg)
    assert res.model_spec.aux_dim == 16
    table = embed_store(lf_checkpoints["set_transformer"], demo_store)
    assert table.num_rows == 655 and str(table.schema.field("embedding").type) == "fixed_size_list<item: float>[16]"
    assert np.isfinite(table.column("prediction").to_numpy()).all()


def test_strategy_errors_are_clear(task):
    with pytest.raises(MfrayError, match="give an LF checkpoint"):
        train_hf(task, HFRunConfig(strategy="tune_readout"))
    with pytest.raises(MfrayError, match="no LF input 'artifact:Nope'"):
        train_hf(task, HFRunConfig(strategy="predicted_label", lf_prediction="artifact:Nope"))
    gap = load_task(task.store, task.seed)
    gap.test.aux["lf_label"][0] = np.nan
    with pytest.raises(MfrayError, match="1 of 66 test molecules have no value.*use hybrid_label"):
        train_hf(gap, HFRunConfig(strategy="label", train=TrainConfig(max_epochs=1)))


def test_same_seed_same_model(task):
    """Deterministic seeding: the initial weights, shuffling and VGAE negatives depend on the seed only."""
    import torch

    cfg = HFRunConfig(strategy="label", model=SMALL, train=TrainConfig(max_epochs=3, patience=0, seed=5))
    torch.manual_seed(123)  # unrelated RNG state before the run must not matter
    a = train_hf(task, cfg).predictions
    torch.rand(10)
    b = train_hf(task, cfg).predictions
    assert a.equals(b)
    # and in the transductive setting hybrid_label is label, molecule by molecule
    h = train_hf(task, HFRunConfig(strategy="hybrid_label", model=SMALL, train=cfg.train)).predictions
    assert h.equals(a)
