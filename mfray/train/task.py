"""Train one high-fidelity model of one task with one transfer strategy; pretrain an LF model.

This is the single-process unit of work that the CLI (``mfray train`` / ``mfray pretrain``) runs
directly and that Ray Tune / Ray Train wrap in a later layer.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from mfray.chem.featurizers import build_featurizers
from mfray.data.store import GraphStore
from mfray.data.tasks import FOLD_NAMES, Task, holdout_ids
from mfray.models import MFModel, ModelSpec, build_model
from mfray.models.checkpoint import load_model, save_checkpoint
from mfray.train.data import GraphDataset
from mfray.train.loop import EpochLog, FitResult, StepLog, TrainConfig, fit, predict, seed_everything
from mfray.train.metrics import compute_metrics
from mfray.train.scaling import Scaler
from mfray.transfer import LFSources, ModelContext, get_strategy, resolve_lf_inputs
from mfray.transfer.base import FreezePlan
from mfray.transfer.inputs import EMBEDDING_COLUMN, prediction_column
from mfray.utils.errors import MfrayError
from mfray.utils.hashing import hash_obj
from mfray.utils.io import write_json_atomic


@dataclass
class HFRunConfig:
    """What ``mfray train`` resolves: a strategy, model choices and the optimisation protocol.

    ``train.lr`` None means the strategy's learning rate (:attr:`mfray.transfer.Strategy.lr`), the same
    rule a study applies.
    """

    strategy: str = "base"
    readout: str | None = None  # default: the strategy's (sum||mean||max for HF models)
    model: dict[str, Any] = field(default_factory=dict)  # ModelSpec overrides (hidden_dim, encoder, ...)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=None))
    lf_checkpoint: str | None = None  # LF model for predicted_label / hybrid / embeddings / delta / tune_*
    lf_prediction: str | None = None  # a task aux key (e.g. "artifact:STPredSD") instead of a checkpoint
    lf_embedding: str | None = None  # a task aux key (e.g. "artifact:STEmbeddings")
    freeze: list[str] | None = None  # override the strategy's frozen stages
    unfreeze_epoch: int | None = None  # unfreeze everything at this epoch (gradual unfreezing)
    #: the LF checkpoint behind ``lf_prediction`` / ``lf_embedding`` keys (a study's LF outputs table):
    #: not read in training, recorded so the model can score new molecules (``mfray predict``)
    lf_model_ref: str | None = None


@dataclass
class HFRunResult:
    """One fitted HF model. ``model_spec``, ``readout`` and ``freeze_plan`` are those of the model that
    was built and trained (what a record must say), ``lf_inputs`` where its LF inputs came from."""

    metrics: dict[str, dict[str, float]]
    fit: FitResult
    model_spec: ModelSpec
    predictions: pl.DataFrame  # fold, mol_id, target, y_true, y_pred, censor (0 fitted, +-1 a bound)
    n_params: int
    n_trainable: int
    freeze_plan: FreezePlan = field(default_factory=FreezePlan)
    lf_inputs: dict[str, str] = field(default_factory=dict)
    train_config: TrainConfig | None = None  # as resolved (the strategy's learning rate filled in)
    checkpoint: Path | None = None

    @property
    def readout(self) -> str:
        return self.model_spec.readout


def _datasets(store: GraphStore, spec: ModelSpec, ids: np.ndarray, y: np.ndarray | None,
              aux: np.ndarray | None, censor: np.ndarray | None = None) -> GraphDataset:
    atom_f, bond_f = build_featurizers(spec.featurizer, spec.max_atomic_number)
    return GraphDataset(store.graphs(ids), y, aux, atom_f, bond_f, censor)


def lf_outputs(model: MFModel, ckpt: dict[str, Any], store: GraphStore, mol_ids: np.ndarray,
               batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """An LF model's predictions (original units) and graph embeddings for ``mol_ids`` (fp32).

    The forward passes run at the precision the model was trained with (``auto`` resolved on this
    device) over batches of molecules of similar size (sorted by atom count, results put back in
    ``mol_ids`` order): scoring a whole primary screen is a few minutes, not an hour."""
    return lf_outputs_of(model, ckpt, _datasets(store, model.spec, mol_ids, None, None), batch_size)


def trained_precision(ckpt: dict[str, Any]) -> str:
    """The precision a checkpoint's model was trained with (its forward passes at inference use it)."""
    return (ckpt.get("meta", {}).get("train_config") or {}).get("precision", "32")


