"""What runs inside Ray workers: one search trial (a Tune function trainable), one refit, one baseline.

Each builds the same :class:`mfray.train.task.HFRunConfig` from a resolved configuration
(:func:`mfray.run.study.space.resolve_config`), so a refit of the best trial trains exactly what
the trial trained, on another split seed.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


from mfray.run.study.space import resolve_config
from mfray.run.study.spec import StudySpec
from mfray.utils.errors import MfrayError
from mfray.utils.location import Location

TRIAL_STATE = "fit_state.pt"
#: testing hook: the first attempt of the first N trials of a search raises (exercises the retry policy)
FAULT_ENV = "MFRAY_INJECT_TRIAL_FAULTS"


@dataclass(frozen=True)
class TrialContext:
    """Everything a trial needs besides its sampled params (shipped once via ``tune.with_parameters``)."""

    study: StudySpec
    store_path: str
    targets: list[str] | None
    lf_target: str | None
    setting: str
    strategy: str
    search_seed: int  # the split seed searches run on
    lf_checkpoints: dict[str, str] = field(default_factory=dict)  # LF readout -> checkpoint location
    outputs: str | None = None  # LF outputs (predictions, embeddings) location
    outputs_checkpoint: str | None = None  # the LF checkpoint those outputs came from
    dataset_spec: dict[str, Any] | None = None  # to rebuild the store on a node that lacks it
    driver_cache: str | None = None  # the driver's graph-store root (a node with its own cache keeps its copy there)
    censored: str | None = None  # the task's censored-label policy (TaskPlan.censored)


def load_study_task(ctx: TrialContext, seed: int):
    """The task of ``ctx`` on split ``seed``, with LF outputs joined and the setting applied."""
    from mfray.data.store import GraphStore
    from mfray.data.tasks import load_task

    from mfray.run.featurize import ensure_local_store

    # a worker node without a shared cache builds its own copy once
    store_path = ensure_local_store(ctx.store_path, ctx.dataset_spec, ctx.driver_cache)
    from mfray.transfer import LF_OUTPUTS

    aux_files = {LF_OUTPUTS: Location(ctx.outputs).local_copy()} if ctx.outputs else None
    task = load_task(GraphStore(store_path), seed, targets=ctx.targets, lf_target=ctx.lf_target, aux_files=aux_files,
                     censored=ctx.censored)
    return task.for_setting(ctx.setting)


def hf_run_config(ctx: TrialContext, task, config: dict[str, Any], train_seed: int):
    from mfray.train.loop import TrainConfig
    from mfray.train.task import HFRunConfig
    from mfray.transfer import LF_OUTPUTS, outputs_sources

    lf = outputs_sources(task, LF_OUTPUTS) if ctx.outputs else None
    lf_ckpt = None
    if config.get("lf_readout"):
        lf_ckpt = str(Location(ctx.lf_checkpoints[config["lf_readout"]]).local_copy())
    train = TrainConfig(**config["train"], seed=train_seed)
    return HFRunConfig(strategy=config["strategy"], readout=config.get("readout"), model=dict(config["model"]),
                       train=train, lf_checkpoint=lf_ckpt, lf_prediction=lf.prediction if lf else None,
                       lf_embedding=lf.embedding if lf else None, freeze=config.get("freeze"),
                       unfreeze_epoch=config.get("unfreeze_epoch"), lf_model_ref=ctx.outputs_checkpoint if lf else None)


def _trial_index(trial_dirname: str, trial_id: str) -> int | None:
    """Tune's trial number (1-based under a search algorithm), from its folder ``<trainable>_<id>_<n>_<params>``."""
    m = re.search(re.escape(trial_id) + r"_(\d+)", trial_dirname) if trial_id else None
    return int(m.group(1)) if m else None


def _attempt(trial_dir: str | None) -> int:
    """1 for a trial's first run, 2 for its first retry, ... (counted in the trial's own folder)."""
    if not trial_dir:
        return 1
    p = Path(trial_dir) / ".mfray_attempts"
    n = int(p.read_text()) + 1 if p.exists() else 1
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(str(n))
    return n


def hf_trial(config: dict[str, Any], ctx: TrialContext) -> None:
    """Ray Tune function trainable: train one configuration on the search seed, report every epoch.

    Reports ``valid_loss`` = the best validation loss so far (what ASHA compares at its rungs and
    what Optuna is told at the end), plus the epoch's own losses and timestamps.
    """
    from ray import tune

    from mfray.train.task import train_hf

    t_start = time.time()
    tctx = tune.get_context()
    trial_id = tctx.get_trial_id() or ""
    attempt = _attempt(tctx.get_trial_dir())
    n_fail = int(os.environ.get(FAULT_ENV, "0") or 0)
    index = _trial_index(os.path.basename(tctx.get_trial_dir() or ""), trial_id)
    if attempt == 1 and n_fail and index is not None and index <= n_fail:
        raise RuntimeError(f"injected fault ({FAULT_ENV}={n_fail}) in trial {trial_id}, attempt {attempt}")
    import tempfile

    import torch

    params = {k: v for k, v in config.items()}
    resolved = resolve_config(ctx.study, ctx.strategy, params)
    task = load_study_task(ctx, ctx.search_seed)
    cfg = hf_run_config(ctx, task, resolved, train_seed=ctx.study.search.seed)
    every = ctx.study.search.checkpoint_every
    resume = None
    saved = tune.get_checkpoint()  # a restored trial: continue where its last checkpoint left off
    if saved is not None:
        with saved.as_directory() as d:
            resume = torch.load(Path(d) / TRIAL_STATE, map_location="cpu", weights_only=True)
    best = [float(resume["best_loss"]) if resume else float("inf")]
    pending: list[dict[str, Any]] = []

    def metrics(log) -> dict[str, Any]:
        best[0] = min(best[0], log.valid_loss)
        return {"valid_loss": best[0], "epoch_valid_loss": log.valid_loss, "train_loss": log.train_loss,
                "epoch": log.epoch + 1, "lr": log.lr, "attempt": attempt, "t_start": t_start, "t": time.time()}

    def on_epoch(log) -> None:
        # one report per epoch (ASHA counts them); on checkpoint epochs it waits for the state
        if every and (log.epoch + 1) % every == 0:
            pending.append(metrics(log))
        else:
            tune.report(metrics(log))

    def on_checkpoint(state: dict[str, Any]) -> None:
        if not pending:  # the final state of a finished fit: the trial is over, nothing to resume
            return
        with tempfile.TemporaryDirectory() as tmp:
            torch.save(state, Path(tmp) / TRIAL_STATE)
            tune.report(pending.pop(), checkpoint=tune.Checkpoint.from_directory(tmp))

    train_hf(task, cfg, on_epoch=on_epoch, resume=resume, checkpoint_every=every,
             on_checkpoint=on_checkpoint if every else None)


