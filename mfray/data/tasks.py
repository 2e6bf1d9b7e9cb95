"""A task: one high-fidelity target of one dataset, split by one seed, with optional LF inputs.

``load_task(store, seed)`` gathers, per fold (train/valid/test), the molecule ids, SMILES, HF targets
and any low-fidelity inputs a transfer strategy may use:

- ``lf_label``: the *measured* LF label of each molecule (NaN where the molecule was not screened);
- ``artifact:<name>``: precomputed LF-model outputs shipped with the data (predictions, embeddings);
- ``file:<name>``: LF-model outputs written by ``mfray embed`` (Parquet keyed by ``mol_id``).

Everything is keyed by ``mol_id``; nothing depends on row order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from mfray.data.store import GraphStore
from mfray.utils.errors import DataError

FOLD_NAMES = ("train", "valid", "test")


@dataclass
class TaskFold:
    """One fold of a task. Arrays are aligned with ``mol_ids``."""

    mol_ids: np.ndarray  # [n] int64
    smiles: list[str]
    y: np.ndarray  # [n, T] float32 (NaN = missing, for multi-target tasks)
    aux: dict[str, np.ndarray] = field(default_factory=dict)  # name -> [n, d] float32 (NaN = missing)

    def __len__(self) -> int:
        return len(self.mol_ids)


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
) -> Task:
    """Assemble a task from a finished graph store (see module docstring)."""
    spec = store.manifest["spec"]
    fidelities: list[str] = spec["fidelities"]
    fidelity = fidelity or spec["split"].get("fidelity") or fidelities[-1]
    if fidelity not in fidelities:
        raise DataError(f"fidelity {fidelity!r} is not one of {fidelities}")
    tl = store.table("task_labels")
    available = tl.filter(pl.col("fidelity") == fidelity)["target"].unique().sort().to_list()
    targets = targets or available
    missing = [t for t in targets if t not in available]
    if missing:
        raise DataError(f"{store.path}: no {fidelity} labels for target(s) {missing}; available: {available}")
    lower = fidelities[: fidelities.index(fidelity)]
    lf_fidelity = lower[-1] if lower else None
    if lf_fidelity is not None and lf_target is None:
        lf_target = _pick_lf_target(store, lf_fidelity, targets[0])

    splits = store.split_ids(seed)
    mols = store.table("molecules").select("mol_id", "smiles")
    hf = (tl.filter((pl.col("fidelity") == fidelity) & pl.col("target").is_in(targets))
          .pivot(on="target", index="mol_id", values="value"))
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
        folds[fold] = TaskFold(mol_ids=ids["mol_id"].to_numpy(), smiles=df["smiles"].to_list(), y=y, aux=aux)
    return Task(dataset=spec["name"], fidelity=fidelity, targets=list(targets), lf_fidelity=lf_fidelity,
                lf_target=lf_target, seed=seed, task_type=spec.get("task_type", "regression"), folds=folds,
                store=store)


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