def predict_by_size(model: MFModel, data: GraphDataset, batch_size: int = 512, precision: str = "32",
                    with_embeddings: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`mfray.train.loop.predict` over batches of molecules of similar size (sorted by atom count,
    outputs put back in row order): far less attention padding for Set Transformer readouts."""
    by_size = np.argsort(data.n_atoms, kind="stable")
    take = pa.array(by_size, pa.int64())
    sorted_data = GraphDataset(data.rows.take(take), None, data.aux[by_size] if data.aux is not None else None,
                               data.atom_featurizer, data.bond_featurizer)
    pred, emb = predict(model, sorted_data, batch_size=batch_size, with_embeddings=with_embeddings, precision=precision)
    back = np.empty_like(by_size)
    back[by_size] = np.arange(len(by_size))
    return pred[back], (emb[back] if emb is not None else None)


def lf_outputs_of(model: MFModel, ckpt: dict[str, Any], data: GraphDataset, batch_size: int = 512
                  ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`lf_outputs` for graph rows already loaded (``data``: no targets)."""
    pred, emb = predict_by_size(model, data, batch_size, trained_precision(ckpt), with_embeddings=True)
    scaler = ckpt.get("scalers", {}).get("y")
    if scaler and model.spec.task_type == "regression":
        pred = Scaler.from_dict(scaler).inverse(pred)
    return pred.astype(np.float32), emb.astype(np.float32)


def lf_model_outputs(task: Task, model: MFModel, ckpt: dict[str, Any]) -> Callable[[str], tuple[np.ndarray, np.ndarray]]:
    """``fold -> (prediction of the task's LF target [n, 1], embedding)`` of an LF checkpoint (for
    :func:`mfray.transfer.resolve_lf_inputs`)."""
    targets = ckpt.get("meta", {}).get("targets") or []
    col = targets.index(task.lf_target) if task.lf_target in targets else 0

    def outputs(fold: str) -> tuple[np.ndarray, np.ndarray]:
        pred, emb = lf_outputs(model, ckpt, task.store, task.folds[fold].mol_ids)
        return pred[:, col:col + 1], emb

    return outputs


def train_hf(task: Task, cfg: HFRunConfig, out_dir: str | Path | None = None,
             on_epoch: Callable[[EpochLog], bool | None] | None = None, *, resume: dict[str, Any] | None = None,
             checkpoint_every: int = 0, on_checkpoint: Callable[[dict[str, Any]], None] | None = None,
             on_step: Callable[[StepLog], None] | None = None) -> HFRunResult:
    """Fit one HF model for ``task`` with ``cfg.strategy``; evaluate the best-validation model on every fold.

    The strategy decides (through its hooks, :mod:`mfray.transfer.base`) which LF inputs are read, the
    augmentation, a target offset (delta), the model and what is frozen; the task's setting
    (``task.setting``) must be one the strategy supports. ``resume``, ``checkpoint_every`` and
    ``on_checkpoint`` are :func:`mfray.train.loop.fit`'s: a search trial hands its fit state to Ray
    Tune every few epochs and continues from it after a restart; so is ``on_step`` (progress within
    an epoch).
    """
    strategy = get_strategy(cfg.strategy)
    if not strategy.supports(task.setting):
        raise MfrayError(f"strategy {strategy.name!r} does not run in the {task.setting} setting")
    store = task.store
    ds_spec = store.manifest["spec"]
    needs = strategy.needs(task.setting)
    lf_model = load_model(cfg.lf_checkpoint) if cfg.lf_checkpoint and strategy.needs_lf_model(task.setting) else None
    sources = LFSources(prediction=cfg.lf_prediction, embedding=cfg.lf_embedding, checkpoint=cfg.lf_checkpoint)
    lf, origin = resolve_lf_inputs(task, needs, sources, lf_model_outputs(task, *lf_model) if lf_model else None)
    raw_aux = {f: strategy.augment(lf[f], f) for f in FOLD_NAMES}
    scale = raw_aux["train"] is not None and cfg.train.scale_aux
    aux_scaler = Scaler.fit(raw_aux["train"]) if scale else (
        Scaler.identity(raw_aux["train"].shape[1]) if raw_aux["train"] is not None else None)
    aux = {f: (aux_scaler.transform(raw_aux[f]) if aux_scaler else None) for f in FOLD_NAMES}
    regression = task.task_type == "regression"
    # what training sees of the labels under the task's censored-label policy; the scaler is fitted
    # on the fitted training values only (bounds would pull it to the floor)
    labels = {f: task.folds[f].training_labels(task.censored) for f in FOLD_NAMES}
    fitted_train = np.where(task.train.censor != 0, np.nan, labels["train"][0])
    # a strategy may have the model learn a residual on a per-molecule offset (delta); a bound stays a
    # bound of the residual, with the same direction
    fitted_offset = strategy.target_offset(lf, fitted_train) if regression else None
    offset_params, offsets = fitted_offset if fitted_offset is not None else (None, None)
    if offsets is not None:
        labels = {f: (labels[f][0] - offsets[f], labels[f][1]) for f in FOLD_NAMES}
        fitted_train = fitted_train - offsets["train"]
    y_scaler = Scaler.fit(fitted_train) if regression else Scaler.identity(task.train.y.shape[1])
    ys = {f: y_scaler.transform(labels[f][0]) for f in FOLD_NAMES}

    fz = ds_spec.get("featurizer", {})
    spec = strategy.model_spec(ModelContext(
        featurizer=fz.get("preset", "default"), max_atomic_number=fz.get("max_atomic_number"),
        n_targets=len(task.targets), task_type=task.task_type, readout=cfg.readout, overrides=dict(cfg.model),
        aux_dim=0 if aux["train"] is None else aux["train"].shape[1],
        lf_spec=lf_model[0].spec if lf_model and strategy.lf_init else None))
    train_cfg = cfg.train if cfg.train.lr is not None else replace(cfg.train, lr=strategy.lr)
    seed_everything(train_cfg.seed, train_cfg.num_threads)  # the initial weights depend on the seed only
    model = build_model(spec)
    plan = strategy.prepare(model, lf_model[1]["state_dict"] if lf_model and strategy.lf_init else None,
                            freeze=cfg.freeze, unfreeze_epoch=cfg.unfreeze_epoch)

    data = {f: _datasets(store, spec, task.folds[f].mol_ids, ys[f], aux[f], labels[f][1]) for f in FOLD_NAMES}
    res = fit(model, data["train"], data["valid"], train_cfg, on_epoch=on_epoch, on_step=on_step, freeze_plan=plan,
              resume=resume, checkpoint_every=checkpoint_every, on_checkpoint=on_checkpoint)

    metrics, frames = {}, []
    for f in FOLD_NAMES:
        pred, _ = predict(model, data[f])
        pred = y_scaler.inverse(pred) if regression else pred
        if offsets is not None:
            pred = pred + offsets[f]
        truth, censor = task.folds[f].y, task.folds[f].censor
        # evaluation knows every bound whatever the training policy (the same test molecules for all)
        metrics[f] = compute_metrics(task.task_type, truth, pred, censor if task.censored is not None else None)
        for j, t in enumerate(task.targets):
            frames.append(pl.DataFrame({"fold": f, "mol_id": task.folds[f].mol_ids, "target": t,
                                        "y_true": truth[:, j].astype(np.float64), "y_pred": pred[:, j].astype(np.float64),
                                        "censor": censor[:, j].astype(np.int8)}))
    lf_origin = {k.value: v for k, v in origin.items()}
    result = HFRunResult(metrics=metrics, fit=res, model_spec=spec, predictions=pl.concat(frames),
                         n_params=sum(p.numel() for p in model.parameters()),
                         n_trainable=sum(p.numel() for p in model.parameters() if p.requires_grad),
                         freeze_plan=plan, lf_inputs=lf_origin, train_config=train_cfg)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        meta = {"dataset": task.dataset, "fidelity": task.fidelity, "targets": task.targets, "seed": task.seed,
                "strategy": strategy.name, "setting": task.setting, "censored": task.censored, "lf_inputs": lf_origin,
                "freeze": list(plan.stages), "unfreeze_epoch": plan.unfreeze_epoch, "best_epoch": res.best_epoch,
                "test_metrics": metrics["test"], "train_config": asdict(train_cfg),
                # what `mfray predict` needs to score new molecules as this model saw its own
                "inference": inference_meta(task, strategy, cfg, offset_params)}
        scalers = {"y": y_scaler.to_dict(), **({"aux": aux_scaler.to_dict()} if aux_scaler else {})}
        result.checkpoint = save_checkpoint(out / "best.ckpt", model, kind="hf", meta=meta, scalers=scalers)
        result.predictions.write_parquet(out / "predictions.parquet")
        write_json_atomic(out / "metrics.json", {"metrics": metrics, "best_epoch": res.best_epoch,
                                                 "epochs_run": res.epochs_run, "seconds": res.seconds,
                                                 "n_params": result.n_params, "n_trainable": result.n_trainable,
                                                 "lf_inputs": lf_origin})
        write_json_atomic(out / "history.json", res.to_dict())
    return result


def recipe_of(store: GraphStore) -> dict[str, Any]:
    """How a store's molecules were made (SMILES standardisation and featuriser): what scoring new
    molecules must repeat exactly."""
    ds = store.manifest["spec"]
    fz = ds.get("featurizer", {})
    from mfray.data.specs import parse_spec

    std = parse_spec(ds, where=str(store.path)).standardize.resolved()
    return {"standardize": std, "featurizer": fz.get("preset", "default"), "max_atomic_number": fz.get("max_atomic_number")}


def label_transform(store: GraphStore, fidelity: str | None, target: str | None) -> str:
    """The transform the dataset spec applies to label (fidelity, target) when reading it ("none" where
    the source declares none): new molecules' measured LF values must go through the same one."""
    from mfray.data.specs import parse_spec

    source = parse_spec(store.manifest["spec"], where=str(store.path)).source
    for label in getattr(source, "labels", None) or []:
        if label.fidelity == fidelity and label.target == target:
            return label.transform
    return "none"


def inference_meta(task: Task, strategy: Any, cfg: HFRunConfig, offset_params: dict[str, Any] | None) -> dict[str, Any]:
    """The ``inference`` entry of an HF checkpoint: the recipe, the LF inputs in the order the model
    reads them (measured LF label of which fidelity/target; the LF model whose outputs it read), and
    the fitted offset (delta)."""
    needs = sorted(k.value for k in strategy.needs(task.setting))
    return {"recipe": recipe_of(task.store), "needs": needs, "lf_fidelity": task.lf_fidelity,
            "lf_target": task.lf_target, "lf_transform": label_transform(task.store, task.lf_fidelity, task.lf_target),
            "lf_checkpoint": cfg.lf_checkpoint or cfg.lf_model_ref,
            "offset": offset_params}


# ---------------------------------------------------------------------------- LF pretraining
@dataclass
class LFRunConfig:
    readout: str = "set_transformer"
    model: dict[str, Any] = field(default_factory=dict)
    #: the paper's LF protocol (Adam 5e-5, batch 512, no early stopping), in bf16 where the hardware has
    #: it and with size-bucketed batches (both change nothing but speed, within bf16's rounding)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=5e-5, batch_size=512, max_epochs=10, patience=0,
                                                                   precision="auto", bucket_by_size=True))
    fidelity: str | None = None  # default: the lowest fidelity
    valid_fraction: float = 0.05
    max_molecules: int | None = None  # subsample (seeded) for quick runs
    #: censored-label policy of LF values that carry a qualifier (default: the store's spec); rare for
    #: single-dose screens, but the same rules as for HF labels (``mfray.data.tasks``)
    censored: str | None = None
    #: inductive setting: the valid and test molecules of these split seeds are left out of LF
    #: pretraining (:func:`mfray.data.tasks.holdout_ids`); None: pretrain on every LF molecule
    holdout_seeds: list[int] | None = None


