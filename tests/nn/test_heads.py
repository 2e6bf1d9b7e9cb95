"""Prediction heads."""

from __future__ import annotations

import pytest
import torch

from mfray.nn import HEADS, MLPHead
from mfray.utils.registry import RegistryError


def test_mlp_head_shapes_and_registry():
    torch.manual_seed(0)
    head = HEADS.build("mlp", in_dim=12, hidden_dim=16, out_dim=3)
    assert isinstance(head, MLPHead) and head.out_dim == 3
    assert head(torch.randn(5, 12)).shape == (5, 3)
    assert repr(head) == "MLPHead(in_dim=12, hidden_dim=16, out_dim=3, dropout=0.0)"
    assert MLPHead(8).hparams == {"in_dim": 8, "hidden_dim": 256, "out_dim": 1, "dropout": 0.0}
    with pytest.raises(RegistryError, match="unknown argument"):
        HEADS.build("mlp", in_dim=4, hiden_dim=3)


def test_mlp_head_batch_of_one_in_training_does_not_crash_or_move_stats():
    torch.manual_seed(0)
    head = MLPHead(6, hidden_dim=8).train()
    head(torch.randn(32, 6))
    stats = head.norm.running_mean.clone()
    out = head(torch.randn(1, 6))
    assert out.shape == (1, 1) and torch.isfinite(out).all()
    assert torch.equal(head.norm.running_mean, stats)
    out.sum().backward()
    assert head.lin1.weight.grad is not None


def test_mlp_head_validates_inputs():
    with pytest.raises(ValueError, match="dropout"):
        MLPHead(4, dropout=1.0)
    with pytest.raises(ValueError, match=r"expected input of shape \[B, 4\]"):
        MLPHead(4)(torch.randn(2, 5))


def test_reset_parameters_changes_weights():
    torch.manual_seed(0)
    head = MLPHead(4, hidden_dim=8)
    w = head.lin1.weight.clone()
    head.reset_parameters()
    assert not torch.equal(w, head.lin1.weight)
