"""Splitters: molecule ids -> (seed, fold) assignments, never dependent on input row order.

A split is stored as ``splits(mol_id, seed, fold)`` with fold in {train, valid, test}. Ids are sorted
before a seeded permutation, so the same molecules and seed give the same split whatever order the
files list them in (the reference implementation's splits depend on CSV row order).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from mfray.utils.registry import Registry

FOLDS = ("train", "valid", "test")
SPLIT_SCHEMA = pa.schema(
    [pa.field("mol_id", pa.int64(), nullable=False), pa.field("seed", pa.int64(), nullable=False),
     pa.field("fold", pa.dictionary(pa.int8(), pa.string()), nullable=False)]
)

SPLITTERS: Registry = Registry("splitter")


def _sizes(n: int, fractions: Sequence[float]) -> tuple[int, int, int]:
    """Fold sizes, rounded as scikit-learn's two-stage train_test_split rounds them (the MF-PCBA
    splits: 655 molecules -> 524/65/66), so sizes match the paper's even though members cannot."""
    held = fractions[1] + fractions[2]
    n_held = min(n, math.ceil(n * held - 1e-9)) if held > 0 else 0
    n_test = min(n_held, math.ceil(n_held * fractions[2] / held - 1e-9)) if held > 0 else 0
    return n - n_held, n_held - n_test, n_test


@SPLITTERS.register("random")
def random_split(mol_ids: np.ndarray, seed: int, fractions: Sequence[float] = (0.8, 0.1, 0.1),
                 smiles: Sequence[str] | None = None) -> np.ndarray:
    """Fold index (0 train, 1 valid, 2 test) per id: a seeded permutation of the sorted ids."""
    ids = np.asarray(mol_ids, dtype=np.int64)
    order = np.argsort(ids, kind="stable")
    perm = np.random.default_rng(seed).permutation(len(ids))
    n_train, n_valid, _ = _sizes(len(ids), fractions)
    fold_sorted = np.full(len(ids), 2, dtype=np.int8)
    fold_sorted[perm[:n_train]] = 0
    fold_sorted[perm[n_train : n_train + n_valid]] = 1
    out = np.empty(len(ids), dtype=np.int8)
    out[order] = fold_sorted
    return out


def murcko_scaffold(smiles: str) -> str:
    from rdkit import Chem
    from rdkit.Chem.Scaffolds import MurckoScaffold

    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return smiles
    try:
        return MurckoScaffold.MurckoScaffoldSmiles(mol=mol, includeChirality=False)
    except Exception:  # RDKit raises on a few exotic valences; fall back to the molecule itself
        return smiles


@SPLITTERS.register("scaffold")
def scaffold_split(mol_ids: np.ndarray, seed: int, fractions: Sequence[float] = (0.8, 0.1, 0.1),
                   smiles: Sequence[str] | None = None) -> np.ndarray:
    """Bemis-Murcko scaffold split: whole scaffold groups go to one fold.

    Groups larger than half the validation size are placed first (into train), the rest in a
    seeded random order, so test molecules have scaffolds unseen in training.
    """
    if smiles is None:
        raise ValueError("scaffold split needs the molecules' SMILES")
    ids = np.asarray(mol_ids, dtype=np.int64)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(smiles):
        groups[murcko_scaffold(s) or s].append(i)
    n_train, n_valid, n_test = _sizes(len(ids), fractions)
    keys = sorted(groups, key=lambda k: (min(ids[groups[k]]), k))  # row-order independent
    rng = np.random.default_rng(seed)
    big = [k for k in keys if len(groups[k]) > max(1, n_valid // 2)]
    small = [k for k in keys if len(groups[k]) <= max(1, n_valid // 2)]
    small = [small[i] for i in rng.permutation(len(small))]
    out = np.zeros(len(ids), dtype=np.int8)
    counts = [0, 0, 0]
    caps = [n_train, n_valid, n_test]
    for k in big + small:
        members = groups[k]
        fold = next((f for f in (0, 1, 2) if counts[f] + len(members) <= caps[f]), None)
        if fold is None:  # does not fit anywhere whole: the emptiest fold relative to its cap
            fold = int(np.argmin([counts[f] / max(caps[f], 1) for f in (0, 1, 2)]))
        out[members] = fold
        counts[fold] += len(members)
    return out


def make_splits(kind: str, mol_ids: np.ndarray, seeds: Sequence[int], fractions: Sequence[float],
                smiles: Sequence[str] | None = None) -> pa.Table:
    """A ``splits(mol_id, seed, fold)`` table for every seed."""
    fn = SPLITTERS.get(kind)
    ids = np.asarray(mol_ids, dtype=np.int64)
    parts = []
    for seed in seeds:
        folds = fn(ids, int(seed), fractions, smiles=smiles)
        parts.append(
            pa.table(
                {
                    "mol_id": pa.array(ids, pa.int64()),
                    "seed": pa.array(np.full(len(ids), seed, dtype=np.int64)),
                    "fold": pa.DictionaryArray.from_arrays(pa.array(folds, pa.int8()), pa.array(FOLDS)),
                },
                schema=SPLIT_SCHEMA,
            )
        )
    if not parts:
        return SPLIT_SCHEMA.empty_table()
    return pa.concat_tables(parts)
