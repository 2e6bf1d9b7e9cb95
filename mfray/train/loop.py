"""The pure-torch fit/evaluate loop (no Ray, no Lightning).

Adam, ReduceLROnPlateau(factor 0.75, patience 15) on the validation loss, early stopping, and the
model of the best validation epoch restored at the end (the reference evaluated last-epoch weights,
~100 epochs past the best; METHOD.md section 7). With a supervised VGAE encoder the loss is
``task_weight * task + recon_weight * reconstruction + kl_weight * KL`` (see :class:`TrainConfig` for
why the KL weight defaults to 1e-3, not the paper's nominal 1; :func:`describe_loss` says it in words);
the validation loss used for model selection is that sum too, or the task loss alone with
``monitor="task"``. The regression task loss is a
squared error that respects censored targets (:func:`censored_squared_error`), in training and in
the validation loss alike.

The same loop serves three callers:

- one process (``mfray train`` / ``mfray pretrain``): ``fit(model, train, valid, cfg)``;
- resumable training: ``on_checkpoint`` receives a *fit state* (a plain dict of tensors, numbers,
  strings and lists that ``torch.load(weights_only=True)`` reads back) and ``fit(..., resume=state)``
  continues at the next epoch exactly as an uninterrupted run would (same seed, same device);
- distributed data parallel: when ``torch.distributed`` is initialised with more than one process
  (Ray Train workers, or any ``init_process_group``), the model is wrapped in
  ``DistributedDataParallel``. Every rank passes its own shard of the data; all ranks take the same
  number of optimiser steps per epoch (the smallest shard's count), and the train and validation
  losses are summed over ranks, so LR scheduling, early stopping and the best epoch are decided
  identically everywhere. ``cfg.batch_size`` is per rank (global batch = world size x batch size).
"""

from __future__ import annotations

import copy
import functools
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from mfray.models.freezing import freeze, train_mode, trainable_parameters
from mfray.models.model import MFModel
from mfray.nn.vgae import kl_loss, recon_loss
from mfray.transfer.base import FreezePlan
from mfray.train.data import GraphDataset
from mfray.train.precision import autocast, resolve_precision
from mfray.utils.errors import MfrayError

#: version of the fit state that :func:`fit` hands to ``on_checkpoint`` and accepts as ``resume``
STATE_FORMAT = 1


