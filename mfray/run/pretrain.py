"""Distributed, resumable LF pretraining on Ray Train (``TorchTrainer``, DDP over gloo or NCCL).

Every worker runs the same pieces as the single-process ``mfray.train.task.pretrain_lf``: it builds
the seeded model and loads only ITS shard of the training (and validation) molecules
(:func:`mfray.train.task.prepare_lf`), then runs the pure-torch :func:`mfray.train.loop.fit`, which
wraps the model in ``DistributedDataParallel``. After every epoch each worker calls
``ray.train.report``; rank 0 attaches a checkpoint holding the loop's fit state (``state.pt``) and what
``lf.ckpt`` records besides weights (``lf_info.json``). When the run ends the driver reads the latest
checkpoint and writes ``out_dir/lf.ckpt`` (the best-validation weights, the same format as
``mfray pretrain`` without Ray) and ``history.json`` atomically.

Resuming: Ray Train V2 keeps a run's checkpoints under ``storage_path/name``. Creating the trainer
again with the same ``(storage_path, name)`` (after a killed driver, a lost node, or to train more
epochs) hands the workers the latest checkpoint and training continues at the next epoch.
:func:`run_name` derives the name from the store and the config (not ``max_epochs``: the first k
epochs of any run are the same), so re-running one command resumes it.
"""

from __future__ import annotations

import json
import logging
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from mfray.data.store import GraphStore
from mfray.train.task import LFRunConfig
from mfray.utils.errors import MfrayError
from mfray.utils.hashing import hash_obj

STATE_FILE = "state.pt"
INFO_FILE = "lf_info.json"


class PretrainError(MfrayError):
    """Distributed pretraining could not run or finish."""


@dataclass
class PretrainResult:
    """What a distributed LF pretraining produced.

    ``resumed_from_epoch`` is the number of epochs already done in the checkpoint the (last) attempt
    started from, None for a fresh run; ``graphs_per_s`` is the mean training throughput (all workers
    together) over the epochs, ``graphs_per_s_per_epoch`` the per-epoch values; ``peak_rss_mb`` the
    peak resident memory of each worker process (rank order), measured by the workers themselves
    (``data_mb``: the part of it that is the worker's shard of the graphs).
    """

    checkpoint: Path
    best_epoch: int
    best_valid_loss: float
    epochs_run: int
    resumed_from_epoch: int | None
    graphs_per_s: float
    graphs_per_s_per_epoch: list[float]
    peak_rss_mb: list[float]
    seconds: float
    num_workers: int
    run_path: str
    history: list[dict[str, Any]] = field(default_factory=list)
    load_seconds: list[float] = field(default_factory=list)  # per worker: reading its shard of the store
    data_mb: list[float] = field(default_factory=list)  # per worker: its shard of graphs and labels in memory
    peak_gpu_mb: list[float] = field(default_factory=list)  # per worker: torch.cuda.max_memory_allocated (0 on CPU)


def peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / (1024 * 1024) if sys.platform == "darwin" else kb / 1024  # bytes on macOS, KiB on Linux


def run_name(store: GraphStore, cfg: LFRunConfig, num_workers: int) -> str:
    """A deterministic Ray Train run name for pretraining ``cfg`` on ``store`` with ``num_workers``.

    It hashes the store key and every setting that changes the training trajectory; ``max_epochs``,
    threads and the device are left out, so the same command with more epochs continues the run.
    """
    train = {k: v for k, v in asdict(cfg.train).items() if k not in ("max_epochs", "num_threads", "device",
                                                                       "activation_checkpointing")}
    key = hash_obj({"store": store.manifest.get("key"), "dataset": store.manifest.get("dataset"),
                    "readout": cfg.readout, "model": cfg.model, "fidelity": cfg.fidelity,
                    "valid_fraction": cfg.valid_fraction, "max_molecules": cfg.max_molecules, "train": train,
                    "num_workers": num_workers}, n=12)
    return f"pretrain-{store.manifest.get('dataset', 'lf')}-{cfg.readout}-{key}"


def _resolve_storage(storage_path: str | Path) -> str:
    s = str(storage_path)
    if "://" in s:
        return s
    p = Path(s).expanduser().resolve()
    p.mkdir(parents=True, exist_ok=True)
    return str(p)


def _quiet_report_log() -> None:
    """Ray Train 2.60 logs every ``report`` of every worker at INFO through a logger named by its source
    file, which ``LoggingConfig`` does not cover; that is one console line per worker and epoch."""
    try:
        from ray.train.v2._internal.execution import context as train_context
    except ImportError:  # another Ray version: leave its logging alone
        return
    logging.getLogger(train_context.__file__).setLevel(logging.WARNING)


