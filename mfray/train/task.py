"""Train one high-fidelity model of one task with one transfer strategy; pretrain an LF model.

This is the single-process unit of work that the CLI (``mfray train`` / ``mfray pretrain``) runs
directly and that Ray Tune / Ray Train wrap in a later layer.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from mfray.chem.featurizers import build_featurizers
from mfray.data.store import GraphStore
from mfray.data.tasks import FOLD_NAMES, Task
from mfray.models import MFModel, ModelSpec, build_model
from mfray.models.checkpoint import load_model, save_checkpoint
from mfray.models.freezing import freeze
from mfray.train.data import GraphDataset
from mfray.train.loop import EpochLog, FitResult, TrainConfig, fit, predict, seed_everything
from mfray.train.metrics import compute_metrics
from mfray.train.scaling import Scaler
from mfray.transfer import LF_EMBEDDING, LF_LABEL, LF_PREDICTION, get_strategy
from mfray.transfer.strategies import load_pretrained_stages
from mfray.utils.errors import MfrayError
from mfray.utils.io import write_json_atomic


@dataclass
class HFRunConfig:
    """What ``mfray train`` resolves: a strategy, model choices and the optimisation protocol."""

    strategy: str = "base"
    readout: str | None = None  # default: the strategy's (sum||mean||max for HF models)
    model: dict[str, Any] = field(default_factory=dict)  # ModelSpec overrides (hidden_dim, encoder, ...)
    train: TrainConfig = field(default_factory=TrainConfig)
    lf_checkpoint: str | None = None  # LF model for predicted_label / hybrid / embeddings / tune_*
    lf_prediction: str | None = None  # a task aux key (e.g. "artifact:STPredSD") instead of a checkpoint
    lf_embedding: str | None = None  # a task aux key (e.g. "artifact:STEmbeddings")
    freeze: list[str] | None = None  # override the strategy's frozen stages


@dataclass
class HFRunResult:
    metrics: dict[str, dict[str, float]]
    fit: FitResult
    model_spec: ModelSpec
    predictions: pl.DataFrame  # fold, mol_id, target, y_true, y_pred, censor (0 fitted, +-1 a bound)
    n_params: int
    n_trainable: int
    checkpoint: Path | None = None


def _datasets(store: GraphStore, spec: ModelSpec, ids: np.ndarray, y: np.ndarray | None,
              aux: np.ndarray | None, censor: np.ndarray | None = None) -> GraphDataset:
    atom_f, bond_f = build_featurizers(spec.featurizer, spec.max_atomic_number)
    return GraphDataset(store.graphs(ids), y, aux, atom_f, bond_f, censor)


def lf_outputs(model: MFModel, ckpt: dict[str, Any], store: GraphStore, mol_ids: np.ndarray,
               batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """An LF model's predictions (original units) and graph embeddings for ``mol_ids``."""
    data = _datasets(store, model.spec, mol_ids, None, None)
    pred, emb = predict(model, data, batch_size=batch_size, with_embeddings=True)
    scaler = ckpt.get("scalers", {}).get("y")
    if scaler and model.spec.task_type == "regression":
        pred = Scaler.from_dict(scaler).inverse(pred)
    return pred.astype(np.float32), emb.astype(np.float32)


def _first_key(task: Task, prefix: str, width_one: bool) -> str | None:
    """The first stored input with ``prefix`` of the right width, in the order the spec declares them
    (``load_task`` keeps that order in ``aux``)."""
    for key, arr in task.train.aux.items():
        if key.startswith(prefix) and (arr.shape[1] == 1) == width_one:
            return key
    return None


