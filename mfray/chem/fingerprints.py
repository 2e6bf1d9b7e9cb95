"""Molecule descriptors for the classical baselines (METHOD.md section 6): Morgan bits, RDKit 2D.

Both take standardised SMILES and return a dense float32 matrix plus a validity mask; a SMILES that
fails to parse gives an all-zero row and ``valid = False`` (never an exception mid-batch).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from rdkit import Chem, RDLogger
from rdkit.Chem import Descriptors, rdFingerprintGenerator

from mfray.utils.registry import Registry

RDLogger.DisableLog("rdApp.*")

DESCRIPTORS: Registry = Registry("molecular descriptor")


@DESCRIPTORS.register("morgan")
class MorganFingerprint:
    """Morgan (ECFP-like) bit vector.

    Args:
        radius: neighbourhood radius (default 3, as the reference RF/SVR baselines).
        n_bits: vector length (default 2048).
    """

    def __init__(self, radius: int = 3, n_bits: int = 2048) -> None:
        self.radius = radius
        self.n_bits = n_bits
        self._gen = rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=n_bits)

    def __len__(self) -> int:
        return self.n_bits

    def __repr__(self) -> str:
        return f"MorganFingerprint(radius={self.radius}, n_bits={self.n_bits})"

    def __call__(self, smiles: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        out = np.zeros((len(smiles), self.n_bits), dtype=np.float32)
        valid = np.zeros(len(smiles), dtype=bool)
        for i, s in enumerate(smiles):
            mol = Chem.MolFromSmiles(s) if s else None
            if mol is None:
                continue
            out[i] = self._gen.GetFingerprintAsNumPy(mol)
            valid[i] = True
        return out, valid


@DESCRIPTORS.register("rdkit2d")
class RDKit2DDescriptors:
    """All RDKit 2D descriptors (``rdkit.Chem.Descriptors.descList``), non-finite values set to 0.

    Args:
        names: a subset of descriptor names (default: all of them, in RDKit's order).
    """

    def __init__(self, names: Sequence[str] | None = None) -> None:
        table = dict(Descriptors.descList)
        if names is None:
            names = list(table)
        unknown = [n for n in names if n not in table]
        if unknown:
            raise ValueError(f"unknown RDKit descriptors {unknown}")
        self.names = list(names)
        self._fns = [table[n] for n in self.names]

    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        return f"RDKit2DDescriptors(n={len(self)})"

    def __call__(self, smiles: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        out = np.zeros((len(smiles), len(self.names)), dtype=np.float64)
        valid = np.zeros(len(smiles), dtype=bool)
        for i, s in enumerate(smiles):
            mol = Chem.MolFromSmiles(s) if s else None
            if mol is None:
                continue
            for j, fn in enumerate(self._fns):
                try:
                    out[i, j] = fn(mol)
                except Exception:  # a few descriptors raise on exotic molecules: treat as missing
                    out[i, j] = np.nan
            valid[i] = True
        out[~np.isfinite(out)] = 0.0
        # a handful of descriptors (e.g. Ipc) overflow float32 on large molecules: clip, then cast
        return np.clip(out, -1e30, 1e30).astype(np.float32), valid
