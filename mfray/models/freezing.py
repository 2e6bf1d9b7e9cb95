"""Freezing named stages: parameters, BatchNorm statistics and VGAE sampling noise together.

A frozen stage gets ``requires_grad = False`` *and* stays in eval mode during training, so its
BatchNorm running statistics do not drift and a frozen VGAE encoder returns ``mu`` (no sampling
noise). The reference implementation froze parameters only (METHOD.md section 6). Which stages are
frozen is decided by the transfer strategy (a :class:`mfray.transfer.FreezePlan`) and passed to the
training loop explicitly; nothing is stored on the model besides the parameters' own flags.
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


def freeze(model: MFModel, names: Iterable[str]) -> set[str]:
    """Freeze the named stages (``encoder``, ``readout``, ``head``) and unfreeze the others; returns the
    frozen set."""
    frozen = check_stages(names)
    for name, stage in model.stages().items():
        for p in stage.parameters():
            p.requires_grad_(name not in frozen)
    return frozen


def frozen_stages(model: MFModel) -> set[str]:
    """The stages none of whose parameters train (read off ``requires_grad``)."""
    return {name for name, stage in model.stages().items()
            if any(True for _ in stage.parameters()) and not any(p.requires_grad for p in stage.parameters())}


def train_mode(model: MFModel, frozen: Iterable[str] = ()) -> None:
    """``model.train()`` but the ``frozen`` stages stay in eval mode (BN statistics, no VGAE noise)."""
    frozen = check_stages(frozen)
    model.train()
    for name, stage in model.stages().items():
        if name in frozen:
            stage.eval()
    enc = model.encoder
    if hasattr(enc, "sample"):
        enc.sample = "encoder" not in frozen


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]
