"""Prediction heads: graph vector (plus any augmentation vector) -> targets.

Every head is registered in :data:`HEADS`. The augmentation vector of the transfer strategies (LF
labels, LF embeddings; METHOD sec 5) is concatenated to the graph vector by the caller, after the
readout and before the head, so ``in_dim`` is the readout's ``out_dim`` plus the augmentation width.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from mfray.nn.norm import SafeBatchNorm1d
from mfray.utils.registry import Registry

HEADS: Registry[nn.Module] = Registry("head")


@HEADS.register("mlp")
class MLPHead(nn.Module):
    """``Linear(in_dim -> hidden_dim) -> BatchNorm1d -> ReLU -> dropout -> Linear(hidden_dim -> out_dim)``.

    The paper's head (METHOD sec 5). The BatchNorm is a :class:`~mfray.nn.norm.SafeBatchNorm1d`: a
    training batch of ONE molecule (e.g. the last, incomplete HF batch) is normalised with the running
    statistics, as in evaluation mode, and does not update them, instead of raising as
    ``nn.BatchNorm1d`` does. Batches of two or more behave exactly like ``nn.BatchNorm1d``.

    Args:
        in_dim: width of the input (graph vector + augmentation).
        hidden_dim: hidden width. Default 256.
        out_dim: number of targets. Default 1.
        dropout: dropout after the ReLU. Default 0.0.

    Shapes:
        x ``[B, in_dim]`` -> ``[B, out_dim]``.
    """

    def __init__(self, in_dim: int, hidden_dim: int = 256, out_dim: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        if min(in_dim, hidden_dim, out_dim) <= 0:
            raise ValueError(f"MLPHead: widths must be positive (got {in_dim}, {hidden_dim}, {out_dim})")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"MLPHead: dropout must be in [0, 1) (got {dropout})")
        self.in_dim = in_dim
        self.hidden_dim = hidden_dim
        self.out_dim = out_dim
        self.dropout = dropout
        self.lin1 = nn.Linear(in_dim, hidden_dim)
        self.norm = SafeBatchNorm1d(hidden_dim)
        self.act = nn.ReLU()
        self.drop = nn.Dropout(dropout)
        self.lin2 = nn.Linear(hidden_dim, out_dim)
        self.reset_parameters()

    @property
    def hparams(self) -> dict[str, Any]:
        """The constructor arguments (enough to rebuild the head)."""
        return {"in_dim": self.in_dim, "hidden_dim": self.hidden_dim, "out_dim": self.out_dim, "dropout": self.dropout}

    def reset_parameters(self) -> None:
        self.lin1.reset_parameters()
        self.norm.reset_parameters()
        self.lin2.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 2 or x.size(1) != self.in_dim:
            raise ValueError(f"MLPHead: expected input of shape [B, {self.in_dim}], got {list(x.shape)}")
        return self.lin2(self.drop(self.act(self.norm(self.lin1(x)))))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.hparams.items())
        return f"{type(self).__name__}({args})"
