"""The pure-torch fit/evaluate loop (no Ray, no Lightning).

Adam, ReduceLROnPlateau(factor 0.75, patience 15) on the validation loss, early stopping, and the
model of the best validation epoch restored at the end (the reference evaluated last-epoch weights,
~100 epochs past the best; METHOD.md section 7). With a supervised VGAE encoder the loss is
``task_weight * task + recon_weight * reconstruction + kl_weight * KL`` (see :class:`TrainConfig` for
why the KL weight defaults to 1e-3, not the paper's nominal 1); the
validation loss used for model selection is the task loss alone.
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mfray.models.freezing import frozen_stages, train_mode, trainable_parameters
from mfray.models.model import MFModel
from mfray.nn.vgae import kl_loss, recon_loss
from mfray.train.data import GraphDataset


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings. Defaults: the reference HF protocol (METHOD.md section 7)."""

    lr: float = 1e-4
    batch_size: int = 32
    max_epochs: int = 1000
    patience: int = 100  # early stopping on the validation loss (None/0: off)
    lr_factor: float = 0.75
    lr_patience: int = 15
    weight_decay: float = 0.0
    task_weight: float = 1.0
    recon_weight: float = 1.0
    #: explicit KL weight (beta). The reference divided its KL by the node count twice, so its
    #: effective weight was ~1/(atoms per batch): ~1e-3 at HF batch 32, ~1e-4 at LF batch 512.
    #: With the KL averaged over nodes once (mfray), 1e-3 keeps that strength; 1.0 regularises far harder.
    kl_weight: float = 1e-3
    seed: int = 0
    num_threads: int = 1
    unfreeze_epoch: int | None = None  # epoch at which frozen stages are unfrozen (gradual unfreezing)
    device: str = "cpu"


@dataclass
class EpochLog:
    epoch: int
    train_loss: float
    valid_loss: float
    lr: float
    seconds: float
    parts: dict[str, float] = field(default_factory=dict)


@dataclass
class FitResult:
    best_epoch: int
    best_valid_loss: float
    epochs_run: int
    history: list[EpochLog]
    stopped_early: bool
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {**{k: v for k, v in asdict(self).items() if k != "history"},
                "history": [asdict(h) for h in self.history]}


def seed_everything(seed: int, num_threads: int = 1) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    torch.set_num_threads(num_threads)


def _task_loss(pred: torch.Tensor, y: torch.Tensor, task_type: str) -> torch.Tensor:
    mask = torch.isfinite(y)
    if not mask.any():
        return pred.sum() * 0.0
    if task_type == "classification":
        return F.binary_cross_entropy_with_logits(pred[mask], y[mask])
    return F.mse_loss(pred[mask], y[mask])


def _batch_loss(model: MFModel, g, y, aux, cfg: TrainConfig, vgae_terms: bool) -> tuple[torch.Tensor, dict[str, float]]:
    out = model(g, aux)
    task = _task_loss(out.pred, y, model.spec.task_type)
    loss = cfg.task_weight * task
    parts = {"task": float(task.detach())}
    if vgae_terms and out.mu is not None:
        rec = recon_loss(out.z, g.edge_index, g.batch)
        kl = kl_loss(out.mu, out.logstd, g.batch)
        loss = loss + cfg.recon_weight * rec + cfg.kl_weight * kl
        parts.update(recon=float(rec.detach()), kl=float(kl.detach()))
    return loss, parts


@torch.no_grad()
def evaluate_loss(model: MFModel, data: GraphDataset, batch_size: int, device: str = "cpu") -> float:
    model.eval()
    total, n = 0.0, 0
    for g, y, aux in data.batches(batch_size, shuffle=False, drop_last_single=False):
        g, y = g.to(device), y.to(device)
        aux = aux.to(device) if aux is not None else None
        out = model(g, aux)
        mask = torch.isfinite(y)
        if model.spec.task_type == "classification":
            loss = F.binary_cross_entropy_with_logits(out.pred[mask], y[mask], reduction="sum")
        else:
            loss = F.mse_loss(out.pred[mask], y[mask], reduction="sum")
        total += float(loss)
        n += int(mask.sum())
    return total / max(n, 1)


