"""A fit state resumes training exactly where it stopped; LF pretraining pieces shard the data."""

import io

import numpy as np
import pytest
import torch

from mfray.models.freezing import frozen_stages
from mfray.transfer import FreezePlan
from mfray.train.loop import ResumeError, TrainConfig, fit, fit_result_from_state
from mfray.train.task import LFRunConfig, lf_setup, prepare_lf, shard_indices

SMALL = {"hidden_dim": 32, "latent_dim": 8, "head_hidden_dim": 32}
ST_SMALL = {"hidden_dim": 16, "num_heads": 2, "num_seeds": 2, "out_dim": 16}


def _cfg(readout="set_transformer", **train):
    kw = {"readout_kwargs": ST_SMALL} if readout == "set_transformer" else {}
    t = {"lr": 1e-3, "batch_size": 32, "max_epochs": 4, "patience": 0, **train}
    return LFRunConfig(readout=readout, model={**SMALL, **kw}, train=TrainConfig(**t), max_molecules=120)


def _roundtrip(state):
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def _run(store, cfg, freeze_stages=(), resume=None, checkpoint_every=1, unfreeze_epoch=None):
    prep = prepare_lf(store, cfg)
    states = []
    res = fit(prep.model, prep.train, prep.valid, cfg.train, resume=resume, checkpoint_every=checkpoint_every,
              freeze_plan=FreezePlan.of(freeze_stages, unfreeze_epoch),
              on_checkpoint=lambda s: states.append(_roundtrip(s)))
    return prep.model, res, states


def _losses(res):
    return [(h.epoch, h.train_loss, h.valid_loss, h.lr, h.parts) for h in res.history]


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("at", [0, 2])
def test_resume_equals_uninterrupted(demo_store, at):
    cfg = _cfg()
    full_model, full, states = _run(demo_store, cfg)
    assert [s["epoch"] for s in states] == [0, 1, 2, 3] and full.resumed_from_epoch is None
    model, res, _ = _run(demo_store, cfg, resume=states[at])
    assert res.resumed_from_epoch == at + 1 and res.epochs_run == 4
    assert _losses(res) == _losses(full)
    assert res.best_epoch == full.best_epoch and res.best_valid_loss == full.best_valid_loss
    assert _same_weights(model, full_model)
    assert fit_result_from_state(states[-1]).best_epoch == full.best_epoch


def test_resume_extends_a_finished_run_and_keeps_unfreezing(demo_store):
    """A run of 2 epochs resumed with max_epochs 4 equals a 4-epoch run, also across gradual unfreezing."""
    long = _cfg(readout="sum")
    full_model, full, _ = _run(demo_store, long, freeze_stages=["encoder"], unfreeze_epoch=2)
    short = _cfg(readout="sum", max_epochs=2)
    _, _, states = _run(demo_store, short, freeze_stages=["encoder"], checkpoint_every=0, unfreeze_epoch=2)
    assert [s["epoch"] for s in states] == [1] and states[0]["frozen"] == ["encoder"]
    model, res, states2 = _run(demo_store, long, freeze_stages=["encoder"], resume=states[0], unfreeze_epoch=2)
    assert not frozen_stages(model) and states2[-1]["frozen"] == []
    assert _losses(res) == _losses(full) and _same_weights(model, full_model)


def test_early_stop_checkpoints_and_stays_stopped(demo_store):
    cfg = _cfg(readout="sum", lr=0.0, patience=1, max_epochs=10)  # lr 0: no improvement after epoch 0
    _, res, states = _run(demo_store, cfg, checkpoint_every=0)
    assert res.stopped_early and res.epochs_run == 2 and len(states) == 1 and states[0]["stopped"]
    _, again, more = _run(demo_store, cfg, resume=states[0])
    assert again.epochs_run == 2 and more == []


def test_resume_refuses_mismatched_states(demo_store):
    _, _, states = _run(demo_store, _cfg(readout="sum", max_epochs=1))
    prep = prepare_lf(demo_store, _cfg(readout="sum"))
    with pytest.raises(ResumeError, match="frozen stages"):
        fit(prep.model, prep.train, prep.valid, TrainConfig(max_epochs=2), resume=states[0],
            freeze_plan=FreezePlan.of(["encoder"]))
    with pytest.raises(ResumeError, match="format"):
        fit(prep.model, prep.train, prep.valid, TrainConfig(max_epochs=2), resume={"epoch": 0})


def test_max_steps_per_epoch_and_throughput(demo_store):
    cfg = _cfg(readout="sum", max_epochs=1, max_steps_per_epoch=2, batch_size=16)
    _, res, _ = _run(demo_store, cfg)
    h = res.history[0]
    assert h.steps == 2 and h.graphs == 32 and h.graphs_per_s > 0 and h.train_seconds <= h.seconds


def test_prepare_lf_shards(demo_store):
    cfg = _cfg(readout="sum")
    setup = lf_setup(demo_store, cfg)
    parts = [prepare_lf(demo_store, cfg, rank=r, world_size=2) for r in range(2)]
    ids = np.concatenate([p.train.mol_ids for p in parts])
    assert sorted(ids.tolist()) == sorted(setup.train_ids.tolist())
    assert abs(len(parts[0].train) - len(parts[1].train)) <= 1
    assert sum(len(p.valid) for p in parts) == len(setup.valid_ids)
    a, b = (p.model.state_dict() for p in parts)
    assert all(torch.equal(a[k], b[k]) for k in a)  # same seeded initial weights on every rank
    assert shard_indices(5, 1, 2).tolist() == [1, 3]
