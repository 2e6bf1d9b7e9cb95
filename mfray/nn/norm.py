"""Normalisation layers shared by the encoders and heads."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class SafeBatchNorm1d(nn.BatchNorm1d):
    """``BatchNorm1d`` that does not crash on a batch of one row in training mode.

    ``nn.BatchNorm1d`` raises on ``[1, C]`` inputs in training mode (a single-row variance is undefined).
    That happens in practice: the last HF batch can hold one molecule (head), and a batch of one
    single-atom molecule has one node (encoder). With one row this layer normalises with the running
    statistics, exactly as in evaluation mode, and leaves them (and ``num_batches_tracked``) untouched:
    one row carries no information about the batch variance, so it must not move the estimates.
    With two or more rows, or in evaluation mode, it is ``nn.BatchNorm1d``.

    Being a subclass of ``nn.BatchNorm1d``, ``isinstance(m, nn.modules.batchnorm._BatchNorm)`` still
    finds it, so freezing code that switches BatchNorm layers to evaluation mode treats it alike.

    Shapes:
        input ``[B, C]``, output ``[B, C]``.
    """

    def forward(self, x: Tensor) -> Tensor:
        if self.training and x.dim() == 2 and x.size(0) == 1:
            if self.running_mean is None or self.running_var is None:
                # track_running_stats=False and one row: nothing sane to normalise with
                mean = torch.zeros_like(x[0])
                var = torch.ones_like(x[0])
            else:
                mean, var = self.running_mean, self.running_var
            return F.batch_norm(x, mean, var, self.weight, self.bias, False, 0.0, self.eps)
        return super().forward(x)