def _train_worker(config: dict[str, Any]) -> dict[str, Any] | None:
    """``train_loop_per_worker``: one rank of the data-parallel LF pretraining."""
    import torch
    import torch.distributed as dist

    import ray.train
    import ray.train.torch

    from mfray.train.loop import fit
    from mfray.train.task import lf_checkpoint_info, prepare_lf

    _quiet_report_log()
    ctx = ray.train.get_context()
    rank, world_size = ctx.get_world_rank(), ctx.get_world_size()
    cfg: LFRunConfig = config["cfg"]
    device = str(ray.train.torch.get_device()) if config["use_gpu"] else "cpu"
    train_cfg = replace(cfg.train, device=device)
    cfg = replace(cfg, train=train_cfg)
    torch.set_num_threads(train_cfg.num_threads)

    from mfray.run.featurize import ensure_local_store

    # a node without a shared cache builds its own copy once
    store_path = ensure_local_store(config["store_path"], config.get("dataset_spec"), config.get("driver_cache"))
    prep = prepare_lf(GraphStore(store_path), cfg, rank=rank, world_size=world_size)
    info = json.dumps(lf_checkpoint_info(prep, cfg))

    resume = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            resume = torch.load(Path(d) / STATE_FILE, map_location="cpu", weights_only=True)

    def on_checkpoint(state: dict[str, Any]) -> None:
        log = state["history"][-1]
        metrics = {"epoch": int(state["epoch"]), "train_loss": log["train_loss"], "valid_loss": log["valid_loss"],
                   "lr": log["lr"], "graphs_per_s": log["graphs_per_s"], "best_epoch": int(state["best_epoch"]),
                   "best_valid_loss": float(state["best_loss"]), "peak_rss_mb": peak_rss_mb()}
        if rank != 0:
            ray.train.report(metrics, checkpoint=None)
            return
        # sys.stdout, not print: Ray Train patches print() into a logger that echoes every line twice
        sys.stdout.write(f"epoch {metrics['epoch']}: train {metrics['train_loss']:.4f} valid "
                         f"{metrics['valid_loss']:.4f} lr {metrics['lr']:.1e} {metrics['graphs_per_s']:.0f} graphs/s "
                         f"peak RSS {metrics['peak_rss_mb']:.0f} MB\n")
        sys.stdout.flush()
        tmp = tempfile.mkdtemp(prefix="mfray-lf-")
        try:
            torch.save(state, Path(tmp) / STATE_FILE)
            (Path(tmp) / INFO_FILE).write_text(info)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    objective = [""]

    def on_step(s) -> None:
        """Rank 0 tells the driver what the loss adds up (once) and where a long epoch is, ~10 times an epoch."""
        if rank != 0:
            return
        if s.objective != objective[0]:
            objective[0] = s.objective
            sys.stdout.write(f"loss = LF {s.objective}\n")
        if s.step < s.steps and s.step % max(1, s.steps // 10) == 0:
            sys.stdout.write(f"epoch {s.epoch}: step {s.step}/{s.steps}, train loss {s.loss:.4f}\n")
        sys.stdout.flush()

    res = fit(prep.model, prep.train, prep.valid, train_cfg, resume=resume, checkpoint_every=1,
              on_checkpoint=on_checkpoint, on_step=on_step)
    data_mb = sum(d.rows.nbytes + (d.y.nbytes if d.y is not None else 0) for d in (prep.train, prep.valid)) / 2**20
    gpu_mb = torch.cuda.max_memory_allocated(torch.device(device)) / 2**20 if device.startswith("cuda") else 0.0
    own = {"peak_rss_mb": peak_rss_mb(), "load_seconds": prep.load_seconds, "data_mb": data_mb, "peak_gpu_mb": gpu_mb}
    everyone: list[Any] = [own]
    if dist.is_available() and dist.is_initialized() and world_size > 1:
        everyone = [None] * world_size
        dist.all_gather_object(everyone, own)
    if rank != 0:
        return None
    return {"resumed_from_epoch": res.resumed_from_epoch, "epochs_run": res.epochs_run,
            **{k: [e[k] for e in everyone] for k in ("peak_rss_mb", "load_seconds", "data_mb", "peak_gpu_mb")}}


def pretrain_lf_distributed(
    store_path: str | Path,
    cfg: LFRunConfig,
    out_dir: str | Path,
    *,
    storage_path: str | Path,
    name: str,
    num_workers: int = 1,
    use_gpu: bool = False,
    resources_per_worker: dict[str, float] | None = None,
    max_failures: int = 0,
    log: Callable[[str], None] = print,
    dataset_spec: dict[str, Any] | None = None,
    driver_cache: str | None = None,
) -> PretrainResult:
    """Pretrain an LF model with Ray Train on ``num_workers`` workers; write ``out_dir/lf.ckpt``.

    Args:
        store_path: the graph store (a path every worker can read: shared storage on a cluster).
        cfg: the LF run; ``cfg.train.batch_size`` is per worker (global batch = workers x batch size).
        out_dir: where ``lf.ckpt`` and ``history.json`` go.
        storage_path: Ray Train storage (a folder, or a URI such as ``s3://bucket/runs``) holding the
            run's checkpoints; with ``name`` it identifies the run, so calling again resumes it.
        name: the run's name (see :func:`run_name`).
        num_workers: data-parallel workers (one process each).
        use_gpu: one GPU per worker, NCCL; else CPU and gloo.
        resources_per_worker: Ray resources per worker (default: Ray Train's, one CPU or one GPU).
        max_failures: worker-group restarts Ray Train attempts (each resumes from the last checkpoint).
        log: progress messages.
        dataset_spec: the dataset's spec (``model_dump`` plus ``spec_path``): a worker on a node without
            the store builds it from this (see :func:`mfray.run.featurize.ensure_local_store`).
        driver_cache: this process's graph-store root; a worker node whose ``MFRAY_CACHE`` differs keeps
            its copy of the store in its own cache (:func:`mfray.run.featurize.node_store_path`).
    """
    import torch

    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from mfray.models import ModelSpec, build_model
    from mfray.run.runtime import ensure_ray
    from mfray.train.loop import fit_result_from_state
    from mfray.train.task import lf_setup, write_lf_outputs

    if num_workers < 1:
        raise PretrainError(f"num_workers must be at least 1 (got {num_workers})")
    store = GraphStore(store_path)  # a complete store, or a clear error here rather than in every worker
    t0 = time.perf_counter()
    storage = _resolve_storage(storage_path)
    # Ray Train V2 watches its controller through Ray's State API, which the dashboard serves
    dashboard = ensure_ray(dashboard=True)
    if dashboard:
        log(f"Ray dashboard: {dashboard} (while this runs)")
    log(f"pretraining {cfg.readout} LF model on {store.manifest.get('dataset')} with Ray Train: {num_workers} "
        f"worker(s) ({'GPU, nccl' if use_gpu else 'CPU, gloo'}), run {storage}/{name}")
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config={"cfg": cfg, "store_path": str(store.path.resolve()), "use_gpu": use_gpu,
                           "dataset_spec": dataset_spec, "driver_cache": driver_cache},
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=num_workers, use_gpu=use_gpu,
                                               resources_per_worker=resources_per_worker),
        run_config=ray.train.RunConfig(name=name, storage_path=storage,
                                       failure_config=ray.train.FailureConfig(max_failures=max_failures),
                                       checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
                                       logging_config=ray.train.LoggingConfig(log_level="WARNING")),
    )
    try:
        result = trainer.fit()
    except Exception as e:  # TrainingFailedError wraps the worker's exception
        raise PretrainError(f"Ray Train run {storage}/{name} failed: {type(e).__name__}: {e}") from e
    if result.checkpoint is None:
        raise PretrainError(f"Ray Train run {storage}/{name} finished without a checkpoint (max_epochs "
                            f"{cfg.train.max_epochs}?)")
    with result.checkpoint.as_directory() as d:
        state = torch.load(Path(d) / STATE_FILE, map_location="cpu", weights_only=True)
        info = json.loads((Path(d) / INFO_FILE).read_text())
    res = fit_result_from_state(state)
    ret = result.return_value or {}
    res.resumed_from_epoch = ret.get("resumed_from_epoch")
    model = build_model(ModelSpec.model_validate(info["model_spec"]))
    model.load_state_dict(state["best_state"])
    model.eval()
    extra = {"num_workers": num_workers, "global_batch_size": cfg.train.batch_size * num_workers,
             "ray_run": f"{storage}/{name}"}
    # which molecules it saw: lf_setup is deterministic and reads label tables only
    path = write_lf_outputs(out_dir, model, info, res, extra_meta=extra, setup=lf_setup(store, cfg))
    per_epoch = [h.graphs_per_s for h in res.history]
    measured = [g for g in per_epoch if g > 0]
    out = PretrainResult(
        checkpoint=path, best_epoch=res.best_epoch, best_valid_loss=res.best_valid_loss, epochs_run=res.epochs_run,
        resumed_from_epoch=res.resumed_from_epoch, graphs_per_s=sum(measured) / len(measured) if measured else 0.0,
        graphs_per_s_per_epoch=per_epoch, peak_rss_mb=list(ret.get("peak_rss_mb", [])),
        seconds=time.perf_counter() - t0, num_workers=num_workers, run_path=str(result.path),
        history=[asdict(h) for h in res.history], load_seconds=list(ret.get("load_seconds", [])),
        data_mb=list(ret.get("data_mb", [])), peak_gpu_mb=list(ret.get("peak_gpu_mb", [])))
    resumed = "" if out.resumed_from_epoch is None else f" ({out.resumed_from_epoch} done before this call)"
    log(f"pretrained: {out.epochs_run} epochs{resumed}, best epoch {out.best_epoch}; wrote {path}")
    return out
