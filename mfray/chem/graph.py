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
import re
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


#: atom tokens of a SMILES, in atom-index order (RDKit numbers atoms in input order): a whole bracket atom
#: (group 1: its element symbol, after any isotope) or an organic-subset atom (group 2)
_ATOM_TOKEN = re.compile(r"\[\d*([A-Za-z][a-z]?|\*)[^\]]*\]|(Br|Cl|[BCNOPSFIbcnops*])")
_ORGANIC = {"B", "C", "N", "O", "P", "S", "F", "Cl", "Br", "I", "b", "c", "n", "o", "p", "s"}
#: elements of the fast path: non-metals, so sanitisation makes no dative bonds to metals and every bond is
#: single, double, triple, quadruple or aromatic (no H: explicit H atoms are removed on parsing)
_FAST_ELEMENTS = {
    5: ("B", "b"), 6: ("C", "c"), 7: ("N", "n"), 8: ("O", "o"), 9: ("F",), 14: ("Si", "si"), 15: ("P", "p"),
    16: ("S", "s"), 17: ("Cl",), 33: ("As", "as"), 34: ("Se", "se"), 35: ("Br",), 52: ("Te", "te"), 53: ("I",),
}
#: _ATOM_TOKEN.findall tuple (bracket symbol, organic symbol) -> atomic number
_FAST_Z = {(sym, ""): z for z, syms in _FAST_ELEMENTS.items() for sym in syms}
_FAST_Z.update({("", sym): z for z, syms in _FAST_ELEMENTS.items() for sym in syms if sym in _ORGANIC})
#: bond order (Bond.GetBondTypeAsDouble) -> RDKit BondType value, for the fast path, whose elements make only
#: single, double, triple, quadruple and aromatic bonds: their orders 1, 2, 3, 4, 1.5 tell them apart
_ORDER_TO_TYPE = np.zeros(9, np.int64)
_ORDER_TO_TYPE[[2, 3, 4, 6, 8]] = [1, 12, 2, 3, 4]  # indexed by 2 * order
#: SMILES text that needs no round-trip check (GraphExtractor._needs_round_trip): organic-subset atoms,
#: uncharged bracket atoms of the fast-path elements with an optional H count, ring bonds, branches
_PLAIN_SMILES = re.compile(r"(?:Br|Cl|[BCNOPSFIbcnops]|\[(?:Si|si|As|as|Se|se|Te|te|[BCNOPSbcnops])@{0,2}H?\d?\]|[0-9()=#%/\\-])+")
_Q = Chem.MolFromSmarts
#: single-atom SMARTS answered in C++ as index tuples (no per-atom Python objects). 'H<n>' counts all Hs
#: (GetTotalNumHs plus H neighbour atoms, of which the fast path has none); '^<n>' is RDKit's hybridisation
_HS_BIT_QUERIES = ((_Q("[H1,H3]"), 1), (_Q("[H2,H3]"), 2))  # H count 0-3 as two bits
_HYB_QUERIES = ((_Q("[^1]"), int(rdchem.HybridizationType.SP)), (_Q("[^2]"), int(rdchem.HybridizationType.SP2)))
_SP3 = int(rdchem.HybridizationType.SP3)
#: the atoms whose charge or hybridisation the queries above do not give: charged, or not SP/SP2/SP3
_ASK_ATOM = _Q("[!+0,!^1&!^2&!^3]")
_MATCH_ALL = Chem.SubstructMatchParameters()
_MATCH_ALL.uniquify = False
_MATCH_ALL.maxMatches = 1 << 30
del _Q