class ResumeError(MfrayError):
    """A fit state cannot be resumed with this model or configuration."""


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings. Defaults: the reference HF protocol (METHOD.md section 7)."""

    lr: float | None = 1e-4  # None: the transfer strategy's (``train_hf`` fills it in)
    batch_size: int = 32  # per process when training data parallel
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
    device: str = "cpu"
    #: cap on optimiser steps per epoch (per process), e.g. to time a fixed number of steps; None: all
    max_steps_per_epoch: int | None = None
    # The next three are the reference implementation's choices. METHOD.md lists the last two as
    # defects, but on the paper's AID 1445 split the label strategy scores test R2 0.69 / 0.65 (seeds
    # 0, 1) with all three and 0.55 with the alternatives (task monitor, standardised LF inputs,
    # within-molecule negatives): the defaults follow the measurement, the alternatives stay options.
    #: the validation loss that selects the best epoch, drives early stopping and the LR schedule:
    #: "total" (task + reconstruction + KL as weighted in training, the reference's ``val_total_loss``)
    #: or "task" (the supervised loss alone)
    monitor: Literal["task", "total"] = "total"
    #: standardise the augmentation (LF labels, embeddings) with training-fold statistics; False (default)
    #: feeds it as given, as the reference did (raw % inhibition: its scale speeds up the LF path)
    scale_aux: bool = False
    #: negative pairs of the VGAE reconstruction loss: "batch" (default; over the whole batch graph, mostly
    #: pairs of different molecules: an easy target that leaves the latents to the task, the reference's)
    #: or "molecule" (within each molecule: a harder reconstruction that competes with the task)
    negatives: Literal["molecule", "batch"] = "batch"
    #: "32", "bf16-mixed" (forward passes under bf16 autocast; losses, weights and optimiser in fp32) or
    #: "auto": bf16-mixed where the device has fast bf16 (:mod:`mfray.train.precision`), else fp32
    precision: Literal["32", "bf16-mixed", "auto"] = "32"
    #: training batches of molecules of similar size (sorted by atom count within shuffled chunks of
    #: ``BUCKET_CHUNK`` batches, batch order shuffled): less padding in attention readouts
    bucket_by_size: bool = False
    #: recompute the encoder's and the readout's activations in the backward pass instead of keeping
    #: them (less memory, ~1/3 more forward compute); readouts that support it: set_transformer
    activation_checkpointing: bool = False

    def __post_init__(self) -> None:
        """Refuse values training cannot use, naming the setting (a study checks them before Ray starts)."""
        import math

        def bad(key: str, rule: str) -> None:
            raise ValueError(f"{key} = {getattr(self, key)!r}: {rule}")

        for key in ("batch_size", "num_threads"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                bad(key, "give a whole number >= 1")
        if not isinstance(self.max_epochs, int) or self.max_epochs < 0:  # 0: only the starting point is scored
            bad("max_epochs", "give a whole number >= 0")
        for key in ("patience", "lr_patience"):
            if getattr(self, key) is not None and getattr(self, key) < 0:
                bad(key, "give a whole number >= 0")
        if self.max_steps_per_epoch is not None and self.max_steps_per_epoch < 1:
            bad("max_steps_per_epoch", "give a whole number >= 1 (or leave it out)")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr >= 0):
            bad("lr", "give a number >= 0")
        if not (math.isfinite(self.lr_factor) and 0 < self.lr_factor < 1):
            bad("lr_factor", "give a number between 0 and 1")
        for key in ("weight_decay", "task_weight", "recon_weight", "kl_weight"):
            if not (math.isfinite(getattr(self, key)) and getattr(self, key) >= 0):
                bad(key, "give a number >= 0")
        if not 0 <= self.seed < 2**32:
            bad("seed", "give a whole number in 0 .. 2**32 - 1")

    @classmethod
    def paper(cls, **overrides: Any) -> TrainConfig:
        """The reference implementation's HF protocol (METHOD.md section 7): Adam 1e-4, batch 32, at most
        1000 epochs, patience 100 and the LR schedule on the total validation loss, raw LF inputs,
        reconstruction negatives over the whole batch."""
        return cls(**{"lr": 1e-4, "batch_size": 32, "max_epochs": 1000, "patience": 100, "monitor": "total",
                      "scale_aux": False, "negatives": "batch", **overrides})


@dataclass
class EpochLog:
    """One epoch. ``seconds`` is the whole epoch (training + validation); ``graphs_per_s`` is the
    training graphs of all processes over the training phase's ``train_seconds``."""

    epoch: int
    train_loss: float
    valid_loss: float
    lr: float
    seconds: float
    parts: dict[str, float] = field(default_factory=dict)
    graphs: int = 0  # training graphs this epoch, all processes together
    train_seconds: float = 0.0
    graphs_per_s: float = 0.0
    steps: int = 0  # optimiser steps this epoch (each process takes the same number)
    precision: str = "32"  # the forward passes' precision ("auto" resolved)


@dataclass
class StepLog:
    """One optimiser step of :func:`fit`, for progress within long epochs (``on_step``).

    ``step`` counts from 1 within the epoch, of ``steps``; ``loss`` is the epoch's running mean training
    loss so far (this process's batches); ``objective`` says what that loss adds up
    (:func:`describe_loss`)."""

    epoch: int
    step: int
    steps: int
    loss: float
    objective: str


def describe_loss(task_type: str, censored: bool, vgae_terms: bool, cfg: TrainConfig) -> str:
    """What :func:`fit` minimises, in words, e.g. ``"MSE + VGAE recon + 0.001 KL; valid: the same"``.

    The task term is ``MSE`` (regression), ``censored MSE`` (one-sided at bounds: regression with
    censored targets) or ``BCE`` (classification); with a supervised VGAE whose stages train, the
    reconstruction and KL terms follow with their weights; ``valid`` says what the validation loss
    (early stopping, LR schedule, best epoch) is: the same sum or the task term alone (``cfg.monitor``).
    """
    task = "BCE" if task_type == "classification" else ("censored MSE" if censored else "MSE")

    def weighted(w: float, name: str) -> str:
        return name if w == 1 else f"{w:g} {name}"

    terms = [weighted(cfg.task_weight, task)]
    if vgae_terms:
        terms += [weighted(cfg.recon_weight, "VGAE recon"), weighted(cfg.kl_weight, "KL")]
    valid = "the same" if cfg.monitor == "total" or not vgae_terms else terms[0]
    return " + ".join(terms) + f"; valid: {valid}"


