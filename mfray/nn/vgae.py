"""The supervised variational graph auto-encoder of Buterez et al. (METHOD sec 3) and its losses.

The model maps atoms to 50-d latent vectors ``z``; a readout and a head (composed elsewhere) turn
them into a prediction. Training minimises

    loss = w_recon * recon_loss + beta * kl_loss + w_task * MSE(head(readout(z)), y)

with all weights 1 in the paper. The loss *functions* live here; the weights belong to the training
spec. Two defects of the reference implementation are fixed:

- **Negatives within each molecule.** The reference samples negative edges over the whole batch graph,
  so nearly every negative pairs atoms of two different molecules: a trivial task that says nothing
  about molecular structure. :func:`sample_within_graph_negatives` draws both atoms of every negative
  from the same molecule.
- **KL averaged once.** PyG's ``VGAE.kl_loss`` already averages the per-node KL over nodes; the
  reference then multiplies by ``1 / num_nodes`` again, shrinking the KL term by the batch's node count
  (~15,000 for a 512-molecule batch), which effectively switches it off. :func:`kl_loss` averages once.

Outputs are returned as a :class:`VGAEOutput`, never stored on the module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import GCNConv
from torch_geometric.utils import scatter

from mfray.nn.encoders import GCNEncoder


@dataclass
class VGAEOutput:
    """What :class:`SupervisedVGAE` returns.

    Attributes:
        z: node latents ``[N, latent_dim]``: a sample ``mu + eps * exp(logstd)`` when sampling is active,
            else ``mu``.
        mu: posterior means ``[N, latent_dim]``.
        logstd: posterior log standard deviations ``[N, latent_dim]``, already clamped at ``logstd_max``.
    """

    z: Tensor
    mu: Tensor
    logstd: Tensor


class SupervisedVGAE(nn.Module):
    """Variational graph encoder: ``num_layers x [GCNConv -> BatchNorm -> ReLU]`` then GCN heads for mu, logstd.

    Sampling: ``z = mu + eps * exp(logstd)``, ``eps ~ N(0, I)``, when the module is in training mode AND
    ``sample`` is True; otherwise ``z = mu``. ``sample`` lets a frozen encoder run without sampling noise
    while other parts of the model train (METHOD sec 6: the reference leaves the noise on).

    Args:
        in_dim: width of the atom features.
        hidden_dim: width of the GCN layers. Default 256.
        num_layers: number of GCN layers before the heads. Default 3.
        latent_dim: width of ``mu``, ``logstd`` and ``z`` (``out_dim``). Default 50.
        logstd_max: upper clamp on ``logstd`` (``exp(10)`` is already a huge std). Default 10.0.
        sample: whether training mode draws ``z`` (True) or returns ``mu`` (False). Default True.

    Shapes:
        x ``[N, in_dim]``, edge_index ``[2, E]``; edge_attr and batch are accepted for the common encoder
        interface and ignored (GCN uses no bond features) -> :class:`VGAEOutput` of ``[N, latent_dim]``.
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int = 256,
        num_layers: int = 3,
        latent_dim: int = 50,
        logstd_max: float = 10.0,
        sample: bool = True,
    ) -> None:
        super().__init__()
        if latent_dim <= 0:
            raise ValueError(f"SupervisedVGAE: latent_dim must be positive (got {latent_dim})")
        self.in_dim = in_dim
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.latent_dim = latent_dim
        self.logstd_max = float(logstd_max)
        self.sample = bool(sample)
        self.out_dim = latent_dim
        self.gnn = GCNEncoder(in_dim, hidden_dim=hidden_dim, num_layers=num_layers)
        self.conv_mu = GCNConv(hidden_dim, latent_dim)
        self.conv_logstd = GCNConv(hidden_dim, latent_dim)
        self.reset_parameters()

    @property
    def layers(self) -> nn.ModuleList:
        """The GCN body's layers (conv + BatchNorm each), as on the plain encoders, for freezing by index."""
        return self.gnn.layers

    @property
    def hparams(self) -> dict[str, Any]:
        """The constructor arguments (enough to rebuild the module)."""
        return {
            "in_dim": self.in_dim,
            "hidden_dim": self.hidden_dim,
            "num_layers": self.num_layers,
            "latent_dim": self.latent_dim,
            "logstd_max": self.logstd_max,
            "sample": self.sample,
        }

    def reset_parameters(self) -> None:
        self.gnn.reset_parameters()
        self.conv_mu.reset_parameters()
        self.conv_logstd.reset_parameters()

    def forward(
        self, x: Tensor, edge_index: Tensor, edge_attr: Tensor | None = None, batch: Tensor | None = None
    ) -> VGAEOutput:
        h = self.gnn(x, edge_index)
        mu = self.conv_mu(h, edge_index)
        logstd = self.conv_logstd(h, edge_index).clamp(max=self.logstd_max)
        if self.training and self.sample:
            z = mu + torch.randn_like(mu) * torch.exp(logstd)
        else:
            z = mu
        return VGAEOutput(z=z, mu=mu, logstd=logstd)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.hparams.items())
        return f"{type(self).__name__}({args}, out_dim={self.out_dim})"


