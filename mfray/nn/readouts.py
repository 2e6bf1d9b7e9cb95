"""Readouts: node embeddings of a batch of molecules -> one vector per molecule.

Every readout is registered in :data:`READOUTS` and shares one interface (checked by the contract
tests in ``tests/nn/test_readouts.py`` for every registered name):

- constructor ``(in_dim, **readout-specific keyword arguments)`` with an ``out_dim`` attribute;
- ``forward(h [N, in_dim], batch [N], num_graphs) -> [num_graphs, out_dim]``;
- permutation invariant within a molecule, and a molecule's vector does not depend on what else is
  in the batch (so no BatchNorm, and attention readouts mask their padding);
- works for single-atom molecules and batches of one;
- ``reset_parameters()`` and a one-line ``__repr__`` with the constructor arguments (``hparams``).

``batch`` must be sorted (nodes of molecule 0, then molecule 1, ...), as PyG builds it. Molecules with
no nodes get the readout of an empty set (zeros for the fixed readouts) rather than an error.

Fixed: ``sum``, ``mean``, ``max``, ``sum_mean_max`` (the reference HF model's 3 x in_dim readout).
Adaptive (Buterez et al. NeurIPS 2022, METHOD sec 4): ``set_transformer`` (the paper's), ``gmt``,
``attention``, ``deepsets``.

The attention readouts pad each batch to its own largest molecule (``to_dense_batch``) and pass a key
mask to every attention, so padding rows never contribute: the reference padded to a global maximum
without any mask, making every vector depend on the padding.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.utils import scatter, softmax, to_dense_batch

from mfray.utils.registry import Registry

READOUTS: Registry[Readout] = Registry("readout")


class Readout(nn.Module):
    """Base class: validates inputs once, then calls :meth:`pool`.

    Args:
        in_dim: width of the node embeddings.
        out_dim: width of the graph vectors.
        hparams: the subclass's other constructor arguments as given (recorded for ``hparams``, which
            rebuilds the readout with ``READOUTS.build(name, **readout.hparams)``, and ``__repr__``).
    """

    def __init__(self, in_dim: int, out_dim: int, hparams: dict[str, Any] | None = None) -> None:
        super().__init__()
        if in_dim <= 0:
            raise ValueError(f"{type(self).__name__}: in_dim must be positive (got {in_dim})")
        self.in_dim = in_dim
        self.out_dim = out_dim
        self._hparams = {"in_dim": in_dim, **(hparams or {})}

    @property
    def hparams(self) -> dict[str, Any]:
        """The constructor arguments (with the registry key, enough to rebuild the readout)."""
        return dict(self._hparams)

    def reset_parameters(self) -> None:
        for child in self.children():
            _reset(child)

    def forward(self, h: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
        """Pool ``h [N, in_dim]`` by ``batch [N]`` into ``[num_graphs, out_dim]``."""
        if h.dim() != 2 or h.size(1) != self.in_dim:
            raise ValueError(f"{type(self).__name__}: expected h of shape [N, {self.in_dim}], got {list(h.shape)}")
        if batch.dim() != 1 or batch.numel() != h.size(0):
            raise ValueError(
                f"{type(self).__name__}: expected batch of shape [{h.size(0)}] (one graph index per node), "
                f"got {list(batch.shape)}"
            )
        if num_graphs < 1:
            raise ValueError(f"{type(self).__name__}: num_graphs must be >= 1 (got {num_graphs})")
        return self.pool(h, batch, int(num_graphs))

    def pool(self, h: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self._hparams.items() if k != "out_dim")
        return f"{type(self).__name__}({args}, out_dim={self.out_dim})"


def _reset(module: nn.Module) -> None:
    """Call ``reset_parameters`` on ``module``, or else on its descendants (containers have none)."""
    fn = getattr(module, "reset_parameters", None)
    if callable(fn):
        fn()
        return
    for child in module.children():
        _reset(child)


# --------------------------------------------------------------------------- fixed readouts


class _ScatterReadout(Readout):
    """A fixed readout: one ``scatter`` reduction of the node embeddings. ``out_dim = in_dim``."""

    reduce: str

    def __init__(self, in_dim: int) -> None:
        super().__init__(in_dim, in_dim)

    def pool(self, h: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
        return scatter(h, batch, dim=0, dim_size=num_graphs, reduce=self.reduce)


@READOUTS.register("sum")
class SumReadout(_ScatterReadout):
    """Sum of the node embeddings. ``out_dim = in_dim``."""

    reduce = "sum"


@READOUTS.register("mean")
class MeanReadout(_ScatterReadout):
    """Mean of the node embeddings. ``out_dim = in_dim``."""

    reduce = "mean"


@READOUTS.register("max")
class MaxReadout(_ScatterReadout):
    """Feature-wise maximum of the node embeddings. ``out_dim = in_dim``."""

    reduce = "max"


@READOUTS.register("sum_mean_max")
class SumMeanMaxReadout(Readout):
    """Concatenation ``[sum || mean || max]`` (the reference HF model's readout). ``out_dim = 3 * in_dim``."""

    def __init__(self, in_dim: int) -> None:
        super().__init__(in_dim, 3 * in_dim)

    def pool(self, h: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
        return torch.cat(
            [scatter(h, batch, dim=0, dim_size=num_graphs, reduce=r) for r in ("sum", "mean", "max")], dim=-1
        )


# --------------------------------------------------------------------------- simple neural readouts


def _mlp(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, out_dim))


@READOUTS.register("attention")
class AttentionReadout(Readout):
    """Gated attention pooling (Li et al. 2016): ``sum_i softmax_i(gate(h_i)) * W h_i``.

    The softmax runs over each molecule's own nodes, so the weights of a molecule sum to 1.

    Args:
        in_dim: width of the node embeddings.
        hidden_dim: hidden width of the gate MLP ``Linear -> ReLU -> Linear(1)``. Default 128.
        out_dim: width of the graph vector (the linear transform ``W``). Default None: ``in_dim``.

    Shapes:
        h ``[N, in_dim]``, batch ``[N]`` -> ``[num_graphs, out_dim]``.
    """

    def __init__(self, in_dim: int, hidden_dim: int = 128, out_dim: int | None = None) -> None:
        out = in_dim if out_dim is None else out_dim
        super().__init__(in_dim, out, {"hidden_dim": hidden_dim, "out_dim": out_dim})
        self.gate = _mlp(in_dim, hidden_dim, 1)
        self.transform = nn.Linear(in_dim, out)
        self.reset_parameters()

    def pool(self, h: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
        weight = softmax(self.gate(h), batch, num_nodes=h.size(0), dim=0)  # [N, 1]
        return scatter(weight * self.transform(h), batch, dim=0, dim_size=num_graphs, reduce="sum")


@READOUTS.register("deepsets")
class DeepSetsReadout(Readout):
    """Deep Sets (Zaheer et al. 2017): ``rho(sum_i phi(h_i))`` with two-layer MLPs ``phi`` and ``rho``.

    Args:
        in_dim: width of the node embeddings.
        hidden_dim: width of ``phi``'s hidden and output layers and of ``rho``'s hidden layer. Default 256.
        out_dim: width of the graph vector. Default None: ``in_dim``.

    Shapes:
        h ``[N, in_dim]``, batch ``[N]`` -> ``[num_graphs, out_dim]``.
    """

    def __init__(self, in_dim: int, hidden_dim: int = 256, out_dim: int | None = None) -> None:
        out = in_dim if out_dim is None else out_dim
        super().__init__(in_dim, out, {"hidden_dim": hidden_dim, "out_dim": out_dim})
        self.phi = _mlp(in_dim, hidden_dim, hidden_dim)
        self.rho = _mlp(hidden_dim, hidden_dim, out)
        self.reset_parameters()

    def pool(self, h: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
        return self.rho(scatter(self.phi(h), batch, dim=0, dim_size=num_graphs, reduce="sum"))


# --------------------------------------------------------------------------- masked attention blocks


class MAB(nn.Module):
    """Multihead attention block of the Set Transformer (Lee et al. 2019, eqs. 6-7), with a key mask.

    ``Q = q W_q``, ``K = k W_k``, ``V = k W_v`` (all ``dim`` wide, split into ``num_heads`` heads),
    ``H = LN(Q + Attention(Q, K, V))``, ``out = LN(H + ReLU(H W_o))``. Attention is scaled dot product
    with the usual per-head ``1/sqrt(dim / num_heads)``; keys whose mask is False get weight exactly 0.

    Args:
        q_dim: width of the queries' input.
        k_dim: width of the keys' (and values') input.
        dim: model width.
        num_heads: attention heads; must divide ``dim``.
        layer_norm: whether to apply the two LayerNorms (the reference's ``ln=True``). Default True.

    Shapes:
        q ``[B, Lq, q_dim]``, k ``[B, Lk, k_dim]``, key_mask ``[B, Lk]`` bool (True = real) or None
        -> ``[B, Lq, dim]``.
    """

    def __init__(self, q_dim: int, k_dim: int, dim: int, num_heads: int, layer_norm: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"MAB: num_heads ({num_heads}) must divide the model width ({dim})")
        self.num_heads = num_heads
        self.fc_q = nn.Linear(q_dim, dim)
        self.fc_k = nn.Linear(k_dim, dim)
        self.fc_v = nn.Linear(k_dim, dim)
        self.fc_o = nn.Linear(dim, dim)
        self.ln0: nn.Module = nn.LayerNorm(dim) if layer_norm else nn.Identity()
        self.ln1: nn.Module = nn.LayerNorm(dim) if layer_norm else nn.Identity()

    def reset_parameters(self) -> None:
        for m in (self.fc_q, self.fc_k, self.fc_v, self.fc_o, self.ln0, self.ln1):
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()

    def _heads(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        return x.view(b, n, self.num_heads, d // self.num_heads).transpose(1, 2)  # [B, H, L, d/H]

    def _attend(self, query: Tensor, key: Tensor, value: Tensor, key_mask: Tensor | None) -> Tensor:
        """Multihead attention of projected ``query [B, Lq, dim]`` over ``key``/``value [B, Lk, dim]``."""
        attn_mask = None if key_mask is None else key_mask[:, None, None, :]
        att = F.scaled_dot_product_attention(self._heads(query), self._heads(key), self._heads(value),
                                             attn_mask=attn_mask)
        return att.transpose(1, 2).reshape(query.shape)

    def _out(self, query: Tensor, att: Tensor) -> Tensor:
        h = self.ln0(query + att)
        return self.ln1(h + F.relu(self.fc_o(h)))

    def forward(self, q: Tensor, k: Tensor, key_mask: Tensor | None = None) -> Tensor:
        query = self.fc_q(q)
        return self._out(query, self._attend(query, self.fc_k(k), self.fc_v(k), key_mask))

    def forward_packed(self, x: Tensor, packing: Packing) -> Tensor:
        """Self-attention ``MAB(X, X)`` over packed rows ``x [N, k_dim]`` -> ``[N, dim]``: the dense maps
        (projections, LayerNorms, ``fc_o``) see only the N real rows; only attention is padded."""
        query = self.fc_q(x)
        att = self._attend(packing.dense(query), packing.dense(self.fc_k(x)), packing.dense(self.fc_v(x)),
                           packing.mask)
        return self._out(query, packing.packed(att))

    def forward_packed_keys(self, q: Tensor, x: Tensor, packing: Packing) -> Tensor:
        """``MAB(Q, X)`` with dense queries ``q [B or 1, Lq, q_dim]`` (a ``[1, ...]`` query, e.g. PMA's
        seeds, is projected once and shared) and packed keys ``x [N, k_dim]`` -> ``[B, Lq, dim]``."""
        query = self.fc_q(q).expand(packing.num_graphs, -1, -1)
        att = self._attend(query, packing.dense(self.fc_k(x)), packing.dense(self.fc_v(x)), packing.mask)
        return self._out(query, att)


class SAB(nn.Module):
    """Set attention block ``SAB(X) = MAB(X, X)`` (permutation equivariant). Shapes as :class:`MAB` with q = k."""

    def __init__(self, in_dim: int, dim: int, num_heads: int, layer_norm: bool = True) -> None:
        super().__init__()
        self.mab = MAB(in_dim, in_dim, dim, num_heads, layer_norm)

    def reset_parameters(self) -> None:
        self.mab.reset_parameters()

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.mab(x, x, mask)

    def forward_packed(self, x: Tensor, packing: Packing) -> Tensor:
        """``[N, in_dim]`` packed rows -> ``[N, dim]`` (see :meth:`MAB.forward_packed`)."""
        return self.mab.forward_packed(x, packing)


class PMA(nn.Module):
    """Pooling by multihead attention ``PMA_k(X) = MAB(S, X)`` with ``k`` learned seeds ``S`` (invariant).

    Shapes:
        x ``[B, L, dim]``, mask ``[B, L]`` -> ``[B, num_seeds, dim]``.
    """

    def __init__(self, dim: int, num_heads: int, num_seeds: int, layer_norm: bool = True) -> None:
        super().__init__()
        self.seeds = nn.Parameter(torch.empty(1, num_seeds, dim))
        self.mab = MAB(dim, dim, dim, num_heads, layer_norm)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.seeds)
        self.mab.reset_parameters()

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.mab(self.seeds.expand(x.size(0), -1, -1), x, mask)

    def forward_packed(self, x: Tensor, packing: Packing) -> Tensor:
        """Packed rows ``x [N, dim]`` -> ``[B, num_seeds, dim]``; the seeds are projected once."""
        return self.mab.forward_packed_keys(self.seeds, x, packing)


class Packing:
    """Where each of N packed node rows sits in a padded ``[B, M]`` block (M = the batch's largest
    molecule), and the key mask of that block.

    ``dense(x [N, D]) -> [B, M, D]`` (zeros at padding) and ``packed(x [B, M, D]) -> [N, D]`` move rows
    between the two layouts, so the Set Transformer's dense maps run on the N real rows and only
    attention, which needs equal-length sets, sees the padded block. A molecule without nodes gets
    its first padding slot unmasked (as :func:`_dense`), so it attends to a zero key, not to nothing.
    """

    def __init__(self, batch: Tensor, num_graphs: int) -> None:
        counts = torch.bincount(batch, minlength=num_graphs)
        self.num_graphs = num_graphs
        self.max_len = max(int(counts.max()) if counts.numel() else 0, 1)
        start = torch.cumsum(counts, 0) - counts
        pos = torch.arange(batch.numel(), device=batch.device) - start[batch]
        self.index = batch * self.max_len + pos  # [N] row -> flat dense slot
        mask = torch.zeros(num_graphs * self.max_len, dtype=torch.bool, device=batch.device)
        mask[self.index] = True
        mask = mask.view(num_graphs, self.max_len)
        mask[:, 0] |= counts == 0
        self.mask = mask

    def dense(self, x: Tensor) -> Tensor:
        out = x.new_zeros(self.num_graphs * self.max_len, x.size(-1))
        out[self.index] = x
        return out.view(self.num_graphs, self.max_len, x.size(-1))

    def packed(self, x: Tensor) -> Tensor:
        return x.reshape(self.num_graphs * self.max_len, x.size(-1))[self.index]


def _dense(h: Tensor, batch: Tensor, num_graphs: int) -> tuple[Tensor, Tensor]:
    """Pad to the batch's own largest molecule; return ``x [B, M, D]`` and a key mask ``[B, M]``.

    A molecule without nodes would have no key to attend to (NaN); its first padding slot is unmasked
    so that it gets a finite (meaningless but batch-independent) vector instead.
    """
    x, mask = to_dense_batch(h, batch, batch_size=num_graphs)
    first = torch.zeros_like(mask)
    first[:, 0] = True
    return x, mask | (first & ~mask.any(dim=1, keepdim=True))


@READOUTS.register("set_transformer")
class SetTransformerReadout(Readout):
    """Set Transformer readout (Lee et al. 2019) as in Buterez et al. (METHOD sec 4), with padding masked.

    Encoder ``2 x SAB(hidden_dim, num_heads)``; decoder ``PMA(num_seeds) -> SAB -> Linear(out_dim)``;
    the ``num_seeds`` outputs are averaged into one ``out_dim`` vector. At the defaults with
    ``in_dim=50`` this has ~14.1 M parameters, as in the paper.

    Each batch is padded to its own largest molecule and every attention masks the padding keys, so a
    molecule's vector does not depend on the batch it is in; there is no BatchNorm over padded rows.
    (The reference padded to a global maximum without a mask.)

    Args:
        in_dim: width of the node embeddings.
        hidden_dim: model width of every block. Default 1024.
        num_heads: attention heads (must divide ``hidden_dim``). Default 16.
        num_seeds: PMA seed vectors. Default 32.
        out_dim: width of the graph vector. Default 256.
        layer_norm: LayerNorm inside every block. Default True.
        packed: run the encoder's dense maps (projections, LayerNorms, feed-forward) on the N packed
            node rows and pad only for attention; PMA's seeds are projected once per batch, not once
            per molecule. False: the whole padded block through every layer, as the reference did.
            The same function either way (tested); packed is faster. Default True.

    Shapes:
        h ``[N, in_dim]``, batch ``[N]`` (sorted) -> ``[num_graphs, out_dim]``.
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int = 1024,
        num_heads: int = 16,
        num_seeds: int = 32,
        out_dim: int = 256,
        layer_norm: bool = True,
        packed: bool = True,
    ) -> None:
        hparams = dict(hidden_dim=hidden_dim, num_heads=num_heads, num_seeds=num_seeds, out_dim=out_dim)
        super().__init__(in_dim, out_dim, {**hparams, "layer_norm": layer_norm, **({} if packed else {"packed": False})})
        self.packed = packed
        self.encoder = nn.ModuleList(
            [SAB(in_dim, hidden_dim, num_heads, layer_norm), SAB(hidden_dim, hidden_dim, num_heads, layer_norm)]
        )
        self.pma = PMA(hidden_dim, num_heads, num_seeds, layer_norm)
        self.decoder_sab = SAB(hidden_dim, hidden_dim, num_heads, layer_norm)
        self.lin_out = nn.Linear(hidden_dim, out_dim)
        self.reset_parameters()

    def set_checkpointing(self, on: bool) -> None:
        """Activation checkpointing: in training, keep only each block's input and recompute the rest
        in the backward pass (less memory for ~1/3 more readout compute)."""
        self.checkpointing = on

    def _run(self, fn, *args):
        if getattr(self, "checkpointing", False) and self.training and torch.is_grad_enabled():
            from torch.utils.checkpoint import checkpoint

            return checkpoint(fn, *args, use_reentrant=False)
        return fn(*args)

    def pool(self, h: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
        if h.size(0) == 0:
            return h.new_zeros(num_graphs, self.out_dim)
        if self.packed:
            packing = Packing(batch, num_graphs)
            x = h
            for sab in self.encoder:
                x = self._run(lambda t, m=sab: m.forward_packed(t, packing), x)
            pooled = self._run(lambda t: self.pma.forward_packed(t, packing), x)
        else:
            x, mask = _dense(h, batch, num_graphs)
            for sab in self.encoder:
                x = self._run(sab, x, mask)
            pooled = self._run(self.pma, x, mask)
        seeds = self._run(self.decoder_sab, pooled)
        return self.lin_out(seeds).mean(dim=1)


@READOUTS.register("gmt")
class GMTReadout(Readout):
    """Graph Multiset Transformer style pooling (Baek et al. 2021), with padding masked.

    ``Linear(in_dim -> hidden_dim)`` on the nodes, then ``PMA(num_seeds) -> SAB -> PMA(1)`` and
    ``Linear(out_dim)``. As in PyG's ``GraphMultisetTransformer``, the keys of the first pooling come
    from a linear map of the node embeddings (the encoder has already done the message passing), not
    from an extra GNN.

    Args:
        in_dim: width of the node embeddings.
        hidden_dim: model width. Default 256.
        num_heads: attention heads (must divide ``hidden_dim``). Default 8.
        num_seeds: seeds of the first pooling (the compressed multiset size). Default 16.
        out_dim: width of the graph vector. Default 256.
        layer_norm: LayerNorm inside every block. Default True.

    Shapes:
        h ``[N, in_dim]``, batch ``[N]`` (sorted) -> ``[num_graphs, out_dim]``.
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int = 256,
        num_heads: int = 8,
        num_seeds: int = 16,
        out_dim: int = 256,
        layer_norm: bool = True,
    ) -> None:
        hparams = dict(hidden_dim=hidden_dim, num_heads=num_heads, num_seeds=num_seeds, out_dim=out_dim)
        super().__init__(in_dim, out_dim, {**hparams, "layer_norm": layer_norm})
        self.lin_in = nn.Linear(in_dim, hidden_dim)
        self.pool_nodes = PMA(hidden_dim, num_heads, num_seeds, layer_norm)
        self.sab = SAB(hidden_dim, hidden_dim, num_heads, layer_norm)
        self.pool_seeds = PMA(hidden_dim, num_heads, 1, layer_norm)
        self.lin_out = nn.Linear(hidden_dim, out_dim)
        self.reset_parameters()

    def pool(self, h: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
        if h.size(0) == 0:
            return h.new_zeros(num_graphs, self.out_dim)
        seeds = self.sab(self.pool_nodes.forward_packed(self.lin_in(h), Packing(batch, num_graphs)))
        return self.lin_out(self.pool_seeds(seeds)).squeeze(1)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


__all__ = [
    "READOUTS",
    "Readout",
    "SumReadout",
    "MeanReadout",
    "MaxReadout",
    "SumMeanMaxReadout",
    "AttentionReadout",
    "DeepSetsReadout",
    "SetTransformerReadout",
    "GMTReadout",
    "MAB",
    "SAB",
    "PMA",
    "Packing",
    "count_parameters",
]
