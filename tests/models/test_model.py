import numpy as np
import pytest
import torch

from mfray.chem.featurizers import build_featurizers
from mfray.data.collate import collate_graphs
from mfray.models import ModelSpec, build_model
from mfray.models.checkpoint import load_checkpoint, load_model, save_checkpoint
from mfray.models.freezing import freeze, train_mode

SMALL = dict(hidden_dim=32, latent_dim=8, head_hidden_dim=16)


@pytest.fixture(scope="module")
def batch(demo_store):
    ids = demo_store.table("molecules")["mol_id"].to_numpy()[:12]
    a, b = build_featurizers("paper", 35)
    return collate_graphs(demo_store.graphs(ids), a, b)


def test_widths_are_derived_from_the_featuriser(batch):
    m = build_model(ModelSpec(featurizer="paper", max_atomic_number=35, aux_dim=3, **SMALL))
    assert m.expander.node_dim == 62
    assert m.head.hparams["in_dim"] == 3 * 8 + 3  # sum||mean||max of 8-d latents + aux
    out = m(batch, torch.zeros(12, 3))
    assert out.pred.shape == (12, 1) and out.graph.shape == (12, 24) and out.mu is not None
    with pytest.raises(ValueError, match="augmentation vector of width 3"):
        m(batch)


def test_plain_gnn_encoders(batch):
    for enc in ("gin", "gine"):
        m = build_model(ModelSpec(featurizer="paper", max_atomic_number=35, encoder=enc, vgae=False, readout="mean", **SMALL))
        m.eval()
        assert m(batch).pred.shape == (12, 1)
    with pytest.raises(ValueError, match="set vgae = false"):
        build_model(ModelSpec(encoder="gin"))


def test_freezing_keeps_weights_bn_stats_and_noise_fixed(batch):
    torch.manual_seed(0)
    m = build_model(ModelSpec(featurizer="paper", max_atomic_number=35, readout="attention", **SMALL))
    freeze(m, ["encoder"])
    before = {k: v.clone() for k, v in m.state_dict().items()}
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        train_mode(m, ["encoder"])
        out = m(batch)
        loss = out.pred.pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = m.state_dict()
    enc = [k for k in before if k.startswith("encoder.")]
    assert any("running_mean" in k for k in enc)
    assert all(torch.equal(before[k], after[k]) for k in enc), "frozen encoder changed (weights or BN statistics)"
    trainable = [k for k in before if k.startswith(("readout.", "head.")) and before[k].is_floating_point()]
    assert any(not torch.equal(before[k], after[k]) for k in trainable)
    # a frozen VGAE encoder gives mu, not a sample, even in training mode
    train_mode(m, ["encoder"])
    o = m(batch)
    assert torch.equal(o.z, o.mu)
    freeze(m, [])
    train_mode(m)
    o = m(batch)
    assert not torch.equal(o.z, o.mu)


def test_checkpoint_roundtrip_with_weights_only(tmp_path, batch):
    m = build_model(ModelSpec(featurizer="paper", max_atomic_number=35, **SMALL))
    m.eval()
    path = save_checkpoint(tmp_path / "m.ckpt", m, kind="hf", scalers={"y": {"mean": [1.0], "std": [2.0]}}, meta={"seed": 3})
    raw = torch.load(path, weights_only=True)
    assert raw["model_spec"]["hidden_dim"] == 32 and raw["meta"]["seed"] == 3
    m2, ckpt = load_model(path)
    assert torch.allclose(m(batch).pred, m2(batch).pred)
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(Exception, match="not an mfray checkpoint"):
        load_checkpoint(tmp_path / "junk.ckpt")
