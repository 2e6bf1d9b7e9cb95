"""Featuriser presets: map stored graph properties to categorical codes with declared widths.

A :class:`Vocab` maps one raw property (e.g. ``atom_z``) to a code in ``0..len(vocab)-1``. Values
outside its choices go to an explicit *unknown* slot (the default), or, in the ``paper`` preset, to the
last real slot, reproducing the reference implementation's quirk for parity (Br == Se at M=35,
charge +3 == 0). Binary properties (aromatic, conjugated, in-ring) have width 1.

``len(featurizer)`` is the dense width a model's first layer sees; codes are expanded to one-hot on
the device (:meth:`AtomFeaturizer.dense`), so batches move as small integers.

Presets (named classmethods, also in :data:`ATOM_FEATURIZERS` / :data:`BOND_FEATURIZERS`):
- ``default``: atomic numbers 1..M (M=53 unless given) + unknown, degree 0..5, charge -2..+2,
  chirality 0..3, H count 0..4, hybridisation SP..SP3D2, each with an unknown slot; aromatic;
  mass*0.01. Width M + 1 + 7 + 6 + 5 + 6 + 6 + 1 + 1 = M + 33.
- ``paper``: METHOD.md section 2 exactly: one-hot 0..M-1 (no unknown), degree 0..5, charge
  [-1,-2,+1,+2,0], chirality 0..3, H 0..4, hybridisation SP..SP3D2, aromatic, mass*0.01: width M + 27.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from rdkit import Chem

from mfray.utils.registry import Registry

Unknown = Literal["slot", "last"]

_HYB = (2, 3, 4, 6, 7)  # RDKit HybridizationType: SP, SP2, SP3, SP3D, SP3D2
_BOND_TYPES = (1, 2, 3, 12)  # SINGLE, DOUBLE, TRIPLE, AROMATIC


@dataclass(frozen=True)
class Vocab:
    """One categorical feature.

    Args:
        prop: the stored property column it reads (e.g. ``"atom_degree"``).
        choices: raw values in slot order; ``None`` with ``kind="binary"``.
        unknown: ``"slot"`` adds an extra slot for unseen values; ``"last"`` maps them to the last
            choice (reference-implementation parity only).
        kind: ``"onehot"`` or ``"binary"`` (width 1, the value itself).
    """

    prop: str
    choices: tuple[int, ...] = ()
    unknown: Unknown = "slot"
    kind: Literal["onehot", "binary"] = "onehot"

    def __len__(self) -> int:
        if self.kind == "binary":
            return 1
        return len(self.choices) + (1 if self.unknown == "slot" else 0)

    def table(self, offset: int = 128, size: int = 384) -> np.ndarray:
        """Lookup table ``raw + offset -> code`` covering raw values -offset..size-offset-1."""
        if self.kind == "binary":
            t = np.zeros(size, dtype=np.int16)
            t[offset + 1 :] = 1
            return t
        fallback = len(self.choices) if self.unknown == "slot" else len(self.choices) - 1
        t = np.full(size, fallback, dtype=np.int16)
        for i, c in enumerate(self.choices):
            t[c + offset] = i
        return t


class _Featurizer:
    """Shared machinery of atom and bond featurisers."""

    def __init__(self, vocabs: Sequence[Vocab], name: str, mass: bool = False) -> None:
        self.vocabs = tuple(vocabs)
        self.name = name
        self.mass = mass
        self._tables = [v.table() for v in self.vocabs]

    def __len__(self) -> int:
        return sum(len(v) for v in self.vocabs) + (1 if self.mass else 0)

    @property
    def n_codes(self) -> int:
        return len(self.vocabs)

    @property
    def widths(self) -> list[int]:
        return [len(v) for v in self.vocabs]

    @property
    def props(self) -> list[str]:
        return [v.prop for v in self.vocabs]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(preset={self.name!r}, width={len(self)}, codes={self.widths})"

    def spec(self) -> dict[str, object]:
        return {"preset": self.name, "width": len(self), "widths": self.widths, "mass": self.mass}

    def encode(self, columns: dict[str, np.ndarray]) -> np.ndarray:
        """Raw property arrays (each ``[N]``) -> codes ``[N, n_codes]`` (int64)."""
        n = len(next(iter(columns.values()))) if columns else 0
        out = np.empty((n, len(self.vocabs)), dtype=np.int64)
        for j, (v, t) in enumerate(zip(self.vocabs, self._tables)):
            raw = np.asarray(columns[v.prop], dtype=np.int64)
            out[:, j] = t[np.clip(raw + 128, 0, len(t) - 1)]
        return out

    def dense(self, codes, z=None):
        """Codes ``[N, n_codes]`` (+ atomic numbers ``[N]`` if mass is on) -> float ``[N, len(self)]``.

        Runs on whatever device ``codes`` lives on (torch tensors).
        """
        import torch

        n = codes.shape[0]
        out = torch.zeros(n, len(self), device=codes.device, dtype=torch.float32)
        col = 0
        for j, v in enumerate(self.vocabs):
            if v.kind == "binary":
                out[:, col] = codes[:, j].float()
            else:
                out[torch.arange(n, device=codes.device), col + codes[:, j]] = 1.0
            col += len(v)
        if self.mass:
            if z is None:
                raise ValueError(f"{self!r} needs atomic numbers z for its mass feature")
            out[:, col] = _mass_table(codes.device)[z.long()] * 0.01
        return out


_MASS_CACHE: dict[str, object] = {}


def _mass_table(device):
    import torch

    key = str(device)
    if key not in _MASS_CACHE:
        pt = Chem.GetPeriodicTable()
        masses = [0.0] + [pt.GetAtomicWeight(z) for z in range(1, 119)]
        _MASS_CACHE[key] = torch.tensor(masses, dtype=torch.float32, device=device)
    return _MASS_CACHE[key]


class AtomFeaturizer(_Featurizer):
    """Atom featuriser: ``len(f)`` is the node input width."""

    @classmethod
    def default(cls, max_atomic_number: int | None = None) -> AtomFeaturizer:
        m = max_atomic_number or 53
        return cls(
            [
                Vocab("atom_z", tuple(range(1, m + 1))),
                Vocab("atom_degree", tuple(range(6))),
                Vocab("atom_charge", (-2, -1, 0, 1, 2)),
                Vocab("atom_chirality", (0, 1, 2, 3)),
                Vocab("atom_hs", tuple(range(5))),
                Vocab("atom_hybridization", _HYB),
                Vocab("atom_aromatic", kind="binary"),
            ],
            name="default",
            mass=True,
        )

    @classmethod
    def paper(cls, max_atomic_number: int | None = None) -> AtomFeaturizer:
        m = max_atomic_number or 35
        return cls(
            [
                Vocab("atom_z", tuple(range(m)), unknown="last"),
                Vocab("atom_degree", tuple(range(6)), unknown="last"),
                Vocab("atom_charge", (-1, -2, 1, 2, 0), unknown="last"),
                Vocab("atom_chirality", (0, 1, 2, 3), unknown="last"),
                Vocab("atom_hs", tuple(range(5)), unknown="last"),
                Vocab("atom_hybridization", _HYB, unknown="last"),
                Vocab("atom_aromatic", kind="binary"),
            ],
            name="paper",
            mass=True,
        )


class BondFeaturizer(_Featurizer):
    """Bond featuriser: ``len(f)`` is the edge input width."""

    @classmethod
    def default(cls, max_atomic_number: int | None = None) -> BondFeaturizer:
        return cls(
            [
                Vocab("bond_type", _BOND_TYPES),
                Vocab("bond_conjugated", kind="binary"),
                Vocab("bond_in_ring", kind="binary"),
                Vocab("bond_stereo", tuple(range(6))),
            ],
            name="default",
        )

    @classmethod
    def paper(cls, max_atomic_number: int | None = None) -> BondFeaturizer:
        # 13 = none-flag (always 0 for real bonds) + type 4 + conjugated + in-ring + stereo 6
        return cls(
            [
                Vocab("bond_none", kind="binary"),
                Vocab("bond_type", _BOND_TYPES, unknown="last"),
                Vocab("bond_conjugated", kind="binary"),
                Vocab("bond_in_ring", kind="binary"),
                Vocab("bond_stereo", tuple(range(6)), unknown="last"),
            ],
            name="paper",
        )

    def encode(self, columns: dict[str, np.ndarray]) -> np.ndarray:
        if "bond_none" in self.props and "bond_none" not in columns:
            n = len(next(iter(columns.values())))
            columns = {**columns, "bond_none": np.zeros(n, dtype=np.int64)}
        return super().encode(columns)


ATOM_FEATURIZERS: Registry[AtomFeaturizer] = Registry("atom featuriser")
BOND_FEATURIZERS: Registry[BondFeaturizer] = Registry("bond featuriser")
ATOM_FEATURIZERS.register("default")(AtomFeaturizer.default)
ATOM_FEATURIZERS.register("paper")(AtomFeaturizer.paper)
BOND_FEATURIZERS.register("default")(BondFeaturizer.default)
BOND_FEATURIZERS.register("paper")(BondFeaturizer.paper)


def build_featurizers(preset: str = "default", max_atomic_number: int | None = None) -> tuple[AtomFeaturizer, BondFeaturizer]:
    """The (atom, bond) featurisers of a named preset."""
    return (
        ATOM_FEATURIZERS.build(preset, max_atomic_number=max_atomic_number),
        BOND_FEATURIZERS.build(preset, max_atomic_number=max_atomic_number),
    )