def lf_split(store: GraphStore, fidelity: str, valid_fraction: float, seed: int,
             max_molecules: int | None = None, exclude: np.ndarray | None = None
             ) -> tuple[list[str], np.ndarray, np.ndarray, pl.DataFrame]:
    """LF targets, train/valid molecule ids (seeded, by sorted id: row-order independent), wide labels;
    the molecules ``exclude`` are left out before anything else."""
    tl = store.table("task_labels").filter(pl.col("fidelity") == fidelity)
    if exclude is not None and len(exclude):
        tl = tl.filter(~pl.col("mol_id").is_in(np.asarray(exclude, dtype=np.int64)))
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
    holdout: dict[str, Any] | None = None  # molecules left out (inductive): split seeds, count, id hash
    recipe: dict[str, Any] | None = None  # standardisation + featuriser (:func:`recipe_of`)


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
    holdout = holdout_ids(store, cfg.holdout_seeds) if cfg.holdout_seeds is not None else None
    targets, train_ids, valid_ids, wide = lf_split(store, fidelity, cfg.valid_fraction, cfg.train.seed,
                                                   cfg.max_molecules, holdout)
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
                   holdout={"seeds": list(cfg.holdout_seeds), "n": int(len(holdout)), "ids": hash_ids(holdout)}
                   if holdout is not None else None,
                   valid_ids=valid_ids, y_train=scaler.transform(y_train), y_valid=scaler.transform(y_valid),
                   scaler=scaler, recipe=recipe_of(store), c_train=c_all[rows_train] if keep_c else None,
                   c_valid=c_all[rows_valid] if keep_c else None)