def _empty_edges(device: torch.device) -> Tensor:
    return torch.empty(2, 0, dtype=torch.long, device=device)


def sample_within_graph_negatives(
    edge_index: Tensor,
    batch: Tensor,
    num_neg: int = 1,
    generator: torch.Generator | None = None,
    max_rounds: int = 16,
) -> Tensor:
    """Sample non-bonded atom pairs ``(i, j)``, ``i != j``, with both atoms in the same molecule.

    Each molecule gets ``num_neg`` negatives per (directed, non-self-loop) positive edge it holds, drawn
    uniformly with replacement from its non-bonded ordered pairs by vectorised rejection sampling: a
    draw that hits a bond is redrawn, up to ``max_rounds`` times, after which the few remaining slots are
    dropped (only possible in near-complete graphs; molecules have ~2/n bond density, so nearly every
    first draw is accepted). A molecule with no non-bonded pair (a single atom, a complete graph such as
    a triangle) or with no bonds gets no negatives, so the result can be empty but never invalid.

    ``edge_index`` is treated as undirected: ``(j, i)`` counts as a bond when ``(i, j)`` does.

    Args:
        edge_index: bonds ``[2, E]`` (global node indices, both directions present).
        batch: graph index of every node ``[N]``, sorted (as PyG builds it).
        num_neg: negatives per positive edge. Default 1.
        generator: ``torch.Generator`` on ``batch.device`` for reproducible draws. Default: global RNG.
        max_rounds: redraw rounds for draws that hit a bond. Default 16.

    Returns:
        ``[2, K]`` int64 negative pairs, ``K <= num_neg * E``.
    """
    device = batch.device
    n_nodes = batch.numel()
    if n_nodes == 0 or edge_index.numel() == 0 or num_neg <= 0:
        return _empty_edges(device)
    src, dst = edge_index[0], edge_index[1]
    keep = src != dst
    src, dst = src[keep], dst[keep]
    if src.numel() == 0:
        return _empty_edges(device)
    num_graphs = int(batch.max()) + 1
    n_g = torch.bincount(batch, minlength=num_graphs)
    ptr = torch.cumsum(n_g, 0) - n_g
    bond_keys = torch.unique(torch.cat([src * n_nodes + dst, dst * n_nodes + src]))
    n_bonded = torch.bincount(batch[bond_keys // n_nodes], minlength=num_graphs)  # ordered bonded pairs
    capacity = n_g * (n_g - 1) - n_bonded  # ordered non-bonded pairs
    wanted = torch.bincount(batch[src], minlength=num_graphs) * num_neg
    wanted = torch.where(capacity > 0, wanted, torch.zeros_like(wanted))
    graph = torch.repeat_interleave(torch.arange(num_graphs, device=device), wanted)
    if graph.numel() == 0:
        return _empty_edges(device)
    n, off = n_g[graph], ptr[graph]

    def draw(size_n: Tensor, size_off: Tensor) -> tuple[Tensor, Tensor]:
        u = torch.rand(2, size_n.numel(), generator=generator, device=device)
        a = torch.minimum((u[0] * size_n).long(), size_n - 1)
        b = torch.minimum((u[1] * (size_n - 1)).long(), size_n - 2)
        b = b + (b >= a).long()  # uniform over the other n - 1 atoms
        return size_off + a, size_off + b

    i, j = draw(n, off)
    for _ in range(max_rounds):
        bad = torch.isin(i * n_nodes + j, bond_keys)
        if not bool(bad.any()):
            break
        i_new, j_new = draw(n[bad], off[bad])
        i[bad], j[bad] = i_new, j_new
    ok = ~torch.isin(i * n_nodes + j, bond_keys)
    return torch.stack([i[ok], j[ok]])


def sample_batch_negatives(edge_index: Tensor, n_nodes: int, num_neg: int = 1,
                           generator: torch.Generator | None = None) -> Tensor:
    """Non-bonded pairs drawn uniformly over ALL node pairs of a batch graph (the reference's, and PyG's
    ``negative_sampling``, convention): mostly pairs of atoms of two different molecules, an easy target.
    Pairs that hit a bond or a self-pair are dropped. Returns ``[2, K]``, ``K <= num_neg * E``."""
    device = edge_index.device
    m = edge_index.size(1) * num_neg
    if n_nodes < 2 or m == 0:
        return _empty_edges(device)
    u = torch.rand(2, m, generator=generator, device=device)
    i = torch.minimum((u[0] * n_nodes).long(), torch.tensor(n_nodes - 1, device=device))
    j = torch.minimum((u[1] * n_nodes).long(), torch.tensor(n_nodes - 1, device=device))
    bonds = torch.cat([edge_index[0] * n_nodes + edge_index[1], edge_index[1] * n_nodes + edge_index[0]])
    ok = (i != j) & ~torch.isin(i * n_nodes + j, bonds)
    return torch.stack([i[ok], j[ok]])


def recon_loss(
    z: Tensor,
    edge_index: Tensor,
    batch: Tensor,
    num_neg: int = 1,
    generator: torch.Generator | None = None,
    negatives: str = "molecule",
) -> Tensor:
    """Edge reconstruction loss of the inner-product decoder ``p(i ~ j) = sigmoid(z_i . z_j)``.

    ``BCE(logits of bonds, 1) + BCE(logits of negatives, 0)``, each term a mean over its pairs (the
    PyG/reference convention, computed with logits for numerical stability). Negatives come from
    :func:`sample_within_graph_negatives` (``num_neg`` per bond, within each molecule). Self-loops in
    ``edge_index`` are ignored. A term with no pairs (single-atom molecules, complete graphs) is 0, so
    the loss is finite for any batch; it stays attached to ``z`` so ``backward()`` always works.

    Args:
        z: node latents ``[N, D]``.
        edge_index: bonds ``[2, E]``, both directions.
        batch: graph index of every node ``[N]``.
        num_neg: negatives per bond. Default 1.
        generator: RNG for the negatives (on ``z.device``). Default: global RNG.
        negatives: ``"molecule"`` (default: non-bonded pairs within each molecule) or ``"batch"`` (over
            the whole batch graph, the reference's: see :func:`sample_batch_negatives`).

    Returns:
        scalar tensor.
    """
    keep = edge_index[0] != edge_index[1]
    pos = edge_index[:, keep]
    if negatives == "batch":
        neg = sample_batch_negatives(pos, batch.numel(), num_neg=num_neg, generator=generator)
    elif negatives == "molecule":
        neg = sample_within_graph_negatives(pos, batch, num_neg=num_neg, generator=generator)
    else:
        raise ValueError(f"negatives must be 'molecule' or 'batch' (got {negatives!r})")
    loss = z.sum() * 0.0
    if pos.size(1):
        logits = (z[pos[0]] * z[pos[1]]).sum(-1)
        loss = loss + F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
    if neg.size(1):
        logits = (z[neg[0]] * z[neg[1]]).sum(-1)
        loss = loss + F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits))
    return loss