@dataclass
class FitResult:
    best_epoch: int
    best_valid_loss: float
    epochs_run: int
    history: list[EpochLog]
    stopped_early: bool
    seconds: float
    resumed_from_epoch: int | None = None  # epochs already done in the ``resume`` state (None: fresh)
    world_size: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {**{k: v for k, v in asdict(self).items() if k != "history"},
                "history": [asdict(h) for h in self.history]}


def seed_everything(seed: int, num_threads: int = 1) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    torch.set_num_threads(num_threads)


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of the initialised ``torch.distributed`` group, else ``(0, 1)``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def censored_squared_error(pred: torch.Tensor, y: torch.Tensor, censor: torch.Tensor | None) -> torch.Tensor:
    """Elementwise squared error that respects bounds (a Tobit-style one-sided loss).

    ``censor`` 0 (or None): ``(pred - y)^2``; +1 (``y`` is a lower bound of the true value): only a
    prediction below ``y`` is an error, ``relu(y - pred)^2``; -1 (an upper bound): only one above it,
    ``relu(pred - y)^2``. A prediction on the right side of a bound costs nothing.
    """
    err = pred - y
    if censor is None:
        return err * err
    c = censor.to(err.dtype)
    # fitted: err; lower bound: min(err, 0); upper bound: max(err, 0)
    one_sided = torch.where(c > 0, err.clamp(max=0.0), err.clamp(min=0.0))
    err = torch.where(c == 0, err, one_sided)
    return err * err


def _task_loss(pred: torch.Tensor, y: torch.Tensor, task_type: str, censor: torch.Tensor | None = None,
               reduction: str = "mean") -> torch.Tensor:
    """The supervised loss over the finite targets of a batch (``reduction`` "mean" or "sum"):
    BCE-with-logits for classification, :func:`censored_squared_error` for regression."""
    mask = torch.isfinite(y)
    if not mask.any():
        return pred.sum() * 0.0
    if task_type == "classification":
        return F.binary_cross_entropy_with_logits(pred[mask], y[mask], reduction=reduction)
    se = censored_squared_error(pred[mask], y[mask], censor[mask] if censor is not None else None)
    return se.mean() if reduction == "mean" else se.sum()


