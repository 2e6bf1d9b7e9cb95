"""Compose a model from a :class:`ModelSpec`: named stages that transfer strategies address.

``MFModel`` = ``expander`` (codes -> dense features, on the device) -> ``encoder`` (supervised VGAE or
GNN: node latents) -> ``readout`` (graph vector) -> ``head`` (predictions; the augmentation vector is
concatenated to the graph vector before it, METHOD.md section 5). Outputs are returned explicitly in a
:class:`ModelOutput`; nothing is stashed on the module.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch_geometric.data import Batch

from mfray.chem.featurizers import build_featurizers
from mfray.data.collate import FeatureExpander
from mfray.models.spec import ModelSpec
from mfray.nn import ENCODERS, HEADS, READOUTS, SupervisedVGAE

STAGES = ("encoder", "readout", "head")


@dataclass
class ModelOutput:
    """``pred`` [B, T]; ``graph`` [B, G] (readout output); ``z`` [N, L] node latents;
    ``mu``/``logstd`` [N, L] when the encoder is a VGAE (else None)."""

    pred: torch.Tensor
    graph: torch.Tensor
    z: torch.Tensor
    mu: torch.Tensor | None = None
    logstd: torch.Tensor | None = None

    def float(self) -> ModelOutput:
        """The same outputs as fp32 (after a bf16-autocast forward pass: losses and metrics run in fp32)."""
        f = lambda t: None if t is None else t.float()  # noqa: E731
        return ModelOutput(pred=f(self.pred), graph=f(self.graph), z=f(self.z), mu=f(self.mu), logstd=f(self.logstd))


class MFModel(nn.Module):
    """A multi-fidelity GNN built from a :class:`ModelSpec` (use :func:`build_model`)."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        atom_f, bond_f = build_featurizers(spec.featurizer, spec.max_atomic_number)
        self.expander = FeatureExpander(atom_f, bond_f)
        node_dim, edge_dim = self.expander.node_dim, self.expander.edge_dim
        if spec.vgae:
            if spec.encoder != "gcn":
                raise ValueError("the supervised VGAE encoder is GCN-based; set vgae = false for other encoders")
            self.encoder: nn.Module = SupervisedVGAE(node_dim, hidden_dim=spec.hidden_dim, num_layers=spec.num_layers,
                                                     latent_dim=spec.latent_dim, **spec.encoder_kwargs)
        else:
            kwargs = dict(hidden_dim=spec.hidden_dim, num_layers=spec.num_layers, **spec.encoder_kwargs)
            if spec.encoder == "gine":
                kwargs["edge_dim"] = edge_dim
            self.encoder = ENCODERS.build(spec.encoder, in_dim=node_dim, **kwargs)
        self.uses_edges = spec.encoder == "gine"
        self.readout = READOUTS.build(spec.readout, in_dim=self.encoder.out_dim, **spec.readout_kwargs)
        self.head = HEADS.build(spec.head, in_dim=self.readout.out_dim + spec.aux_dim, hidden_dim=spec.head_hidden_dim,
                                out_dim=spec.n_targets, **spec.head_kwargs)

    def stages(self) -> dict[str, nn.Module]:
        return {"encoder": self.encoder, "readout": self.readout, "head": self.head}

    @property
    def graph_dim(self) -> int:
        return self.readout.out_dim

    def encode(self, batch: Batch):
        """Node latents (and VGAE terms). Returns ``(z, mu, logstd)``."""
        x = self.expander.nodes(batch)
        edge_attr = self.expander.edges(batch) if self.uses_edges else None
        if isinstance(self.encoder, SupervisedVGAE):
            out = self.encoder(x, batch.edge_index, edge_attr, batch.batch)
            return out.z, out.mu, out.logstd
        z = self.encoder(x, batch.edge_index, edge_attr, batch.batch)
        return z, None, None

    def set_checkpointing(self, on: bool) -> None:
        """Activation checkpointing in training: the encoder's activations, and the readout's where it
        supports it (set_transformer), are recomputed in the backward pass instead of kept (the
        encoder's sampled latents are replayed from the saved RNG state, so the result is the same)."""
        self.checkpointing = on
        fn = getattr(self.readout, "set_checkpointing", None)
        if callable(fn):
            fn(on)

    def forward(self, batch: Batch, aux: torch.Tensor | None = None) -> ModelOutput:
        if getattr(self, "checkpointing", False) and self.training and torch.is_grad_enabled():
            from torch.utils.checkpoint import checkpoint

            z, mu, logstd = checkpoint(self.encode, batch, use_reentrant=False)
        else:
            z, mu, logstd = self.encode(batch)
        graph = self.readout(z, batch.batch, batch.num_graphs)
        h = graph if aux is None else torch.cat([graph, aux], dim=1)
        if (aux is None) != (self.spec.aux_dim == 0):
            raise ValueError(f"model expects an augmentation vector of width {self.spec.aux_dim}, got "
                             f"{None if aux is None else tuple(aux.shape)}")
        return ModelOutput(pred=self.head(h), graph=graph, z=z, mu=mu, logstd=logstd)

    @torch.no_grad()
    def embed(self, batch: Batch) -> torch.Tensor:
        """Graph vectors [B, G] in evaluation mode (the LF embedding used by transfer)."""
        z, _, _ = self.encode(batch)
        return self.readout(z, batch.batch, batch.num_graphs)

    def extra_repr(self) -> str:
        n = sum(p.numel() for p in self.parameters())
        return f"params={n:,}"


def build_model(spec: ModelSpec) -> MFModel:
    return MFModel(spec)