def resolve_lf_inputs(task: Task, cfg: HFRunConfig, needs: tuple[str, ...]) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, str]]:
    """Per fold, the LF arrays a strategy needs, and where each came from (for the record)."""
    out: dict[str, dict[str, np.ndarray]] = {f: {} for f in FOLD_NAMES}
    origin: dict[str, str] = {}
    if LF_LABEL in needs:
        if "lf_label" not in task.train.aux:
            raise MfrayError(f"{task.name}: the dataset has no lower-fidelity labels for the label strategies")
        for f in FOLD_NAMES:
            out[f][LF_LABEL] = task.folds[f].aux["lf_label"]
        origin[LF_LABEL] = f"measured {task.lf_fidelity}/{task.lf_target}"
    model_needed = [k for k in (LF_PREDICTION, LF_EMBEDDING) if k in needs]
    keys = {LF_PREDICTION: cfg.lf_prediction, LF_EMBEDDING: cfg.lf_embedding}
    lf_model = None
    for k in model_needed:
        key = keys[k]
        if key is None and cfg.lf_checkpoint is None:
            key = _first_key(task, "artifact:", width_one=(k == LF_PREDICTION))
        if key is not None:
            if key not in task.train.aux:
                raise MfrayError(f"{task.name}: no LF input {key!r}; available: {task.aux_names()}")
            for f in FOLD_NAMES:
                out[f][k] = task.folds[f].aux[key]
            origin[k] = key
            continue
        if cfg.lf_checkpoint is None:
            raise MfrayError(f"{task.name}: strategy needs {k}; give an LF checkpoint (--lf-checkpoint, from "
                             f"`mfray pretrain`) or an input key (available: {task.aux_names()})")
        if lf_model is None:
            lf_model = load_model(cfg.lf_checkpoint)
        model, ckpt = lf_model
        for f in FOLD_NAMES:
            pred, emb = lf_outputs(model, ckpt, task.store, task.folds[f].mol_ids)
            out[f][k] = pred[:, :1] if k == LF_PREDICTION else emb
        origin[k] = f"LF checkpoint {cfg.lf_checkpoint}"
    return out, origin


def train_hf(task: Task, cfg: HFRunConfig, out_dir: str | Path | None = None,
             on_epoch: Callable[[EpochLog], bool | None] | None = None, *, resume: dict[str, Any] | None = None,
             checkpoint_every: int = 0, on_checkpoint: Callable[[dict[str, Any]], None] | None = None) -> HFRunResult:
    """Fit one HF model for ``task`` with ``cfg.strategy``; evaluate the best-validation model on every fold.

    ``resume``, ``checkpoint_every`` and ``on_checkpoint`` are :func:`mfray.train.loop.fit`'s: a search
    trial hands its fit state to Ray Tune every few epochs and continues from it after a restart.
    """
    strategy = get_strategy(cfg.strategy)
    store = task.store
    ds_spec = store.manifest["spec"]
    lf, origin = resolve_lf_inputs(task, cfg, strategy.inputs)
    raw_aux = {f: strategy.augmentation(lf[f], f) for f in FOLD_NAMES}
    aux_scaler = Scaler.fit(raw_aux["train"]) if raw_aux["train"] is not None else None
    aux = {f: (aux_scaler.transform(raw_aux[f]) if aux_scaler else None) for f in FOLD_NAMES}
    regression = task.task_type == "regression"
    # what training sees of the labels under the task's censored-label policy; the scaler is fitted
    # on the fitted training values only (bounds would pull it to the floor)
    labels = {f: task.folds[f].training_labels(task.censored) for f in FOLD_NAMES}
    fitted_train = np.where(task.train.censor != 0, np.nan, labels["train"][0])
    y_scaler = Scaler.fit(fitted_train) if regression else Scaler.identity(task.train.y.shape[1])
    ys = {f: y_scaler.transform(labels[f][0]) for f in FOLD_NAMES}

    pretrained = None
    if strategy.pretrained:
        if cfg.lf_checkpoint is None:
            raise MfrayError(f"strategy {strategy.name!r} fine-tunes a pretrained LF model: give --lf-checkpoint "
                             "(from `mfray pretrain`)")
        lf_model, lf_ckpt = load_model(cfg.lf_checkpoint)
        spec = lf_model.spec.model_copy(update={"n_targets": len(task.targets), "aux_dim": 0,
                                                "task_type": task.task_type, **cfg.model})
        if cfg.readout and cfg.readout != spec.readout:
            raise MfrayError(f"strategy {strategy.name!r} keeps the LF model's readout {spec.readout!r}; "
                             f"pretrain with --readout {cfg.readout} instead")
        pretrained = lf_ckpt["state_dict"]
    else:
        fz = ds_spec.get("featurizer", {})
        spec = ModelSpec(**{
            "featurizer": fz.get("preset", "default"), "max_atomic_number": fz.get("max_atomic_number"),
            "readout": cfg.readout or strategy.default_readout, "n_targets": len(task.targets),
            "aux_dim": 0 if aux["train"] is None else aux["train"].shape[1], "task_type": task.task_type,
            **cfg.model,
        })
    seed_everything(cfg.train.seed, cfg.train.num_threads)  # the initial weights depend on the seed only
    model = build_model(spec)
    if pretrained is not None:
        load_pretrained_stages(model, pretrained, ("encoder", "readout"))
    freeze(model, cfg.freeze if cfg.freeze is not None else strategy.freeze)

    data = {f: _datasets(store, spec, task.folds[f].mol_ids, ys[f], aux[f], labels[f][1]) for f in FOLD_NAMES}
    res = fit(model, data["train"], data["valid"], cfg.train, on_epoch=on_epoch, resume=resume,
              checkpoint_every=checkpoint_every, on_checkpoint=on_checkpoint)

    metrics, frames = {}, []
    for f in FOLD_NAMES:
        pred, _ = predict(model, data[f])
        pred = y_scaler.inverse(pred) if regression else pred
        truth, censor = task.folds[f].y, task.folds[f].censor
        # evaluation knows every bound whatever the training policy (the same test molecules for all)
        metrics[f] = compute_metrics(task.task_type, truth, pred, censor if task.censored is not None else None)
        for j, t in enumerate(task.targets):
            frames.append(pl.DataFrame({"fold": f, "mol_id": task.folds[f].mol_ids, "target": t,
                                        "y_true": truth[:, j].astype(np.float64), "y_pred": pred[:, j].astype(np.float64),
                                        "censor": censor[:, j].astype(np.int8)}))
    result = HFRunResult(metrics=metrics, fit=res, model_spec=spec, predictions=pl.concat(frames),
                         n_params=sum(p.numel() for p in model.parameters()),
                         n_trainable=sum(p.numel() for p in model.parameters() if p.requires_grad))
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        meta = {"dataset": task.dataset, "fidelity": task.fidelity, "targets": task.targets, "seed": task.seed,
                "strategy": strategy.name, "censored": task.censored, "lf_inputs": origin, "best_epoch": res.best_epoch,
                "test_metrics": metrics["test"], "train_config": asdict(cfg.train)}
        result.checkpoint = save_checkpoint(out / "best.ckpt", model, kind="hf", meta=meta, scalers={
            "y": y_scaler.to_dict(), **({"aux": aux_scaler.to_dict()} if aux_scaler else {})})
        result.predictions.write_parquet(out / "predictions.parquet")
        write_json_atomic(out / "metrics.json", {"metrics": metrics, "best_epoch": res.best_epoch,
                                                 "epochs_run": res.epochs_run, "seconds": res.seconds,
                                                 "n_params": result.n_params, "n_trainable": result.n_trainable,
                                                 "lf_inputs": origin})
        write_json_atomic(out / "history.json", res.to_dict())
    return result


