"""A task: one high-fidelity target of one dataset, split by one seed, with optional LF inputs.

``load_task(store, seed)`` gathers, per fold (train/valid/test), the molecule ids, SMILES, HF targets
and any low-fidelity inputs a transfer strategy may use:

- ``lf_label``: the *measured* LF label of each molecule (NaN where the molecule was not screened);
- ``artifact:<name>``: precomputed LF-model outputs shipped with the data (predictions, embeddings);
- ``file:<name>``: LF-model outputs written by ``mfray embed`` (Parquet keyed by ``mol_id``).

Everything is keyed by ``mol_id``; nothing depends on row order.

Censored labels: each fold keeps every HF value with its ``censor`` direction (0 fitted, +1 the true
value lies above the stored bound, -1 below it), whatever the policy, so that every policy is
evaluated on the same molecules. The task's ``censored`` policy says what *training* sees
(:meth:`TaskFold.training_labels`): ``drop`` hides bounds, ``as_value`` takes them as measured,
``censored`` keeps them as one-sided targets. ``None``: the labels carry no qualifier.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import polars as pl

from mfray.data.store import GraphStore
from mfray.utils.errors import DataError

FOLD_NAMES = ("train", "valid", "test")
SETTINGS = ("transductive", "inductive")


@dataclass
class TaskFold:
    """One fold of a task. Arrays are aligned with ``mol_ids``."""

    mol_ids: np.ndarray  # [n] int64
    smiles: list[str]
    y: np.ndarray  # [n, T] float32 (NaN = missing, for multi-target tasks)
    aux: dict[str, np.ndarray] = field(default_factory=dict)  # name -> [n, d] float32 (NaN = missing)
    #: [n, T] int8: 0 = fitted (or missing), +1 = y is a lower bound of the true value, -1 an upper bound
    censor: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.censor is None:
            self.censor = np.zeros(self.y.shape, dtype=np.int8)

    def __len__(self) -> int:
        return len(self.mol_ids)

    def training_labels(self, policy: str | None) -> tuple[np.ndarray, np.ndarray | None]:
        """``(y, censor)`` as training sees them under ``policy``: ``drop`` turns bounds into missing
        values, ``as_value`` (and None) keeps them as if measured, ``censored`` keeps them with their
        direction (``censor`` is None unless the policy is ``censored``)."""
        bound = self.censor != 0
        if policy == "drop":
            return np.where(bound, np.nan, self.y).astype(np.float32), None
        if policy == "censored":
            return self.y, self.censor
        if policy in (None, "as_value"):
            return self.y, None
        raise DataError(f"unknown censored-label policy {policy!r}; choose drop, as_value or censored")

    def subset(self, idx: np.ndarray | slice) -> TaskFold:
        """The fold restricted to rows ``idx`` (every aligned array alike)."""
        pos = np.arange(len(self))[idx]
        return TaskFold(mol_ids=self.mol_ids[pos], smiles=[self.smiles[i] for i in pos], y=self.y[pos],
                        aux={k: v[pos] for k, v in self.aux.items()}, censor=self.censor[pos])

    def n_labelled(self, policy: str | None) -> int:
        """Molecules with at least one label that training uses under ``policy``."""
        return int(np.isfinite(self.training_labels(policy)[0]).any(axis=1).sum())

    def counts(self) -> dict[str, int]:
        """Molecules with a fitted value and with a bound (any target)."""
        has = np.isfinite(self.y)
        return {"fitted": int((has & (self.censor == 0)).any(axis=1).sum()),
                "censored": int((has & (self.censor != 0)).any(axis=1).sum())}


@dataclass
class Task:
    dataset: str
    fidelity: str
    targets: list[str]
    lf_fidelity: str | None
    lf_target: str | None
    seed: int
    task_type: str
    folds: dict[str, TaskFold]
    store: GraphStore
    #: censored-label policy of the HF targets (None: their values carry no qualifier)
    censored: str | None = None
    #: "transductive": every molecule's measured LF label is an input; "inductive": the valid and test
    #: molecules are new, their measured LF labels are hidden (see :meth:`for_setting`)
    setting: str = "transductive"

    def for_setting(self, setting: str) -> Task:
        """This task in ``setting``. Inductive: the valid and test molecules' measured LF labels are NaN
        (they stand for molecules not screened yet); LF models for it must not have seen them either
        (:func:`holdout_ids`)."""
        if setting not in SETTINGS:
            raise DataError(f"unknown setting {setting!r}; choose {' or '.join(SETTINGS)}")
        folds = dict(self.folds)
        if setting == "inductive":
            for f in ("valid", "test"):
                fold = folds[f]
                aux = {k: (np.full_like(v, np.nan) if k == "lf_label" else v) for k, v in fold.aux.items()}
                folds[f] = TaskFold(mol_ids=fold.mol_ids, smiles=fold.smiles, y=fold.y, aux=aux, censor=fold.censor)
        return replace(self, folds=folds, setting=setting)

    @property
    def train(self) -> TaskFold:
        return self.folds["train"]

    @property
    def valid(self) -> TaskFold:
        return self.folds["valid"]

    @property
    def test(self) -> TaskFold:
        return self.folds["test"]

    @property
    def name(self) -> str:
        return f"{self.dataset}:{self.fidelity}/{','.join(self.targets)}"

    def aux_names(self) -> list[str]:
        return sorted(self.train.aux)


def _pick_lf_target(store: GraphStore, lf_fidelity: str, target: str) -> str | None:
    tl = store.table("task_labels")
    targets = tl.filter(pl.col("fidelity") == lf_fidelity)["target"].unique().sort().to_list()
    if not targets:
        return None
    if target in targets:
        return target
    if len(targets) == 1:
        return targets[0]
    raise DataError(f"{store.path}: several LF targets {targets}; say which one is the LF input (lf_target)")


def load_task(
    store: GraphStore,
    seed: int,
    *,
    targets: list[str] | None = None,
    fidelity: str | None = None,
    lf_target: str | None = None,
    aux_files: dict[str, str | Path] | None = None,
    censored: str | None = None,
) -> Task:
    """Assemble a task from a finished graph store (see module docstring).

    ``censored`` overrides the censored-label policy of the store's spec (``drop``, ``as_value`` or
    ``censored``); it applies only to targets whose values carry a qualifier.
    """
    spec = store.manifest["spec"]
    fidelities: list[str] = spec["fidelities"]
    fidelity = fidelity or spec["split"].get("fidelity") or fidelities[-1]
    if fidelity not in fidelities:
        raise DataError(f"fidelity {fidelity!r} is not one of {fidelities}")
    tl = store.table("task_labels")
    available = tl.filter(pl.col("fidelity") == fidelity)["target"].unique().sort().to_list()
    if not available:
        have = sorted(set(tl["fidelity"].unique().to_list()))
        raise DataError(f"{store.path}: dataset {spec.get('name', '?')!r} has no {fidelity} labels to train on "
                        f"(its stored labels are of fidelit{'y' if len(have) == 1 else 'ies'} {have}); a model is "
                        f"trained on the highest fidelity ({fidelities[-1]!r}) unless split.fidelity says otherwise")
    targets = targets or available
    missing = [t for t in targets if t not in available]
    if missing:
        raise DataError(f"{store.path}: no {fidelity} labels for target(s) {missing}; available: {available}")
    lower = fidelities[: fidelities.index(fidelity)]
    lf_fidelity = lower[-1] if lower else None
    if lf_fidelity is not None and lf_target is None:
        lf_target = _pick_lf_target(store, lf_fidelity, targets[0])

    policy = _policy(spec, store, fidelity, targets, censored)
    splits = store.split_ids(seed)
    mols = store.table("molecules").select("mol_id", "smiles")
    if "censor" not in tl.columns:  # a store written before labels carried their qualifier
        tl = tl.with_columns(pl.lit(0, pl.Int8).alias("censor"))
    hf_long = tl.filter((pl.col("fidelity") == fidelity) & pl.col("target").is_in(targets))
    hf = hf_long.pivot(on="target", index="mol_id", values="value")
    hf_c = hf_long.pivot(on="target", index="mol_id", values="censor")
    lf = None
    if lf_fidelity and lf_target:
        lf = tl.filter((pl.col("fidelity") == lf_fidelity) & (pl.col("target") == lf_target)).select(
            "mol_id", pl.col("value").alias("lf_label"))
    art = store.table("artifacts") if (store.path / "artifacts.parquet").exists() else None
    extra = {name: pl.read_parquet(p) for name, p in (aux_files or {}).items()}

    folds: dict[str, TaskFold] = {}
    for fold in FOLD_NAMES:
        ids = pl.DataFrame({"mol_id": np.asarray(splits[fold], dtype=np.int64)})
        df = ids.join(mols, on="mol_id", how="left").join(hf, on="mol_id", how="left")
        y = df.select([pl.col(t).cast(pl.Float32) for t in targets]).to_numpy().astype(np.float32)
        cens = (ids.join(hf_c, on="mol_id", how="left")
                .select([pl.col(t).fill_null(0).cast(pl.Int8) for t in targets]).to_numpy().astype(np.int8))
        aux: dict[str, np.ndarray] = {}
        if lf is not None:
            aux["lf_label"] = ids.join(lf, on="mol_id", how="left")["lf_label"].to_numpy().astype(np.float32)[:, None]
        if art is not None:
            joined = ids.join(art, on="mol_id", how="left")
            for c in art.columns:
                if c != "mol_id":
                    aux[f"artifact:{c}"] = _as_matrix(joined[c])
        for name, table in extra.items():
            joined = ids.join(table, on="mol_id", how="left")
            for c in table.columns:
                if c != "mol_id":
                    aux[f"{name}:{c}"] = _as_matrix(joined[c])
        folds[fold] = TaskFold(mol_ids=ids["mol_id"].to_numpy(), smiles=df["smiles"].to_list(), y=y, aux=aux,
                               censor=cens)
    return Task(dataset=spec["name"], fidelity=fidelity, targets=list(targets), lf_fidelity=lf_fidelity,
                lf_target=lf_target, seed=seed, task_type=spec.get("task_type", "regression"), folds=folds,
                store=store, censored=policy)


def holdout_ids(store: GraphStore, seeds: list[int], folds: tuple[str, ...] = ("valid", "test")) -> np.ndarray:
    """The molecules of ``folds`` of any of the split ``seeds``: what an LF model for the inductive
    setting must not be trained on (sorted ``mol_id`` s)."""
    s = store.table("splits").filter(pl.col("seed").is_in(list(seeds)) & pl.col("fold").is_in(list(folds)))
    have = set(store.table("splits")["seed"].unique().to_list())
    missing = sorted(set(seeds) - have)
    if missing:
        raise DataError(f"{store.path}: no split for seed(s) {missing}; stored seeds: {sorted(have)}")
    return np.sort(s["mol_id"].unique().to_numpy())


def qualified_targets(store: GraphStore, fidelity: str) -> list[str]:
    """Targets of ``fidelity`` whose values carry a qualifier (per the store's manifest)."""
    cens = store.manifest["counts"].get("label_censoring", {})
    return sorted(k.split("/", 1)[1] for k, v in cens.items() if v.get("qualified") and k.split("/", 1)[0] == fidelity)


def _policy(spec: dict, store: GraphStore, fidelity: str, targets: list[str], override: str | None) -> str | None:
    """The censored-label policy of a task: ``override``, else the spec's for its targets (one policy
    per task); None when none of its targets carries a qualifier."""
    from mfray.data.specs import CENSORED_POLICIES, parse_spec

    if override is not None and override not in CENSORED_POLICIES:
        raise DataError(f"unknown censored-label policy {override!r}; choose {', '.join(CENSORED_POLICIES)}")
    qualified = [t for t in targets if t in qualified_targets(store, fidelity)]
    if not qualified:
        return None
    if override is not None:
        return override
    policies = parse_spec(spec, where=str(store.path)).censored_policies()
    found = {policies.get((fidelity, t)) for t in qualified}
    if len(found) > 1:
        raise DataError(f"{store.path}: targets {qualified} have different censored-label policies {sorted(map(str, found))}; "
                        "load the task with one policy (censored=...)")
    return found.pop()


def _as_matrix(col: pl.Series) -> np.ndarray:
    """A numeric or list column -> [n, d] float32 with NaN rows for missing values."""
    if col.dtype in (pl.List, pl.Array) or isinstance(col.dtype, (pl.List, pl.Array)):
        dim = int(col.drop_nulls().list.len().max() or 0) if isinstance(col.dtype, pl.List) else col.dtype.size
        out = np.full((len(col), dim), np.nan, dtype=np.float32)
        for i, v in enumerate(col.to_list()):
            if v is not None:
                out[i] = v
        return out
    return col.cast(pl.Float32).to_numpy().astype(np.float32)[:, None]