@torch.no_grad()
def predict(model: MFModel, data: GraphDataset, batch_size: int = 256, device: str = "cpu",
            with_embeddings: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Model outputs (scaled units; sigmoid for classification) and optionally graph embeddings."""
    model.eval()
    preds, embs = [], []
    for g, _, aux in data.batches(batch_size, shuffle=False, drop_last_single=False):
        g = g.to(device)
        aux = aux.to(device) if aux is not None else None
        out = model(g, aux)
        p = torch.sigmoid(out.pred) if model.spec.task_type == "classification" else out.pred
        preds.append(p.cpu().numpy())
        if with_embeddings:
            embs.append(out.graph.cpu().numpy())
    pred = np.concatenate(preds) if preds else np.zeros((0, model.spec.n_targets), np.float32)
    emb = (np.concatenate(embs) if embs else np.zeros((0, model.graph_dim), np.float32)) if with_embeddings else None
    return pred, emb


def fit(
    model: MFModel,
    train: GraphDataset,
    valid: GraphDataset,
    cfg: TrainConfig,
    on_epoch: Callable[[EpochLog], bool | None] | None = None,
) -> FitResult:
    """Train ``model`` in place; returns the history. The best-validation weights are restored.

    ``on_epoch`` is called after every epoch (progress bars, Ray Tune reports); returning ``True``
    stops training (e.g. a scheduler pruned the trial).
    """
    t_start = time.perf_counter()
    seed_everything(cfg.seed, cfg.num_threads)
    device = cfg.device
    model.to(device)
    rng = np.random.default_rng(cfg.seed)
    params = trainable_parameters(model)
    opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=cfg.lr_factor, patience=cfg.lr_patience)
    best_loss, best_epoch, best_state = math.inf, -1, copy.deepcopy(model.state_dict())
    history: list[EpochLog] = []
    stale = 0
    stopped = False
    for epoch in range(cfg.max_epochs):
        t0 = time.perf_counter()
        if cfg.unfreeze_epoch is not None and epoch == cfg.unfreeze_epoch and frozen_stages(model):
            from mfray.models.freezing import freeze

            freeze(model, [])
            opt.add_param_group({"params": [p for p in model.parameters() if all(p is not q for q in params)],
                                 "lr": opt.param_groups[0]["lr"]})
            params = trainable_parameters(model)
        train_mode(model)
        vgae_terms = "encoder" not in frozen_stages(model)
        total, n, parts_sum = 0.0, 0, {}
        for g, y, aux in train.batches(cfg.batch_size, shuffle=True, rng=rng):
            g, y = g.to(device), y.to(device)
            aux = aux.to(device) if aux is not None else None
            loss, parts = _batch_loss(model, g, y, aux, cfg, vgae_terms)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            b = g.num_graphs
            total += float(loss.detach()) * b
            n += b
            for k, v in parts.items():
                parts_sum[k] = parts_sum.get(k, 0.0) + v * b
        val = evaluate_loss(model, valid, max(cfg.batch_size, 256), device)
        sched.step(val)
        log = EpochLog(epoch=epoch, train_loss=total / max(n, 1), valid_loss=val, lr=opt.param_groups[0]["lr"],
                       seconds=time.perf_counter() - t0, parts={k: v / max(n, 1) for k, v in parts_sum.items()})
        history.append(log)
        if val < best_loss - 1e-12:
            best_loss, best_epoch, stale = val, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
        if on_epoch is not None and on_epoch(log):
            stopped = True
            break
        if cfg.patience and stale >= cfg.patience:
            stopped = True
            break
    model.load_state_dict(best_state)
    model.eval()
    return FitResult(best_epoch=best_epoch, best_valid_loss=best_loss, epochs_run=len(history), history=history,
                     stopped_early=stopped, seconds=time.perf_counter() - t_start)