# ---------------------------------------------------------------------------- LF pretraining
@dataclass
class LFRunConfig:
    readout: str = "set_transformer"
    model: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=5e-5, batch_size=512, max_epochs=10, patience=0))
    fidelity: str | None = None  # default: the lowest fidelity
    valid_fraction: float = 0.05
    max_molecules: int | None = None  # subsample (seeded) for quick runs
    #: censored-label policy of LF values that carry a qualifier (default: the store's spec); rare for
    #: single-dose screens, but the same rules as for HF labels (``mfray.data.tasks``)
    censored: str | None = None


def lf_split(store: GraphStore, fidelity: str, valid_fraction: float, seed: int,
             max_molecules: int | None = None) -> tuple[list[str], np.ndarray, np.ndarray, pl.DataFrame]:
    """LF targets, train/valid molecule ids (seeded, by sorted id: row-order independent), wide labels."""
    tl = store.table("task_labels").filter(pl.col("fidelity") == fidelity)
    if tl.height == 0:
        raise MfrayError(f"{store.path}: no {fidelity} labels to pretrain on")
    targets = tl["target"].unique().sort().to_list()
    if "censor" not in tl.columns:
        tl = tl.with_columns(pl.lit(0, pl.Int8).alias("censor"))
    wide = tl.pivot(on="target", index="mol_id", values="value").sort("mol_id")
    cens = tl.pivot(on="target", index="mol_id", values="censor").sort("mol_id")
    wide = wide.join(cens.rename({t: f"censor:{t}" for t in targets}), on="mol_id", how="left")
    ids = wide["mol_id"].to_numpy()
    rng = np.random.default_rng(seed)
    if max_molecules is not None and len(ids) > max_molecules:
        ids = np.sort(rng.choice(ids, size=max_molecules, replace=False))
        wide = wide.filter(pl.col("mol_id").is_in(ids))
    perm = rng.permutation(len(ids))
    n_valid = max(1, int(round(valid_fraction * len(ids))))
    return targets, ids[perm[n_valid:]], ids[perm[:n_valid]], wide


