"""ModelSpec: everything needed to rebuild a model, carried inside its checkpoint.

Widths are derived, never typed: the node/edge input widths come from the featuriser preset, the
head input from the readout's ``out_dim`` plus the augmentation width ``aux_dim``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ModelSpec(BaseModel):
    """A multi-fidelity GNN: featuriser -> encoder (supervised VGAE or plain GNN) -> readout -> head.

    Defaults follow the paper's HF model (METHOD.md sections 3-5): GCN supervised VGAE with 3 x 256
    hidden layers and 50-d latents, sum||mean||max readout (150-d), MLP head with 256 hidden units.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    featurizer: Literal["default", "paper"] = "default"
    max_atomic_number: int | None = Field(default=None, ge=1, le=118)
    encoder: str = "gcn"
    hidden_dim: int = Field(default=256, ge=1)
    num_layers: int = Field(default=3, ge=1)
    vgae: bool = True
    latent_dim: int = Field(default=50, ge=1)
    encoder_kwargs: dict[str, Any] = {}
    readout: str = "sum_mean_max"
    readout_kwargs: dict[str, Any] = {}
    head: str = "mlp"
    head_hidden_dim: int = Field(default=256, ge=1)
    head_kwargs: dict[str, Any] = {}
    n_targets: int = Field(default=1, ge=1)
    aux_dim: int = Field(default=0, ge=0)
    task_type: Literal["regression", "classification"] = "regression"


#: LF model sizes (``mfray pretrain --size``, a study's ``[pretrain] size``): ModelSpec overrides, with
#: ``readout_kwargs`` per readout. "paper": the defaults (GCN supervised VGAE 3 x 256, 50-d latents;
#: Set Transformer 1024 wide, 16 heads, 32 seeds, 256 out: ~14.4 M parameters). "cpu": the same encoder
#: and a Set Transformer 256 wide, 8 heads, 8 seeds, 256 out (the embedding keeps its width): ~1.2 M
#: parameters, several times the throughput on a CPU (benchmarks/pretrain_throughput.py --size cpu).
LF_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "cpu": {"readout_kwargs": {"set_transformer": {"hidden_dim": 256, "num_heads": 8, "num_seeds": 8, "out_dim": 256}}},
}


def lf_preset(size: str, readout: str) -> dict[str, Any]:
    """The ModelSpec overrides of LF size ``size`` for an LF model with ``readout``: the preset's model
    keys plus its ``readout_kwargs`` for that readout (if it has any). Raises KeyError for unknown sizes."""
    preset = LF_PRESETS[size]
    out = {k: v for k, v in preset.items() if k != "readout_kwargs"}
    if readout in preset.get("readout_kwargs", {}):
        out["readout_kwargs"] = dict(preset["readout_kwargs"][readout])
    return out
