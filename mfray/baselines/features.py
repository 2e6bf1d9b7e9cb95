"""Feature matrices for the classical baselines: a molecular descriptor, optionally augmented.

The descriptor (``"morgan"`` bits or ``"rdkit2d"`` descriptors, :data:`mfray.chem.fingerprints.DESCRIPTORS`)
is computed from each fold's standardised SMILES; real-valued descriptors are standardised with the
training fold's statistics, binary fingerprints are left as they are. An augmentation appends one LF
input of the task (METHOD.md section 6: the same augmentations as the GNN strategies):

========================  ==========================================================================
augment                   what is appended (:class:`mfray.transfer.LFInput`, found by
                          :func:`mfray.transfer.inputs.input_key`, as for the GNN strategies)
========================  ==========================================================================
``"label"``               the measured LF label (transductive)
``"predicted_label"``     an LF model's prediction: an attached LF outputs table's, else the dataset's
                          first prediction artifact (e.g. ``artifact:STPredSD``)
``"embeddings"``          an LF model's graph embedding, found the same way
========================  ==========================================================================

The appended columns are standardised with training statistics. A molecule without the LF input
(NaN) is an error naming the fold and key: the baselines never impute (the per-molecule
measured-else-predicted fallback is the ``hybrid_label`` strategy, not a baseline).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from mfray.chem.fingerprints import DESCRIPTORS
from mfray.data.tasks import FOLD_NAMES, Task
from mfray.train.scaling import Scaler
from mfray.transfer import LFInput
from mfray.transfer.inputs import input_key
from mfray.utils.errors import DataError

#: augmentation name -> the LF input it appends (unless ``aux_key`` names an aux input directly)
AUGMENTS: dict[str, LFInput] = {
    "label": LFInput.LABEL,
    "predicted_label": LFInput.PREDICTION,
    "embeddings": LFInput.EMBEDDING,
}

#: descriptors whose values are already on a common 0/1 scale (not standardised)
BINARY_DESCRIPTORS = frozenset({"morgan"})

Descriptor = Callable[[Sequence[str]], tuple[np.ndarray, np.ndarray]]


@dataclass
class FeatureSet:
    """Per-fold design matrices ``fold -> [n, width]`` float32, and what they were built from."""

    X: dict[str, np.ndarray]
    descriptor: str | None  # e.g. "morgan"; None when no descriptor (lf_linear)
    descriptor_width: int
    aux_key: str | None
    aux_width: int

    @property
    def width(self) -> int:
        return self.descriptor_width + self.aux_width

    def __repr__(self) -> str:
        sizes = ", ".join(f"{f}={len(x)}" for f, x in self.X.items())
        return (f"FeatureSet(descriptor={self.descriptor!r}, aux_key={self.aux_key!r}, "
                f"width={self.width} ({self.descriptor_width}+{self.aux_width}), {sizes})")


class CachedDescriptor:
    """A descriptor that remembers each SMILES' row, so repeated split seeds compute it once.

    Args:
        descriptor: a registered descriptor name (``"morgan"``, ``"rdkit2d"``) or a built descriptor.
    """

    def __init__(self, descriptor: str | Descriptor) -> None:
        self.name = descriptor if isinstance(descriptor, str) else type(descriptor).__name__.lower()
        self.inner = DESCRIPTORS.build(descriptor) if isinstance(descriptor, str) else descriptor
        self._rows: dict[str, tuple[np.ndarray, bool]] = {}

    def __len__(self) -> int:
        return len(self.inner)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"CachedDescriptor({self.inner!r}, cached={len(self._rows)})"

    def __call__(self, smiles: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        todo = sorted({s for s in smiles if s not in self._rows})
        if todo:
            X, valid = self.inner(todo)
            self._rows.update({s: (X[i], bool(valid[i])) for i, s in enumerate(todo)})
        rows = [self._rows[s] for s in smiles]
        width = len(self)
        X = np.stack([r[0] for r in rows]) if rows else np.zeros((0, width), dtype=np.float32)
        return X.astype(np.float32, copy=False), np.array([r[1] for r in rows], dtype=bool)


def resolve_aux_key(task: Task, augment: str | None, aux_key: str | None) -> str | None:
    """The aux key an augmentation reads (``aux_key`` overrides the default); None without one."""
    if augment is None:
        if aux_key is not None:
            raise ValueError(f"aux_key={aux_key!r} given without an augmentation; choose augment from {sorted(AUGMENTS)}")
        return None
    if augment not in AUGMENTS:
        raise ValueError(f"unknown augment {augment!r}; choices: None, {', '.join(sorted(AUGMENTS))}")
    key = aux_key or input_key(task, AUGMENTS[augment])
    if key is None:
        raise DataError(f"task {task.name} has no {AUGMENTS[augment].value} for augment {augment!r}; available aux "
                        f"inputs: {task.aux_names() or 'none'}")
    return key


def aux_matrix(task: Task, key: str, fold: str) -> np.ndarray:
    """The ``[n, d]`` aux input ``key`` of one fold; a missing key or a NaN row is a :class:`DataError`."""
    f = task.folds[fold]
    if key not in f.aux:
        raise DataError(f"task {task.name} (seed {task.seed}) has no aux input {key!r}; "
                        f"available: {sorted(f.aux) or 'none'}")
    a = np.asarray(f.aux[key], dtype=np.float32)
    a = a[:, None] if a.ndim == 1 else a
    bad = ~np.isfinite(a).all(axis=1)
    if bad.any():
        ids = f.mol_ids[bad][:5].tolist()
        raise DataError(f"aux input {key!r} is missing (NaN) for {int(bad.sum())} of {len(f)} molecules of the "
                        f"{fold} fold of {task.name} (seed {task.seed}), e.g. mol_id {ids}; the baselines do not "
                        "impute: choose an aux key every molecule has (e.g. an LF-model prediction)")
    return a


def standardize(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """``(x - mean) / std`` with the first matrix's column statistics (a constant column gets std 1)."""
    scaler = Scaler.fit(train)
    return [scaler.transform(x) for x in (train, *others)]