@dataclass
class LFSetup:
    """What every process of one LF pretraining agrees on before any graph is read: the model spec,
    the LF targets, the train/valid molecules and their scaled labels (the scaler is fitted on the
    whole training set, so all ranks of a data-parallel run scale alike)."""

    dataset: str
    fidelity: str
    targets: list[str]
    spec: ModelSpec
    train_ids: np.ndarray
    valid_ids: np.ndarray
    y_train: np.ndarray  # scaled, aligned with train_ids
    y_valid: np.ndarray
    scaler: Scaler
    c_train: np.ndarray | None = None  # censor directions (policy "censored" only)
    c_valid: np.ndarray | None = None


@dataclass
class LFPrepared:
    """One process's share of an LF pretraining: the freshly initialised model and its data shard."""

    setup: LFSetup
    model: MFModel
    train: GraphDataset
    valid: GraphDataset
    rank: int = 0
    world_size: int = 1
    load_seconds: float = 0.0


def lf_setup(store: GraphStore, cfg: LFRunConfig) -> LFSetup:
    """Resolve the LF task of ``store`` under ``cfg``: reads the label table only, no graphs."""
    ds_spec = store.manifest["spec"]
    fidelity = cfg.fidelity or ds_spec["fidelities"][0]
    targets, train_ids, valid_ids, wide = lf_split(store, fidelity, cfg.valid_fraction, cfg.train.seed, cfg.max_molecules)
    y_all = wide.select(targets).to_numpy().astype(np.float32)
    c_all = wide.select([pl.col(f"censor:{t}").fill_null(0) for t in targets]).to_numpy().astype(np.int8)
    policy = cfg.censored
    if policy is None:
        from mfray.data.specs import parse_spec

        policies = parse_spec(ds_spec, where=str(store.path)).censored_policies()
        policy = next((policies[(fidelity, t)] for t in targets if (fidelity, t) in policies), None)
    if policy == "drop":
        y_all = np.where(c_all != 0, np.nan, y_all).astype(np.float32)
    pos = {m: i for i, m in enumerate(wide["mol_id"].to_list())}
    rows_train, rows_valid = [pos[m] for m in train_ids], [pos[m] for m in valid_ids]
    y_train, y_valid = y_all[rows_train], y_all[rows_valid]
    scaler = Scaler.fit(np.where(c_all[rows_train] != 0, np.nan, y_train))  # on fitted values
    keep_c = policy == "censored" and bool((c_all != 0).any())
    fz = ds_spec.get("featurizer", {})
    spec = ModelSpec(**{"featurizer": fz.get("preset", "default"), "max_atomic_number": fz.get("max_atomic_number"),
                        "readout": cfg.readout, "n_targets": len(targets), **cfg.model})
    return LFSetup(dataset=ds_spec["name"], fidelity=fidelity, targets=targets, spec=spec, train_ids=train_ids,
                   valid_ids=valid_ids, y_train=scaler.transform(y_train), y_valid=scaler.transform(y_valid),
                   scaler=scaler, c_train=c_all[rows_train] if keep_c else None,
                   c_valid=c_all[rows_valid] if keep_c else None)


