"""Node encoders: shapes, layer structure, bond-feature handling, reset, gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mfray.nn import ENCODERS, GINEEncoder, SafeBatchNorm1d
from mfray.utils.registry import RegistryError

NAMES = ENCODERS.names()


def build(name: str, graphs, **kw):
    torch.manual_seed(0)
    return ENCODERS.build(name, in_dim=graphs.node_dim, hidden_dim=32, edge_dim=graphs.edge_dim, **kw)


def test_registry_holds_gcn_gin_gine():
    assert {"gcn", "gin", "gine"} <= set(NAMES)


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("name", NAMES)
def test_shapes_and_layers(name, train, graphs):
    enc = build(name, graphs).train(train)
    mb = graphs.make_batch(graphs.molecules)
    out = enc(mb.x, mb.edge_index, mb.edge_attr, mb.batch)
    assert enc.out_dim == 32 and out.shape == (mb.x.size(0), 32)
    assert torch.isfinite(out).all() and (out >= 0).all()  # ends with ReLU
    assert isinstance(enc.layers, nn.ModuleList) and len(enc.layers) == 3
    for layer in enc.layers:  # conv -> BatchNorm -> ReLU, addressable per layer for freezing
        assert isinstance(layer.norm, nn.BatchNorm1d)


@pytest.mark.parametrize("name", NAMES)
def test_single_atom_batch_in_training_mode(name, graphs):
    enc = build(name, graphs).train()
    mb = graphs.make_batch(["C"])
    out = enc(mb.x, mb.edge_index, mb.edge_attr, mb.batch)
    assert out.shape == (1, 32) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", NAMES)
def test_reset_parameters_changes_weights(name, graphs):
    enc = build(name, graphs)
    before = {k: v.clone() for k, v in enc.named_parameters()}
    torch.manual_seed(1)
    enc.reset_parameters()
    changed = [k for k, v in enc.named_parameters() if not torch.equal(before[k], v)]
    weights = [k for k, v in before.items() if v.dim() >= 2]
    assert weights and set(weights) <= set(changed)


@pytest.mark.parametrize("name", NAMES)
def test_gradients_flow_to_every_parameter(name, graphs):
    enc = build(name, graphs).train()
    mb = graphs.make_batch(graphs.molecules)
    enc(mb.x, mb.edge_index, mb.edge_attr, mb.batch).pow(2).sum().backward()
    for pname, p in enc.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), pname


def test_gine_needs_edge_dim_and_edge_attr(graphs):
    with pytest.raises(ValueError, match="needs edge_dim"):
        GINEEncoder(in_dim=graphs.node_dim)
    with pytest.raises(ValueError, match="needs edge_dim"):
        ENCODERS.build("gine", in_dim=graphs.node_dim)
    enc = build("gine", graphs)
    mb = graphs.make_batch(graphs.molecules)
    with pytest.raises(ValueError, match="pass edge_attr"):
        enc(mb.x, mb.edge_index)
    with pytest.raises(ValueError, match="expected edge_attr of shape"):
        enc(mb.x, mb.edge_index, mb.edge_attr[:, :2])


def test_gine_uses_bond_features_and_gcn_ignores_them(graphs):
    mb = graphs.make_batch(["C=CC#N", "c1ccccc1"])
    other = torch.roll(mb.edge_attr, 1, dims=1)
    for name, uses in (("gine", True), ("gcn", False), ("gin", False)):
        enc = build(name, graphs).eval()
        a = enc(mb.x, mb.edge_index, mb.edge_attr)
        b = enc(mb.x, mb.edge_index, other)
        assert torch.allclose(a, b) != uses, name


def test_wrong_input_width_and_unknown_kwargs(graphs):
    enc = build("gcn", graphs)
    mb = graphs.make_batch(["CCO"])
    with pytest.raises(ValueError, match="expected x of shape"):
        enc(mb.x[:, :3], mb.edge_index)
    with pytest.raises(RegistryError, match="unknown argument"):
        ENCODERS.build("gcn", in_dim=4, hidden=8)


def test_repr_is_informative(graphs):
    text = repr(build("gine", graphs, num_layers=2, dropout=0.1))
    assert text == (
        f"GINEEncoder(in_dim={graphs.node_dim}, hidden_dim=32, num_layers=2, edge_dim={graphs.edge_dim}, "
        "dropout=0.1, out_dim=32)"
    )


def test_safe_batchnorm_with_one_row_uses_and_keeps_running_stats():
    torch.manual_seed(0)
    bn = SafeBatchNorm1d(4)
    bn.train()(torch.randn(16, 4) * 3 + 1)  # move the running stats
    mean, var, seen = bn.running_mean.clone(), bn.running_var.clone(), int(bn.num_batches_tracked)
    x = torch.randn(1, 4)
    out = bn.train()(x)
    assert torch.equal(bn.running_mean, mean) and torch.equal(bn.running_var, var)
    assert int(bn.num_batches_tracked) == seen
    torch.testing.assert_close(out, bn.eval()(x))


@pytest.mark.parametrize("name", NAMES)
def test_hparams_rebuild_the_same_encoder(name, graphs):
    enc = build(name, graphs, num_layers=2, dropout=0.2)
    again = ENCODERS.build(name, **enc.hparams)
    assert repr(again) == repr(enc)
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in enc.state_dict().items()}