def kl_loss(mu: Tensor, logstd: Tensor, batch: Tensor | None = None, reduction: str = "node") -> Tensor:
    """KL divergence ``KL(N(mu, exp(logstd)^2) || N(0, I))``, summed over latent dims, averaged ONCE.

    Per node: ``-0.5 * sum_d (1 + 2 logstd - mu^2 - exp(2 logstd))``. Then:

    - ``reduction="node"`` (default, PyG's convention): mean over all nodes of the batch;
    - ``reduction="graph"``: mean over each molecule's nodes, then mean over molecules (every molecule
      weighs the same whatever its size; needs ``batch``).

    The reference divides the node mean by the node count a second time; this does not (see module
    docstring). ``logstd`` should already be clamped (``SupervisedVGAE`` returns it clamped).

    Args:
        mu: posterior means ``[N, D]``.
        logstd: posterior log standard deviations ``[N, D]``.
        batch: graph index of every node ``[N]``; required for ``reduction="graph"``.
        reduction: ``"node"`` or ``"graph"``.

    Returns:
        scalar tensor (0 for an empty batch).
    """
    if mu.shape != logstd.shape:
        raise ValueError(f"kl_loss: mu {list(mu.shape)} and logstd {list(logstd.shape)} differ in shape")
    per_node = -0.5 * torch.sum(1 + 2 * logstd - mu**2 - torch.exp(2 * logstd), dim=-1)
    if per_node.numel() == 0:
        return mu.sum() * 0.0
    if reduction == "node":
        return per_node.mean()
    if reduction == "graph":
        if batch is None:
            raise ValueError("kl_loss(reduction='graph') needs batch")
        per_graph = scatter(per_node, batch, dim=0, reduce="mean")
        present = torch.bincount(batch, minlength=per_graph.numel()) > 0
        return per_graph[present].mean()
    raise ValueError(f"kl_loss: reduction must be 'node' or 'graph', got {reduction!r}")
