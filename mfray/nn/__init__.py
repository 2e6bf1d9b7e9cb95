"""Torch building blocks: node encoders, the supervised VGAE, readouts and heads, each with a registry.

Composition (encoder -> readout -> [augmentation] -> head) lives in :mod:`mfray.models`.
"""

from mfray.nn.encoders import ENCODERS, EncoderLayer, GCNEncoder, GINEEncoder, GINEncoder, GNNEncoder
from mfray.nn.heads import HEADS, MLPHead
from mfray.nn.norm import SafeBatchNorm1d
from mfray.nn.readouts import (
    MAB,
    PMA,
    READOUTS,
    SAB,
    AttentionReadout,
    DeepSetsReadout,
    GMTReadout,
    MaxReadout,
    MeanReadout,
    Readout,
    SetTransformerReadout,
    SumMeanMaxReadout,
    SumReadout,
    count_parameters,
)
from mfray.nn.vgae import SupervisedVGAE, VGAEOutput, kl_loss, recon_loss, sample_within_graph_negatives

__all__ = [
    "ENCODERS",
    "HEADS",
    "READOUTS",
    "MAB",
    "PMA",
    "SAB",
    "AttentionReadout",
    "DeepSetsReadout",
    "EncoderLayer",
    "GCNEncoder",
    "GINEEncoder",
    "GINEncoder",
    "GMTReadout",
    "GNNEncoder",
    "MLPHead",
    "MaxReadout",
    "MeanReadout",
    "Readout",
    "SafeBatchNorm1d",
    "SetTransformerReadout",
    "SumMeanMaxReadout",
    "SumReadout",
    "SupervisedVGAE",
    "VGAEOutput",
    "count_parameters",
    "kl_loss",
    "recon_loss",
    "sample_within_graph_negatives",
]