class GraphExtractor:
    """Standardise and extract graph properties for a batch of SMILES.

    Args:
        standardizer: the standardisation pipeline (default: MF-PCBA recipe).

    When the standardiser strips stereochemistry, chirality and bond-stereo columns are zeros without
    asking RDKit per atom (they are zero by construction), which keeps extraction cheap.

    Speed (the hot path of featurisation): asking RDKit for one property of one atom costs a Python
    wrapper object plus a boost.python call, ~0.3-0.8 us each, and a molecule has ~25 atoms and 27 bonds.
    So for most molecules (``_fast_atoms``) the atom columns come from bulk calls: atomic numbers from the
    SMILES text, H counts, hybridisation and charges from precompiled one-atom SMARTS (C++ returns only
    the indices that match), bond types from their orders, and degree/aromaticity
    are derived from the bonds. Each shortcut is exact and guarded; a molecule a guard does not cover
    takes the plain per-atom route (``_plain_atoms``). tests/chem/test_graph_fast.py compares the result
    with plain per-atom getters on real and tricky molecules.
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
            "max_atoms": self.standardizer.max_atoms,
        }

    def __call__(self, smiles_list: list[str | None]) -> FeaturizedBatch:
        out = FeaturizedBatch()
        std = self.standardizer
        fast_ok = self._no_stereo  # chirality has no bulk getter: with stereo kept, every atom is asked
        atom_cols, bond_cols = out.atom, out.bond
        arom_col, chir_col = atom_cols["atom_aromatic"], atom_cols["atom_chirality"]
        type_col, conj_col, ring_col = bond_cols["bond_type"], bond_cols["bond_conjugated"], bond_cols["bond_in_ring"]
        stereo_col = bond_cols["bond_stereo"]
        edges = out.edges
        fast: list[bool] = []  # per row: atom columns from bulk queries (aromaticity filled in at the end)
        for smi in smiles_list:
            res = std(smi)
            if isinstance(res, Rejection):
                self._reject(out, res.code, res.reason)
                fast.append(False)
                continue
            mol = res
            n, m = mol.GetNumAtoms(), mol.GetNumBonds()
            overflow = self._overflow(mol, n, m)
            if overflow is not None:
                self._reject(out, "out_of_range", overflow)
                fast.append(False)
                continue
            can = Chem.MolToSmiles(mol)
            if self._needs_round_trip(smi) and Chem.MolFromSmiles(can) is None:
                self._reject(out, "unstable_smiles", f"standardised SMILES {can[:120]!r} (from {smi[:120]!r}) does not "
                             "parse back in RDKit (e.g. neutralising a carbanion ring); the molecule is not stored")
                fast.append(False)
                continue
            # bonds: one wrapper per bond (there is no bulk getter for begin/end in bond order or for
            # conjugation); bond index order and begin/end orientation are RDKit's
            bonds = list(map(mol.GetBondWithIdx, range(m)))
            begin = list(map(_B.GetBeginAtomIdx, bonds))
            end = list(map(_B.GetEndAtomIdx, bonds))
            pairs = [0] * (2 * m)
            pairs[0::2] = begin
            pairs[1::2] = end
            edges.extend(pairs)
            conj_col.extend(map(_B.GetIsConjugated, bonds))
            ring_col.extend(map(_B.IsInRing, bonds))
            z = self._fast_z(smi, n) if fast_ok else None
            if z is not None and self._fast_atoms(mol, n, z, atom_cols):
                # bond type as its order (a plain float, where GetBondType builds an enum object),
                # turned into the BondType value for the whole batch in _derive_columns
                type_col.extend(map(_B.GetBondTypeAsDouble, bonds))
                arom_col.extend([0] * n)
                fast.append(True)
            else:
                self._plain_atoms(mol, atom_cols)
                fast.append(False)
                type_col.extend(map(int, map(_B.GetBondType, bonds)))
            if self._no_stereo:
                chir_col.extend([0] * n)
                stereo_col.extend([0] * m)
            else:
                stereo_col.extend(map(_B.GetStereo, bonds))
            out.ok.append(True)
            out.smiles.append(can)
            out.key.append(smiles_key(can))
            out.reject_code.append(None)
            out.reject_reason.append(None)
            out.n_atoms.append(n)
            out.atom_offsets.append(out.atom_offsets[-1] + n)
            out.bond_offsets.append(out.bond_offsets[-1] + m)
        self._derive_columns(out, fast)
        return out

    @staticmethod
    def _derive_columns(out: FeaturizedBatch, fast: list[bool]) -> None:
        """Whole-batch numpy pass: bond types of fast-path molecules (from their bond orders), the degree
        of every atom, and aromaticity of fast-path atoms (from their bonds)."""
        n_atoms = out.atom_offsets[-1]
        if n_atoms == 0:
            out.atom["atom_degree"] = []
            return
        a_off = np.asarray(out.atom_offsets, np.int64)
        b_off = np.asarray(out.bond_offsets, np.int64)
        per_bond = np.diff(b_off)
        fast_bond = np.repeat(np.asarray(fast, bool), per_bond)
        order = np.asarray(out.bond["bond_type"], np.float64)
        bond_type = order.astype(np.int64)
        bond_type[fast_bond] = _ORDER_TO_TYPE[(order[fast_bond] * 2).astype(np.int64)]
        out.bond["bond_type"] = bond_type.tolist()
        ends = np.asarray(out.edges, np.int64).reshape(-1, 2) + np.repeat(a_off[:-1], per_bond)[:, None]
        # total degree = explicit neighbours + Hs (RDKit's Atom::getTotalDegree is exactly this sum)
        degree = np.bincount(ends.ravel(), minlength=n_atoms) + np.asarray(out.atom["atom_hs"], np.int64)
        out.atom["atom_degree"] = degree.tolist()
        # an atom is aromatic iff it is on an aromatic bond: RDKit's aromaticity perception flags a ring's
        # atoms together with its bonds, and sanitisation rejects aromatic atoms outside rings
        aromatic_bond = (bond_type == 12) & fast_bond
        if aromatic_bond.any():
            arom = np.asarray(out.atom["atom_aromatic"], np.uint8)
            arom[ends[aromatic_bond].ravel()] = 1
            out.atom["atom_aromatic"] = arom.tolist()

    @staticmethod
    def _overflow(mol: Chem.Mol, n: int, m: int) -> str | None:
        """Why ``mol`` does not fit the store's integer types (None: it fits). Stored values are
        uint8/int8 per atom and uint16 atom indices; a value that would wrap is refused, never stored.

        An atom's degree is at most the bond count plus the molecule's H count, so only molecules with
        more than 255 of those are asked atom by atom (a drug-like molecule has far fewer)."""
        if n > 65535:
            return f"{n} atoms does not fit the graph store (max 65535)"
        total_hs = mol.GetNumAtoms(onlyExplicit=False) - n
        if m + total_hs <= 255:
            return None
        for atom in mol.GetAtoms():
            for what, value, lo, hi in (("degree", atom.GetTotalDegree(), 0, 255), ("H count", atom.GetTotalNumHs(), 0, 255),
                                        ("formal charge", atom.GetFormalCharge(), -128, 127)):
                if not lo <= value <= hi:
                    return (f"atom {atom.GetIdx()} ({atom.GetSymbol()}) has {what} {value}, outside the graph "
                            f"store's range {lo}..{hi}")
        return None

    @staticmethod
    def _needs_round_trip(smiles: str) -> bool:
        """Whether the canonical SMILES of this input is parsed back before it is stored.

        Standardisation can leave a molecule RDKit writes but cannot read back: neutralising the
        cyclopentadienyl anion ``c1cc[cH-]c1`` gives the unkekulizable ``c1cccc1``. Such changes come
        from charges (neutralisation), fragments (largest fragment), metals, explicit H and unusual
        bonds, all visible in the text; a plain neutral organic SMILES (most of a screen) is written
        from a molecule RDKit itself just parsed and sanitised, and is not parsed again: that check
        would add ~40% to featurisation."""
        return not _PLAIN_SMILES.fullmatch(smiles)

    @staticmethod
    def _reject(out: FeaturizedBatch, code: str, reason: str) -> None:
        out.ok.append(False)
        out.smiles.append(None)
        out.key.append(None)
        out.reject_code.append(code)
        out.reject_reason.append(reason)
        out.n_atoms.append(0)
        out.atom_offsets.append(out.atom_offsets[-1])
        out.bond_offsets.append(out.bond_offsets[-1])

    @staticmethod
    def _fast_z(smiles: str | None, n: int) -> list[int] | None:
        """Atomic numbers read off the SMILES text, or None when the fast path does not apply.

        RDKit numbers atoms in input order, and standardisation keeps them (uncharging changes charges and
        Hs only) unless it drops atoms: a salt's other fragments ('.' in the text) or explicit H atoms
        (then the token count differs from the atom count). Elements outside ``_FAST_Z`` (metals, H,
        dummy atoms) and dative bonds ('->', '<-') take the plain path.
        """
        if smiles is None or "." in smiles or ">" in smiles or "<" in smiles:
            return None
        try:
            z = list(map(_FAST_Z.__getitem__, _ATOM_TOKEN.findall(smiles)))
        except KeyError:
            return None
        return z if len(z) == n else None

    @staticmethod
    def _fast_atoms(mol: Chem.Mol, n: int, z: list[int], cols: dict[str, list[int]]) -> bool:
        """Append the atom columns of ``mol`` from bulk queries; False (nothing appended) if a guard fails."""
        # H counts from two bit queries; an atom with 4 or more Hs would be read modulo 4, but then the
        # sum differs from the molecule's total H count and the molecule takes the plain path
        hs = [0] * n
        for q, bit in _HS_BIT_QUERIES:
            for (i,) in mol.GetSubstructMatches(q, _MATCH_ALL):
                hs[i] += bit
        if sum(hs) != mol.GetNumAtoms(onlyExplicit=False) - n:
            return False
        hyb = [_SP3] * n
        for q, v in _HYB_QUERIES:
            for (i,) in mol.GetSubstructMatches(q, _MATCH_ALL):
                hyb[i] = v
        # SP3 for the rest and charge 0 hold except for the (few) atoms _ASK_ATOM finds: ask those
        charge = [0] * n
        for (i,) in mol.GetSubstructMatches(_ASK_ATOM, _MATCH_ALL):
            atom = mol.GetAtomWithIdx(i)
            charge[i] = atom.GetFormalCharge()
            hyb[i] = int(atom.GetHybridization())
        cols["atom_z"].extend(z)
        cols["atom_hs"].extend(hs)
        cols["atom_hybridization"].extend(hyb)
        cols["atom_charge"].extend(charge)
        return True

    def _plain_atoms(self, mol: Chem.Mol, cols: dict[str, list[int]]) -> None:
        atoms = list(map(mol.GetAtomWithIdx, range(mol.GetNumAtoms())))
        cols["atom_z"].extend(map(_A.GetAtomicNum, atoms))
        cols["atom_charge"].extend(map(_A.GetFormalCharge, atoms))
        cols["atom_hs"].extend(map(_A.GetTotalNumHs, atoms))
        cols["atom_hybridization"].extend(map(int, map(_A.GetHybridization, atoms)))
        cols["atom_aromatic"].extend(map(_A.GetIsAromatic, atoms))
        if not self._no_stereo:
            cols["atom_chirality"].extend(map(int, map(_A.GetChiralTag, atoms)))