def hash_ids(ids: np.ndarray) -> str:
    """A short content hash of a set of molecule ids (order-free)."""
    return hash_obj(np.sort(np.asarray(ids, dtype=np.int64)).tolist())


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
                     "n_train": int(len(s.train_ids)), "n_valid": int(len(s.valid_ids)), "holdout": s.holdout,
                     "train_config": asdict(cfg.train), "load_seconds": prep.load_seconds,
                     "recipe": prep.setup.recipe}}


#: beside lf.ckpt: the molecules an LF model was trained and validated on (``mol_id``, ``role``)
LF_MOLECULES = "molecules.parquet"


def write_lf_outputs(out_dir: str | Path, model: MFModel, info: dict[str, Any], res: FitResult,
                     extra_meta: dict[str, Any] | None = None, setup: LFSetup | None = None) -> Path:
    """Write ``out_dir/lf.ckpt`` (the best-validation ``model``) and ``out_dir/history.json``, atomically;
    with ``setup`` also :data:`LF_MOLECULES`, which molecules it saw."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if setup is not None:
        from mfray.utils.io import atomic_path

        ids = pl.DataFrame({"mol_id": np.concatenate([setup.train_ids, setup.valid_ids]).astype(np.int64),
                            "role": ["train"] * len(setup.train_ids) + ["valid"] * len(setup.valid_ids)})
        with atomic_path(out / LF_MOLECULES) as tmp:
            ids.write_parquet(tmp)
    m = info["meta"]
    meta = {"dataset": m["dataset"], "fidelity": m["fidelity"], "targets": m["targets"], "n_train": m["n_train"],
            "n_valid": m["n_valid"], "holdout": m.get("holdout"), "best_epoch": res.best_epoch,
            "train_config": m["train_config"], "inference": {"recipe": m.get("recipe")},
            "load_seconds": m["load_seconds"], **(extra_meta or {})}
    path = save_checkpoint(out / "lf.ckpt", model, kind="lf", scalers=info["scalers"], meta=meta)
    write_json_atomic(out / "history.json", res.to_dict())
    return path


def pretrain_lf(store: GraphStore, cfg: LFRunConfig, out_dir: str | Path,
                on_epoch: Callable[[EpochLog], bool | None] | None = None,
                on_step: Callable[[StepLog], None] | None = None) -> tuple[Path, FitResult]:
    """Train a supervised VGAE on the low-fidelity labels of a store in this process; write
    ``out_dir/lf.ckpt`` and ``history.json``. (``mfray.run.pretrain`` runs the same pieces on Ray Train.)"""
    prep = prepare_lf(store, cfg)
    res = fit(prep.model, prep.train, prep.valid, cfg.train, on_epoch=on_epoch, on_step=on_step)
    path = write_lf_outputs(out_dir, prep.model, lf_checkpoint_info(prep, cfg), res, setup=prep.setup)
    return path, res


def embed_store(checkpoint: str | Path, store: GraphStore, mol_ids: np.ndarray | None = None,
                batch_size: int = 512) -> pa.Table:
    """LF predictions (original units) and graph embeddings per ``mol_id`` as an Arrow table."""
    model, ckpt = load_model(checkpoint)
    return embed_with(model, ckpt, store, mol_ids, batch_size)


def embed_with(model: MFModel, ckpt: dict[str, Any], store: GraphStore, mol_ids: np.ndarray | None = None,
               batch_size: int = 512) -> pa.Table:
    """:func:`embed_store` for a model already loaded (``load_model``)."""
    ids = store.table("molecules")["mol_id"].to_numpy() if mol_ids is None else np.asarray(mol_ids)
    pred, emb = lf_outputs(model, ckpt, store, ids, batch_size=batch_size)
    targets = ckpt.get("meta", {}).get("targets") or [f"t{j}" for j in range(pred.shape[1])]
    cols: dict[str, Any] = {"mol_id": pa.array(ids, pa.int64())}
    for j, t in enumerate(targets):
        cols[prediction_column(t, len(targets))] = pa.array(pred[:, j].astype(np.float64))
    dim = emb.shape[1]
    cols[EMBEDDING_COLUMN] = pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1), pa.float32()), dim)
    return pa.table(cols)


def write_embeddings(table: pa.Table, path: str | Path) -> None:
    from mfray.utils.io import atomic_path

    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
