"""Node encoders: message-passing GNNs from dense atom features to node embeddings.

Every encoder is registered in :data:`ENCODERS` and shares one interface:

- constructor ``(in_dim, hidden_dim=256, num_layers=3, edge_dim=None, dropout=0.0)``;
- ``forward(x, edge_index, edge_attr=None, batch=None) -> [N, out_dim]`` with ``out_dim == hidden_dim``;
- ``layers``: an ``nn.ModuleList`` of :class:`EncoderLayer` (conv -> BatchNorm -> ReLU -> dropout), so
  that freezing code can address layer ``i`` (its conv and its BatchNorm statistics) by index;
- ``reset_parameters()`` and a one-line ``__repr__`` with the constructor arguments (``hparams``).

GCN and GIN ignore bond features (``edge_dim`` is accepted for a uniform spec and ignored); GIN-E
uses them and requires ``edge_dim``.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from torch_geometric.nn import GCNConv, GINConv, GINEConv

from mfray.nn.norm import SafeBatchNorm1d
from mfray.utils.registry import Registry

ENCODERS: Registry[GNNEncoder] = Registry("encoder")


class EncoderLayer(nn.Module):
    """One message-passing layer: ``conv -> BatchNorm1d -> ReLU -> dropout``.

    Args:
        conv: a PyG convolution mapping ``[N, in] -> [N, out]``.
        out_dim: its output width (the BatchNorm width).
        dropout: dropout probability after the ReLU.
        uses_edge_attr: whether ``conv`` is called as ``conv(x, edge_index, edge_attr)``.

    Shapes:
        x ``[N, in]``, edge_index ``[2, E]``, edge_attr ``[E, edge_dim]`` -> ``[N, out_dim]``.
    """

    def __init__(self, conv: nn.Module, out_dim: int, dropout: float = 0.0, uses_edge_attr: bool = False) -> None:
        super().__init__()
        self.conv = conv
        self.norm = SafeBatchNorm1d(out_dim)
        self.act = nn.ReLU()
        self.dropout = nn.Dropout(dropout)
        self.uses_edge_attr = uses_edge_attr

    def reset_parameters(self) -> None:
        self.conv.reset_parameters()
        self.norm.reset_parameters()

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor | None = None) -> Tensor:
        h = self.conv(x, edge_index, edge_attr) if self.uses_edge_attr else self.conv(x, edge_index)
        return self.dropout(self.act(self.norm(h)))


class GNNEncoder(nn.Module):
    """Base class: a stack of :class:`EncoderLayer` built by :meth:`make_conv`.

    Args:
        in_dim: width of the atom features ``x``.
        hidden_dim: width of every layer and of the output (``out_dim``). Default 256 (METHOD sec 3).
        num_layers: number of message-passing layers. Default 3.
        edge_dim: width of the bond features; required by encoders that use them.
        dropout: dropout after every ReLU. Default 0.0.

    Shapes:
        x ``[N, in_dim]`` float, edge_index ``[2, E]`` int64 (both directions), edge_attr
        ``[E, edge_dim]`` or None, batch ``[N]`` (unused by message passing; part of the interface)
        -> ``[N, out_dim]``.
    """

    uses_edge_attr: bool = False

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int = 256,
        num_layers: int = 3,
        edge_dim: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if in_dim <= 0 or hidden_dim <= 0:
            raise ValueError(
                f"{type(self).__name__}: in_dim and hidden_dim must be positive (got {in_dim}, {hidden_dim})"
            )
        if num_layers < 1:
            raise ValueError(f"{type(self).__name__}: num_layers must be >= 1 (got {num_layers})")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"{type(self).__name__}: dropout must be in [0, 1) (got {dropout})")
        self.in_dim = in_dim
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.edge_dim = edge_dim
        self.dropout = dropout
        self.out_dim = hidden_dim
        dims = [in_dim] + [hidden_dim] * num_layers
        self.layers = nn.ModuleList(
            EncoderLayer(self.make_conv(a, b), b, dropout, self.uses_edge_attr) for a, b in zip(dims[:-1], dims[1:])
        )
        self.reset_parameters()

    @property
    def hparams(self) -> dict[str, Any]:
        """The constructor arguments: with the registry key, enough to rebuild this encoder."""
        return {
            "in_dim": self.in_dim,
            "hidden_dim": self.hidden_dim,
            "num_layers": self.num_layers,
            "edge_dim": self.edge_dim,
            "dropout": self.dropout,
        }

    def make_conv(self, in_dim: int, out_dim: int) -> nn.Module:
        raise NotImplementedError

    def reset_parameters(self) -> None:
        for layer in self.layers:
            layer.reset_parameters()

    def forward(
        self, x: Tensor, edge_index: Tensor, edge_attr: Tensor | None = None, batch: Tensor | None = None
    ) -> Tensor:
        if x.dim() != 2 or x.size(1) != self.in_dim:
            raise ValueError(f"{type(self).__name__}: expected x of shape [N, {self.in_dim}], got {list(x.shape)}")
        if self.uses_edge_attr:
            if edge_attr is None:
                raise ValueError(f"{type(self).__name__} uses bond features: pass edge_attr [E, {self.edge_dim}]")
            if edge_attr.dim() != 2 or edge_attr.size(1) != self.edge_dim:
                raise ValueError(
                    f"{type(self).__name__}: expected edge_attr of shape [E, {self.edge_dim}], "
                    f"got {list(edge_attr.shape)}"
                )
        h = x
        for layer in self.layers:
            h = layer(h, edge_index, edge_attr)
        return h

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.hparams.items())
        return f"{type(self).__name__}({args}, out_dim={self.out_dim})"


def _gin_mlp(in_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.ReLU(), nn.Linear(out_dim, out_dim))


@ENCODERS.register("gcn")
class GCNEncoder(GNNEncoder):
    """Graph convolutional network (Kipf & Welling 2017): symmetric-normalised ``GCNConv`` with self-loops.

    The encoder of the paper's VGAE. Ignores bond features. See :class:`GNNEncoder` for arguments.
    """

    def make_conv(self, in_dim: int, out_dim: int) -> nn.Module:
        return GCNConv(in_dim, out_dim)


@ENCODERS.register("gin")
class GINEncoder(GNNEncoder):
    """Graph isomorphism network (Xu et al. 2019): ``GINConv`` with a ``Linear-ReLU-Linear`` MLP, eps = 0.

    Ignores bond features. See :class:`GNNEncoder` for arguments.
    """

    def make_conv(self, in_dim: int, out_dim: int) -> nn.Module:
        return GINConv(_gin_mlp(in_dim, out_dim))


@ENCODERS.register("gine")
class GINEEncoder(GNNEncoder):
    """GIN with bond features (Hu et al. 2020): ``GINEConv``, bond features projected to each layer's width.

    Requires ``edge_dim`` (the bond feature width) and ``edge_attr`` in ``forward``.
    See :class:`GNNEncoder` for arguments.
    """

    uses_edge_attr = True

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int = 256,
        num_layers: int = 3,
        edge_dim: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        if edge_dim is None or edge_dim <= 0:
            raise ValueError(
                f"GINEEncoder uses bond features and needs edge_dim (the bond feature width), got {edge_dim!r}; "
                "use the 'gin' or 'gcn' encoder to ignore bond features"
            )
        super().__init__(in_dim, hidden_dim, num_layers, edge_dim, dropout)

    def make_conv(self, in_dim: int, out_dim: int) -> nn.Module:
        return GINEConv(_gin_mlp(in_dim, out_dim), edge_dim=self.edge_dim)