def build_features(task: Task, descriptor: str | Descriptor | None, aux_key: str | None = None) -> FeatureSet:
    """Design matrices for every fold of ``task``: ``[descriptor | standardised aux]``.

    Args:
        task: the task (its folds' SMILES and aux inputs are read).
        descriptor: a descriptor name, a built descriptor, or None for no molecular features.
        aux_key: an aux input of the task to append (see :func:`resolve_aux_key`), or None.

    Shapes:
        ``X[fold]``: ``[n_fold, width]`` float32, ``width = len(descriptor) + aux dim``.
    """
    if descriptor is None and aux_key is None:
        raise ValueError("nothing to build: give a descriptor, an aux key, or both")
    parts: list[dict[str, np.ndarray]] = []
    name, d_width, a_width = None, 0, 0
    if descriptor is not None:
        fn = DESCRIPTORS.build(descriptor) if isinstance(descriptor, str) else descriptor
        name = descriptor if isinstance(descriptor, str) else getattr(fn, "name", type(fn).__name__.lower())
        mats = {}
        for fold in FOLD_NAMES:
            X, valid = fn(task.folds[fold].smiles)
            if not valid.all():
                ids = task.folds[fold].mol_ids[~valid][:5].tolist()
                raise DataError(f"descriptor {name!r} could not parse {int((~valid).sum())} SMILES of the {fold} "
                                f"fold of {task.name}, e.g. mol_id {ids}")
            mats[fold] = np.asarray(X, dtype=np.float32)
        if name not in BINARY_DESCRIPTORS:
            mats = dict(zip(FOLD_NAMES, standardize(*(mats[f] for f in FOLD_NAMES)), strict=True))
        d_width = mats["train"].shape[1]
        parts.append(mats)
    if aux_key is not None:
        raw = [aux_matrix(task, aux_key, f) for f in FOLD_NAMES]
        parts.append(dict(zip(FOLD_NAMES, standardize(*raw), strict=True)))
        a_width = raw[0].shape[1]
    X = {f: np.ascontiguousarray(np.hstack([p[f] for p in parts]), dtype=np.float32) for f in FOLD_NAMES}
    return FeatureSet(X=X, descriptor=name, descriptor_width=d_width, aux_key=aux_key, aux_width=a_width)