def shard_indices(n: int, rank: int, world_size: int) -> np.ndarray:
    """Positions of rank ``rank``'s shard of ``n`` items: every ``world_size``-th, so shard sizes differ
    by at most one (the LF ids are already in a seeded random order)."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise MfrayError(f"bad shard: rank {rank} of world size {world_size}")
    return np.arange(rank, n, world_size)


def prepare_lf(store: GraphStore, cfg: LFRunConfig, *, rank: int = 0, world_size: int = 1,
               shard_valid: bool = True) -> LFPrepared:
    """Build the LF model (seeded: identical on every rank) and load ONLY this rank's shard of the
    training molecules (and of the validation molecules with ``shard_valid``) from the store, so each
    process of a data-parallel run holds 1/world_size of the graphs."""
    setup = lf_setup(store, cfg)
    seed_everything(cfg.train.seed, cfg.train.num_threads)  # the initial weights depend on the seed only
    model = build_model(setup.spec)
    tr = shard_indices(len(setup.train_ids), rank, world_size)
    va = shard_indices(len(setup.valid_ids), rank, world_size) if shard_valid else np.arange(len(setup.valid_ids))
    t0 = time.perf_counter()
    cut = lambda c, idx: None if c is None else c[idx]  # noqa: E731
    train = _datasets(store, setup.spec, setup.train_ids[tr], setup.y_train[tr], None, cut(setup.c_train, tr))
    valid = _datasets(store, setup.spec, setup.valid_ids[va], setup.y_valid[va], None, cut(setup.c_valid, va))
    return LFPrepared(setup=setup, model=model, train=train, valid=valid, rank=rank, world_size=world_size,
                      load_seconds=time.perf_counter() - t0)


def lf_checkpoint_info(prep: LFPrepared, cfg: LFRunConfig) -> dict[str, Any]:
    """What ``lf.ckpt`` records besides the weights (JSON-able): model spec, label scaler and meta.
    ``best_epoch`` is added by :func:`write_lf_outputs`."""
    s = prep.setup
    return {"model_spec": s.spec.model_dump(mode="json"), "scalers": {"y": s.scaler.to_dict()},
            "meta": {"dataset": s.dataset, "fidelity": s.fidelity, "targets": s.targets,
                     "n_train": int(len(s.train_ids)), "n_valid": int(len(s.valid_ids)),
                     "train_config": asdict(cfg.train), "load_seconds": prep.load_seconds}}


def write_lf_outputs(out_dir: str | Path, model: MFModel, info: dict[str, Any], res: FitResult,
                     extra_meta: dict[str, Any] | None = None) -> Path:
    """Write ``out_dir/lf.ckpt`` (the best-validation ``model``) and ``out_dir/history.json``, atomically."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    m = info["meta"]
    meta = {"dataset": m["dataset"], "fidelity": m["fidelity"], "targets": m["targets"], "n_train": m["n_train"],
            "n_valid": m["n_valid"], "best_epoch": res.best_epoch, "train_config": m["train_config"],
            "load_seconds": m["load_seconds"], **(extra_meta or {})}
    path = save_checkpoint(out / "lf.ckpt", model, kind="lf", scalers=info["scalers"], meta=meta)
    write_json_atomic(out / "history.json", res.to_dict())
    return path


def pretrain_lf(store: GraphStore, cfg: LFRunConfig, out_dir: str | Path,
                on_epoch: Callable[[EpochLog], bool | None] | None = None) -> tuple[Path, FitResult]:
    """Train a supervised VGAE on the low-fidelity labels of a store in this process; write
    ``out_dir/lf.ckpt`` and ``history.json``. (``mfray.run.pretrain`` runs the same pieces on Ray Train.)"""
    prep = prepare_lf(store, cfg)
    res = fit(prep.model, prep.train, prep.valid, cfg.train, on_epoch=on_epoch)
    path = write_lf_outputs(out_dir, prep.model, lf_checkpoint_info(prep, cfg), res)
    return path, res


def embed_store(checkpoint: str | Path, store: GraphStore, mol_ids: np.ndarray | None = None,
                batch_size: int = 512) -> pa.Table:
    """LF predictions (original units) and graph embeddings per ``mol_id`` as an Arrow table."""
    model, ckpt = load_model(checkpoint)
    ids = store.table("molecules")["mol_id"].to_numpy() if mol_ids is None else np.asarray(mol_ids)
    pred, emb = lf_outputs(model, ckpt, store, ids, batch_size=batch_size)
    targets = ckpt.get("meta", {}).get("targets") or [f"t{j}" for j in range(pred.shape[1])]
    cols: dict[str, Any] = {"mol_id": pa.array(ids, pa.int64())}
    for j, t in enumerate(targets):
        cols[f"prediction_{t}" if len(targets) > 1 else "prediction"] = pa.array(pred[:, j].astype(np.float64))
    dim = emb.shape[1]
    cols["embedding"] = pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1), pa.float32()), dim)
    return pa.table(cols)


def write_embeddings(table: pa.Table, path: str | Path) -> None:
    from mfray.utils.io import atomic_path

    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