#: what a refit keeps in its run folder (``<storage>/runs/<run key>/``): the best-validation model
#: (``mfray study export`` / ``mfray predict``) and its per-molecule predictions of every fold
RUN_FILES = ("best.ckpt", "predictions.parquet")  # + config.json, the resolved configuration


def refit(ctx: TrialContext, config: dict[str, Any], seed: int, run_dir: str | list[str] | None) -> dict[str, Any]:
    """Train the selected configuration on split ``seed``; metrics of its best-validation epoch. With
    ``run_dir`` (one, or several for a fit recorded under several runs) the model and its predictions
    are kept there (:data:`RUN_FILES`)."""
    import tempfile

    from mfray.train.task import train_hf

    started = datetime.now(UTC)
    task = load_study_task(ctx, seed)
    cfg = hf_run_config(ctx, task, config, train_seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        res = train_hf(task, cfg, out_dir=tmp if run_dir else None)
        for d in ([run_dir] if isinstance(run_dir, str) else run_dir or []):
            for name in RUN_FILES:
                Location(d).child(name).put(Path(tmp) / name)
            Location(d).child("config.json").write_json(
                {"task": task.name, "dataset": task.dataset, "setting": task.setting, "split_seed": seed,
                 "strategy": cfg.strategy, "config": config, "lf_checkpoint": cfg.lf_checkpoint or cfg.lf_model_ref})
    return {"task": task.name, "dataset": task.dataset, "metrics": res.metrics, "best_epoch": res.fit.best_epoch,
            # what was built and trained (the record says this, not what the config asked for)
            "readout": res.readout, "freeze": list(res.freeze_plan.stages), "lr": res.train_config.lr,
            "epochs_run": res.fit.epochs_run, "n_train_hf": task.train.n_labelled(task.censored), "censored": task.censored,
            "started_at": started, "finished_at": datetime.now(UTC), "seconds": res.fit.seconds}


def baseline(ctx: TrialContext, name: str, seed: int, grid: str) -> dict[str, Any]:
    """A classical baseline (rf, svr on Morgan fingerprints; lf_linear on the LF label) on split ``seed``."""
    from mfray.baselines import run_baseline

    started = datetime.now(UTC)
    task = load_study_task(ctx, seed)
    if len(task.targets) != 1:
        raise MfrayError(f"baseline {name} fits one target; task {task.name} has {task.targets}")
    res = run_baseline(task, name, features="morgan", grid=grid, seed=seed)
    return {"task": task.name, "dataset": task.dataset, "metrics": res.metrics, "best_epoch": None,
            "params": res.best_params, "fit_on": res.search.get("fit_on"), "n_train_hf": task.train.n_labelled(task.censored), "censored": task.censored,
            "started_at": started, "finished_at": datetime.now(UTC)}


def export_lf_outputs(checkpoint: str, store_path: str, dest: str, dataset_spec: dict[str, Any] | None = None,
                      driver_cache: str | None = None) -> int:
    """LF predictions and embeddings -> Parquet at ``dest``, for the molecules the study's tasks can ask
    about: those labelled at a fidelity other than the one the LF model was trained on (a primary
    screen's 10^5-10^6 LF-only molecules are never an HF task's input). A store with nothing but the
    LF model's fidelity: every molecule."""
    import tempfile

    import polars as pl

    from mfray.data.store import GraphStore
    from mfray.models.checkpoint import load_model
    from mfray.train.task import embed_with, write_embeddings

    from mfray.run.featurize import ensure_local_store

    local = Location(checkpoint).local_copy()
    store = GraphStore(ensure_local_store(store_path, dataset_spec, driver_cache))
    model, ckpt = load_model(local)
    fidelity = ckpt.get("meta", {}).get("fidelity")
    labels = store.table("task_labels")
    ids = labels.filter(pl.col("fidelity") != fidelity)["mol_id"].unique().sort().to_numpy() if fidelity else None
    table = embed_with(model, ckpt, store, ids if ids is not None and len(ids) else None)
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "outputs.parquet"
        write_embeddings(table, p)
        Location(dest).put(p)
    return table.num_rows