def _batch_loss(model: MFModel, g, y, aux, cfg: TrainConfig, vgae_terms: bool,
                net: nn.Module | None = None, censor: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of one batch; ``net`` (a DDP wrapper of ``model``) runs the forward pass when given (under
    autocast with ``cfg.precision``; the losses are computed in fp32)."""
    with autocast(cfg.precision, cfg.device):
        out = (net or model)(g, aux)
    out = out.float()
    task = _task_loss(out.pred, y, model.spec.task_type, censor)
    loss = cfg.task_weight * task
    parts = {"task": float(task.detach())}
    if vgae_terms and out.mu is not None:
        rec = recon_loss(out.z, g.edge_index, g.batch, negatives=cfg.negatives)
        kl = kl_loss(out.mu, out.logstd, g.batch)
        loss = loss + cfg.recon_weight * rec + cfg.kl_weight * kl
        parts.update(recon=float(rec.detach()), kl=float(kl.detach()))
    return loss, parts


@torch.no_grad()
def _eval_sums(model: MFModel, data: GraphDataset, batch_size: int, device: str,
               cfg: TrainConfig | None = None, vgae_terms: bool = False) -> tuple[float, int]:
    """Summed validation loss and its count over ``data`` (this process's part): the task loss over the
    finite targets, or with ``cfg.monitor == "total"`` the training objective (task + weighted
    reconstruction and KL, per batch, as the reference's ``val_total_loss``) summed over graphs."""
    model.eval()
    total, n = 0.0, 0
    # the reconstruction's negatives come from a generator of their own, seeded alike at every evaluation:
    # the validation loss does not jitter from epoch to epoch, and training's random stream is untouched
    gen = torch.Generator(device=device).manual_seed(cfg.seed if cfg is not None else 0)
    for g, y, aux, censor in data.batches(batch_size, shuffle=False, drop_last_single=False):
        g, y = g.to(device), y.to(device)
        aux = aux.to(device) if aux is not None else None
        censor = censor.to(device) if censor is not None else None
        with autocast(cfg.precision if cfg is not None else "32", device):
            out = model(g, aux)
        out = out.float()
        if cfg is not None and cfg.monitor == "total":
            loss = cfg.task_weight * _task_loss(out.pred, y, model.spec.task_type, censor)
            if vgae_terms and out.mu is not None:
                loss = (loss + cfg.recon_weight * recon_loss(out.mu, g.edge_index, g.batch, generator=gen,
                                                             negatives=cfg.negatives)
                        + cfg.kl_weight * kl_loss(out.mu, out.logstd, g.batch))
            total += float(loss) * g.num_graphs
            n += g.num_graphs
            continue
        total += float(_task_loss(out.pred, y, model.spec.task_type, censor, reduction="sum"))
        n += int(torch.isfinite(y).sum())
    return total, n


@torch.no_grad()
def evaluate_loss(model: MFModel, data: GraphDataset, batch_size: int, device: str = "cpu") -> float:
    total, n = _eval_sums(model, data, batch_size, device)
    return total / max(n, 1)


@torch.no_grad()
def predict(model: MFModel, data: GraphDataset, batch_size: int = 256, device: str = "cpu",
            with_embeddings: bool = False, precision: str = "32") -> tuple[np.ndarray, np.ndarray | None]:
    """Model outputs (scaled units; sigmoid for classification) and optionally graph embeddings, as
    fp32 (``precision`` is the forward pass's, see :mod:`mfray.train.precision`)."""
    model.eval()
    preds, embs = [], []
    for g, _, aux, _ in data.batches(batch_size, shuffle=False, drop_last_single=False):
        g = g.to(device)
        aux = aux.to(device) if aux is not None else None
        with autocast(precision, device):
            out = model(g, aux)
        out = out.float()
        p = torch.sigmoid(out.pred) if model.spec.task_type == "classification" else out.pred
        preds.append(p.cpu().numpy())
        if with_embeddings:
            embs.append(out.graph.cpu().numpy())
    pred = np.concatenate(preds) if preds else np.zeros((0, model.spec.n_targets), np.float32)
    emb = (np.concatenate(embs) if embs else np.zeros((0, model.graph_dim), np.float32)) if with_embeddings else None
    return pred, emb


# ---------------------------------------------------------------------------- memory
@functools.cache
def _malloc_trim() -> Callable[[], object] | None:
    """glibc's ``malloc_trim`` (None elsewhere). Batches of varying shape (size-bucketed ones above all)
    leave freed blocks scattered over glibc's heaps, which it keeps: measured on the paper-size LF model,
    RSS grew from 1.3 to 2.6 GB in 10 steps (7.6 GB after a serine epoch) with ~1 GB in use; returning
    the free pages to the OS after each step holds it at ~1 GB (peak within a step ~2.1 GB)."""
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


#: seconds between two ``malloc_trim`` calls of the training loop
TRIM_EVERY_S = 2.0


class _MemoryReleaser:
    """Calls ``malloc_trim(0)`` after a training step at most every :data:`TRIM_EVERY_S` seconds (a few
    ms each: nothing next to a multi-second LF step, and rate-limited for HF steps of milliseconds)."""

    def __init__(self, device: str) -> None:
        self.trim = _malloc_trim() if torch.device(device).type == "cpu" else None
        self.every = TRIM_EVERY_S
        self.last = time.monotonic()

    def __call__(self) -> None:
        if self.trim is not None and time.monotonic() - self.last >= self.every:
            self.trim(0)
            self.last = time.monotonic()


# ---------------------------------------------------------------------------- distributed helpers
def _all_reduce(values: list[float], device: str, op: Any = None) -> list[float]:
    """Sum (or ``op``) a few numbers over all processes; float64 so graph counts stay exact."""
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=op or dist.ReduceOp.SUM)
    return t.tolist()


def _wrap_ddp(model: MFModel, device: str) -> nn.Module:
    """``DistributedDataParallel`` over the trainable parameters of ``model``.

    ``find_unused_parameters`` stays off: every trainable parameter of our models (VGAE body and
    mu/logstd convolutions via the KL and the sampled latents, every readout, the head) receives a
    gradient on every batch (a test checks each registered readout), and frozen stages have
    ``requires_grad=False`` so DDP does not track them. Gradual unfreezing re-wraps the model.
    """
    from torch.nn.parallel import DistributedDataParallel

    dev = torch.device(device)
    ids = None
    if dev.type == "cuda":
        ids = [dev.index if dev.index is not None else torch.cuda.current_device()]
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=False)


def _sync_buffers(model: nn.Module) -> None:
    """Rank 0's BatchNorm statistics everywhere, so every rank validates the same model."""
    for b in model.buffers():
        dist.broadcast(b, 0)


def _unfreeze(model: MFModel, opt: torch.optim.Optimizer, params: list[nn.Parameter]) -> list[nn.Parameter]:
    """Unfreeze every stage; the newly trainable parameters join the optimiser as a second group."""
    freeze(model, [])
    opt.add_param_group({"params": [p for p in model.parameters() if all(p is not q for q in params)],
                         "lr": opt.param_groups[0]["lr"]})
    return trainable_parameters(model)


# ---------------------------------------------------------------------------- fit state
def _rng_state(rng: np.random.Generator, device: str) -> dict[str, Any]:
    out: dict[str, Any] = {"numpy": json.dumps(rng.bit_generator.state), "torch": torch.get_rng_state()}
    if torch.device(device).type == "cuda":
        out["cuda"] = torch.cuda.get_rng_state(torch.device(device))
    return out


def _set_rng_state(entry: dict[str, Any], rng: np.random.Generator, device: str) -> None:
    rng.bit_generator.state = json.loads(entry["numpy"])
    torch.set_rng_state(entry["torch"].cpu())
    if "cuda" in entry and torch.device(device).type == "cuda":
        torch.cuda.set_rng_state(entry["cuda"].cpu(), torch.device(device))


def fit_result_from_state(state: dict[str, Any]) -> FitResult:
    """The :class:`FitResult` a fit state describes (its history; seconds summed over resumptions)."""
    names = {f.name for f in fields(EpochLog)}
    history = [EpochLog(**{k: v for k, v in h.items() if k in names}) for h in state["history"]]
    return FitResult(best_epoch=int(state["best_epoch"]), best_valid_loss=float(state["best_loss"]),
                     epochs_run=len(history), history=history, stopped_early=bool(state["stopped"]),
                     seconds=float(state.get("seconds", 0.0)), resumed_from_epoch=state.get("resumed_from_epoch"),
                     world_size=int(state.get("world_size", 1)))


# ---------------------------------------------------------------------------- the loop
def fit(
    model: MFModel,
    train: GraphDataset,
    valid: GraphDataset,
    cfg: TrainConfig,
    on_epoch: Callable[[EpochLog], bool | None] | None = None,
    *,
    on_step: Callable[[StepLog], None] | None = None,
    freeze_plan: FreezePlan | None = None,
    resume: dict[str, Any] | None = None,
    checkpoint_every: int = 0,
    on_checkpoint: Callable[[dict[str, Any]], None] | None = None,
) -> FitResult:
    """Train ``model`` in place; returns the history. The best-validation weights are restored.

    Args:
        model: the model; returned as the plain module, also when trained data parallel.
        train, valid: this process's data (its shard when ``torch.distributed`` runs several).
        cfg: optimisation settings.
        freeze_plan: what is frozen, from the transfer strategy's ``prepare`` (default: nothing): its
            stages are frozen (parameters, BatchNorm statistics, VGAE noise) until its unfreeze epoch,
            and the VGAE reconstruction/KL terms are in the loss only when the plan says so.
        on_epoch: called after every epoch (progress bars, Ray Tune reports); returning ``True``
            stops training (e.g. a scheduler pruned the trial). Data parallel: every rank calls it and
            training stops when any rank asks to.
        on_step: called after every optimiser step with a :class:`StepLog` (progress within long
            epochs); this process's own steps and losses, no communication.
        resume: a fit state from ``on_checkpoint`` (after ``torch.save``/``torch.load``): the model,
            optimiser, scheduler, best weights, early-stopping counters, RNG states and history are
            restored and training continues at the next epoch. Build ``model`` as for the original
            run (same spec, same frozen stages). A state whose run stopped early trains no further.
        checkpoint_every: hand a state to ``on_checkpoint`` after every this many epochs (0: only
            after the last epoch).
        on_checkpoint: receives the fit state after every ``checkpoint_every``-th epoch and after the
            last one (also an early stop), on every rank (data parallel: it is a collective call, and
            the state holds every rank's RNG state). The state shares tensors with the live model and
            optimiser: serialise (``torch.save``) or deep-copy it inside the callback.
    """
    if cfg.lr is None:
        raise MfrayError("TrainConfig.lr is None: resolve it (train_hf takes the strategy's) before fit")
    t_start = time.perf_counter()
    rank, world_size = world()
    distributed = world_size > 1
    seed_everything(cfg.seed + rank, cfg.num_threads)
    device = cfg.device
    # "auto" is decided once, on this device (and recorded in the history)
    cfg = replace(cfg, precision=resolve_precision(cfg.precision, device))
    model.to(device)
    set_checkpointing = getattr(model, "set_checkpointing", None)
    if cfg.activation_checkpointing and callable(set_checkpointing):
        set_checkpointing(True)
    rng = np.random.default_rng(cfg.seed + rank)
    plan = freeze_plan or FreezePlan()
    frozen = freeze(model, plan.stages)
    params = trainable_parameters(model)
    if not params:
        raise MfrayError(f"nothing to train: freezing {', '.join(sorted(plan.stages)) or 'no stage'} leaves no trainable "
                         f"parameter (the other stages have none, e.g. a parameter-free readout); freeze fewer stages")
    opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=cfg.lr_factor, patience=cfg.lr_patience)
    best_loss, best_epoch, best_state = math.inf, -1, copy.deepcopy(model.state_dict())
    history: list[EpochLog] = []
    stale = 0
    stopped = False
    start, resumed_from, seconds_before = 0, None, 0.0

    if resume is not None:
        fmt = resume.get("format") if isinstance(resume, dict) else None
        if fmt != STATE_FORMAT:
            raise ResumeError(f"not a fit state of format {STATE_FORMAT} (got format {fmt!r})")
        start = int(resume["epoch"]) + 1
        resumed_from = start
        if plan.unfreeze_epoch is not None and start > plan.unfreeze_epoch and frozen:
            # past the unfreeze: the saved optimiser has the second parameter group it added
            params = _unfreeze(model, opt, params)
            frozen = set()
        if sorted(frozen) != list(resume["frozen"]):
            raise ResumeError(f"the fit state was saved with frozen stages {list(resume['frozen'])}, this run "
                              f"freezes {sorted(frozen)}: freeze as for the original run")
        try:
            model.load_state_dict(resume["model"])
            opt.load_state_dict(resume["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise ResumeError(f"the fit state does not fit this model: {e}") from None
        sched.load_state_dict(resume["scheduler"])
        best_state = resume["best_state"]
        best_loss, best_epoch = float(resume["best_loss"]), int(resume["best_epoch"])
        stale, stopped = int(resume["stale"]), bool(resume["stopped"])
        seconds_before = float(resume.get("seconds", 0.0))
        names = {f.name for f in fields(EpochLog)}
        history = [EpochLog(**{k: v for k, v in h.items() if k in names}) for h in resume["history"]]
        rngs = resume["rng"]
        if rank < len(rngs):
            _set_rng_state(rngs[rank], rng, device)
        else:  # more processes than the run that saved the state: a fresh, deterministic stream
            seed_everything(cfg.seed + rank + 7919 * start, cfg.num_threads)
            rng = np.random.default_rng([cfg.seed + rank, start])

    def state(epoch: int) -> dict[str, Any]:
        own = _rng_state(rng, device)
        if distributed:
            rngs: list[Any] = [None] * world_size
            dist.all_gather_object(rngs, own)
        else:
            rngs = [own]
        return {
            "format": STATE_FORMAT, "epoch": epoch, "model": model.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(), "best_state": best_state, "best_loss": float(best_loss),
            "best_epoch": best_epoch, "stale": stale, "stopped": stopped, "frozen": sorted(frozen),
            "history": [asdict(h) for h in history], "rng": rngs, "world_size": world_size,
            "seconds": seconds_before + time.perf_counter() - t_start, "resumed_from_epoch": resumed_from,
        }

    if resume is None:
        # the starting point is a candidate too: a model that only gets worse on validation returns to
        # it (for delta, the lf_linear floor; for a fine-tuned LF model, the transferred weights)
        train_mode(model, frozen)
        model.eval()
        vt, vn = _eval_sums(model, valid, max(cfg.batch_size, 256), device, cfg, plan.vgae_losses)
        if distributed:
            vt, vn = _all_reduce([vt, vn], device)
        if vn:
            best_loss, best_epoch = vt / vn, -1
    net = _wrap_ddp(model, device) if distributed else None
    release = _MemoryReleaser(device)
    for epoch in range(start, cfg.max_epochs):
        if stopped:
            break
        t0 = time.perf_counter()
        current = plan.at(epoch)
        if frozen and not current.stages:  # gradual unfreezing
            params = _unfreeze(model, opt, params)
            frozen = set()
            net = _wrap_ddp(model, device) if distributed else None
        train_mode(model, frozen)
        vgae_terms = current.vgae_losses
        steps = train.num_batches(cfg.batch_size)
        if cfg.max_steps_per_epoch is not None:
            steps = min(steps, cfg.max_steps_per_epoch)
        if distributed:  # DDP hangs unless every rank takes the same number of steps
            steps = int(_all_reduce([steps], device, dist.ReduceOp.MIN)[0])
        total, n, parts_sum = 0.0, 0, {}
        step = 0
        objective = (describe_loss(model.spec.task_type, train.censor is not None, vgae_terms and model.spec.vgae, cfg)
                     if on_step is not None else "")
        if steps > 0:
            for g, y, aux, censor in train.batches(cfg.batch_size, shuffle=True, rng=rng, bucket=cfg.bucket_by_size):
                g, y = g.to(device), y.to(device)
                aux = aux.to(device) if aux is not None else None
                censor = censor.to(device) if censor is not None else None
                loss, parts = _batch_loss(model, g, y, aux, cfg, vgae_terms, net, censor)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                release()
                b = g.num_graphs
                total += float(loss.detach()) * b
                n += b
                for k, v in parts.items():
                    parts_sum[k] = parts_sum.get(k, 0.0) + v * b
                step += 1
                if on_step is not None:
                    on_step(StepLog(epoch=epoch, step=step, steps=steps, loss=total / max(n, 1), objective=objective))
                if step >= steps:
                    break
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        train_s = time.perf_counter() - t0
        if distributed:
            _sync_buffers(model)
        val_total, val_n = _eval_sums(model, valid, max(cfg.batch_size, 256), device, cfg, vgae_terms)
        if distributed:
            keys = ("task", "recon", "kl")
            sums = _all_reduce([total, n, val_total, val_n, *(parts_sum.get(k, 0.0) for k in keys),
                                1.0 if "recon" in parts_sum else 0.0], device)
            total, n, val_total, val_n = sums[0], int(sums[1]), sums[2], int(sums[3])
            parts_sum = {k: v for k, v in zip(keys, sums[4:7]) if k == "task" or sums[7] > 0}
        val = val_total / max(val_n, 1)
        sched.step(val)
        log = EpochLog(epoch=epoch, train_loss=total / max(n, 1), valid_loss=val, lr=opt.param_groups[0]["lr"],
                       seconds=time.perf_counter() - t0, parts={k: v / max(n, 1) for k, v in parts_sum.items()},
                       graphs=int(n), train_seconds=train_s, graphs_per_s=n / train_s if train_s > 0 else 0.0,
                       steps=step, precision=cfg.precision)
        history.append(log)
        if val < best_loss - 1e-12:
            best_loss, best_epoch, stale = val, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
        stop = bool(on_epoch(log)) if on_epoch is not None else False
        if distributed:
            stop = _all_reduce([float(stop)], device, dist.ReduceOp.MAX)[0] > 0
        if stop or (cfg.patience and stale >= cfg.patience):
            stopped = True
        last = stopped or epoch == cfg.max_epochs - 1
        if on_checkpoint is not None and (last or (checkpoint_every > 0 and (epoch + 1) % checkpoint_every == 0)):
            on_checkpoint(state(epoch))
    model.load_state_dict(best_state)
    model.eval()
    if cfg.activation_checkpointing and callable(set_checkpointing):
        set_checkpointing(False)
    return FitResult(best_epoch=best_epoch, best_valid_loss=best_loss, epochs_run=len(history), history=history,
                     stopped_early=stopped, seconds=time.perf_counter() - t_start, resumed_from_epoch=resumed_from,
                     world_size=world_size)
