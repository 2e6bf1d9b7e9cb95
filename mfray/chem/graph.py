"""Molecule -> graph properties: the small integers the graph store keeps, one column per property.

The store keeps *raw* per-atom and per-bond properties (atomic number, degree, charge, ...), each a
small integer, not one-hot floats and not vocabulary indices. A featuriser preset
(:mod:`mfray.chem.featurizers`) maps them to categorical codes with declared widths at collate time, so
one featurised store serves every vocabulary (paper M=35/53/80, default with unknown slots) and a
molecule costs tens of bytes on disk instead of ~13 kB of one-hot floats.

Bonds are stored once (undirected), as flat ``[src0, dst0, src1, dst1, ...]`` local atom indices;
both directions are produced at collate time.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
from rdkit import Chem
from rdkit.Chem import rdchem

from mfray.chem.standardize import Rejection, Standardizer

#: per-atom property columns, in store order, with their Arrow value types
ATOM_PROPERTIES: dict[str, pa.DataType] = {
    "atom_z": pa.uint8(),  # atomic number
    "atom_degree": pa.uint8(),  # total degree (incl. implicit Hs)
    "atom_charge": pa.int8(),  # formal charge
    "atom_chirality": pa.uint8(),  # RDKit ChiralType value
    "atom_hs": pa.uint8(),  # total number of Hs
    "atom_hybridization": pa.uint8(),  # RDKit HybridizationType value
    "atom_aromatic": pa.uint8(),  # 0/1
}
#: per-bond property columns (one entry per undirected bond)
BOND_PROPERTIES: dict[str, pa.DataType] = {
    "bond_type": pa.uint8(),  # RDKit BondType value (1, 2, 3, 12 = aromatic, ...)
    "bond_conjugated": pa.uint8(),
    "bond_in_ring": pa.uint8(),
    "bond_stereo": pa.uint8(),  # RDKit BondStereo value
}
#: bump when extraction changes meaning: part of every graph store's cache key
GRAPH_SCHEMA_VERSION = 1

GRAPH_SCHEMA = pa.schema(
    [
        pa.field("mol_id", pa.int64(), nullable=False),
        pa.field("n_atoms", pa.uint16(), nullable=False),
        *(pa.field(k, pa.list_(t)) for k, t in ATOM_PROPERTIES.items()),
        pa.field("edge_index", pa.list_(pa.uint16())),
        *(pa.field(k, pa.list_(t)) for k, t in BOND_PROPERTIES.items()),
    ]
)

_A = rdchem.Atom
_B = rdchem.Bond
_ATOM_GETTERS = {
    "atom_z": _A.GetAtomicNum,
    "atom_degree": _A.GetTotalDegree,
    "atom_charge": _A.GetFormalCharge,
    "atom_chirality": _A.GetChiralTag,
    "atom_hs": _A.GetTotalNumHs,
    "atom_hybridization": _A.GetHybridization,
    "atom_aromatic": _A.GetIsAromatic,
}
_BOND_GETTERS = {
    "bond_type": _B.GetBondType,
    "bond_conjugated": _B.GetIsConjugated,
    "bond_in_ring": _B.IsInRing,
    "bond_stereo": _B.GetStereo,
}


def smiles_key(smiles: str) -> int:
    """A stable signed 64-bit key of a canonical SMILES (the default molecule id)."""
    return int.from_bytes(hashlib.blake2b(smiles.encode(), digest_size=8).digest(), "little", signed=True)


def text_key(text: str) -> int:
    """A stable signed 64-bit key of an arbitrary (non-integer) source id."""
    return int.from_bytes(hashlib.blake2b(b"id:" + text.encode(), digest_size=8).digest(), "little", signed=True)


@dataclass
class FeaturizedBatch:
    """Column-oriented result of featurising a batch of SMILES (row order preserved)."""

    ok: list[bool] = field(default_factory=list)
    smiles: list[str | None] = field(default_factory=list)
    key: list[int | None] = field(default_factory=list)
    reject_code: list[str | None] = field(default_factory=list)
    reject_reason: list[str | None] = field(default_factory=list)
    n_atoms: list[int] = field(default_factory=list)
    atom: dict[str, list[int]] = field(default_factory=lambda: {k: [] for k in ATOM_PROPERTIES})
    atom_offsets: list[int] = field(default_factory=lambda: [0])
    edges: list[int] = field(default_factory=list)
    bond: dict[str, list[int]] = field(default_factory=lambda: {k: [] for k in BOND_PROPERTIES})
    bond_offsets: list[int] = field(default_factory=lambda: [0])

    def graph_columns(self) -> dict[str, pa.Array]:
        """Arrow list columns for the graph store (rejected rows become empty lists)."""
        a_off = pa.array(self.atom_offsets, pa.int32())
        b_off = pa.array(self.bond_offsets, pa.int32())
        e_off = pa.array([2 * o for o in self.bond_offsets], pa.int32())
        cols: dict[str, pa.Array] = {"n_atoms": pa.array(self.n_atoms, pa.uint16())}
        for k, t in ATOM_PROPERTIES.items():
            cols[k] = pa.ListArray.from_arrays(a_off, pa.array(np.asarray(self.atom[k]).astype(t.to_pandas_dtype()), t))
        cols["edge_index"] = pa.ListArray.from_arrays(e_off, pa.array(np.asarray(self.edges, dtype=np.uint16), pa.uint16()))
        for k, t in BOND_PROPERTIES.items():
            cols[k] = pa.ListArray.from_arrays(b_off, pa.array(np.asarray(self.bond[k]).astype(t.to_pandas_dtype()), t))
        return cols


class GraphExtractor:
    """Standardise and extract graph properties for a batch of SMILES.

    Args:
        standardizer: the standardisation pipeline (default: MF-PCBA recipe).

    When the standardiser strips stereochemistry, chirality and bond-stereo columns are zeros without
    asking RDKit per atom (they are zero by construction), which keeps extraction cheap.
    """

    def __init__(self, standardizer: Standardizer | None = None) -> None:
        self.standardizer = standardizer or Standardizer()
        self._no_stereo = self.standardizer.config.remove_stereo

    def spec(self) -> dict[str, Any]:
        return {
            "graph_schema_version": GRAPH_SCHEMA_VERSION,
            "standardizer": {
                k: (list(v) if isinstance(v, tuple) else v)
                for k, v in vars(self.standardizer.config).items()
            },
            "rdkit": Chem.rdBase.rdkitVersion,
        }

    def __call__(self, smiles_list: list[str | None]) -> FeaturizedBatch:
        out = FeaturizedBatch()
        std = self.standardizer
        atom_getters = dict(_ATOM_GETTERS)
        bond_getters = dict(_BOND_GETTERS)
        if self._no_stereo:
            atom_getters.pop("atom_chirality")
            bond_getters.pop("bond_stereo")
        atom_cols = out.atom
        bond_cols = out.bond
        for smi in smiles_list:
            res = std(smi)
            if isinstance(res, Rejection):
                out.ok.append(False)
                out.smiles.append(None)
                out.key.append(None)
                out.reject_code.append(res.code)
                out.reject_reason.append(res.reason)
                out.n_atoms.append(0)
                out.atom_offsets.append(out.atom_offsets[-1])
                out.bond_offsets.append(out.bond_offsets[-1])
                continue
            mol = res
            can = Chem.MolToSmiles(mol)
            atoms = list(mol.GetAtoms())
            bonds = list(mol.GetBonds())
            n, m = len(atoms), len(bonds)
            if n > 65535:
                out.ok.append(False)
                out.smiles.append(None)
                out.key.append(None)
                out.reject_code.append("too_large")
                out.reject_reason.append(f"{n} atoms does not fit the graph store (max 65535)")
                out.n_atoms.append(0)
                out.atom_offsets.append(out.atom_offsets[-1])
                out.bond_offsets.append(out.bond_offsets[-1])
                continue
            for k, g in atom_getters.items():
                atom_cols[k].extend(map(g, atoms))
            for k, g in bond_getters.items():
                bond_cols[k].extend(map(g, bonds))
            if self._no_stereo:
                atom_cols["atom_chirality"].extend([0] * n)
                bond_cols["bond_stereo"].extend([0] * m)
            begin = list(map(_B.GetBeginAtomIdx, bonds))
            end = list(map(_B.GetEndAtomIdx, bonds))
            pairs = [0] * (2 * m)
            pairs[0::2] = begin
            pairs[1::2] = end
            out.edges.extend(pairs)
            out.ok.append(True)
            out.smiles.append(can)
            out.key.append(smiles_key(can))
            out.reject_code.append(None)
            out.reject_reason.append(None)
            out.n_atoms.append(n)
            out.atom_offsets.append(out.atom_offsets[-1] + n)
            out.bond_offsets.append(out.bond_offsets[-1] + m)
        return out
