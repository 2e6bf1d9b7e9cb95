"""Freezing named stages: parameters, BatchNorm statistics and VGAE sampling noise together.

A frozen stage gets ``requires_grad = False`` *and* stays in eval mode during training, so its
BatchNorm running statistics do not drift and a frozen VGAE encoder returns ``mu`` (no sampling
noise). The reference implementation froze parameters only (METHOD.md section 6).
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from mfray.models.model import STAGES, MFModel


def check_stages(names: Iterable[str]) -> set[str]:
    names = set(names)
    bad = sorted(names - set(STAGES))
    if bad:
        raise ValueError(f"unknown stage(s) {bad}; stages are {list(STAGES)}")
    return names


def freeze(model: MFModel, names: Iterable[str]) -> None:
    """Freeze the named stages (``encoder``, ``readout``, ``head``) and unfreeze the others."""
    frozen = check_stages(names)
    for name, stage in model.stages().items():
        for p in stage.parameters():
            p.requires_grad_(name not in frozen)
    model._frozen = frozen  # read by train_mode(); a set of names, not tensors


def frozen_stages(model: MFModel) -> set[str]:
    return set(getattr(model, "_frozen", set()))


def train_mode(model: MFModel) -> None:
    """``model.train()`` but frozen stages stay in eval mode (BN statistics, no VGAE noise)."""
    model.train()
    frozen = frozen_stages(model)
    for name, stage in model.stages().items():
        if name in frozen:
            stage.eval()
    enc = model.encoder
    if hasattr(enc, "sample"):
        enc.sample = "encoder" not in frozen


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]
