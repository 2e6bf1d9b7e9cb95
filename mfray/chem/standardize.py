"""SMILES standardisation as a configurable pipeline (the MF-PCBA recipe by default).

The MF-PCBA recipe (METHOD.md section 8): keep the largest fragment, strip stereochemistry,
neutralise, and keep only molecules with total charge 0. Each step is skipped cheaply when the SMILES
text shows it cannot apply (no '.', no '@'/'/', no charged bracket atom), which matters at 10^6 rows.

Every rejection is a :class:`Rejection` with a stable ``code`` and a human reason; nothing raises.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from rdkit import Chem, RDLogger
from rdkit.Chem.MolStandardize import rdMolStandardize

from mfray.utils.errors import MfrayError

RDLogger.DisableLog("rdApp.*")

_CHARGED_BRACKET = re.compile(r"\[[^\]]*[+-][^\]]*\]")
#: non-tetrahedral chirality (@TH1, @SP2, ...): left to RDKit's RemoveStereochemistry (see _strip_stereo)
_SPECIAL_CHIRALITY = re.compile(r"@(?:TH|AL|SP|TB|OH)")
#: whitespace inside a SMILES (after trimming): RDKit reads the first token only
_WHITESPACE = re.compile(r"\s")
#: an explicit hydrogen atom ([H], [2H], [H+], ...; not [He]/[Hg]/...): MolFromSmiles removes these
_EXPLICIT_H = re.compile(r"\[\d*H(?![a-z])")
#: parse only; sanitisation is run separately (see Standardizer._parse)
_PARSE_ONLY = Chem.SmilesParserParams()
_PARSE_ONLY.sanitize = False
_PARSE_ONLY.removeHs = False

#: the most heavy atoms a molecule may have, whatever the spec says. RDKit's SMILES writer recurses once
#: per atom along a chain: with the usual 8 MiB stack an unbranched chain of 20,000 atoms crashes the
#: process (segmentation fault, measured: 18,000 writes, 20,000 crashes), and threads may have 2 MiB
#: stacks. 4,000 leaves room for that and is far above any drug-like molecule (a 30-residue peptide
#: has ~250 heavy atoms); larger molecules are quarantined as ``too_large``.
MAX_ATOMS = 4000
#: environment variable that overrides :data:`MAX_ATOMS` (at your own risk: it is part of the store key)
MAX_ATOMS_ENV = "MFRAY_MAX_ATOMS"
#: SMILES texts longer than this are not parsed at all (a 4,000-atom molecule needs far fewer characters)
MAX_SMILES_CHARS = 100_000


def _strip_stereo(smiles: str) -> str | None:
    """The SMILES with its stereo marks deleted, or None when that is not a plain textual edit.

    In SMILES '@'/'@@' occur only inside bracket atoms (right after the element) and '/' '\\' only as
    directional single bonds, so deleting them gives the same atoms, bonds and H counts in the same order,
    without stereo: what RemoveStereochemistry leaves after parsing the original. Non-tetrahedral
    classes (@TH1, @SP2, ...) would leave their letters behind, so those return None.
    """
    if "@" in smiles:
        if _SPECIAL_CHIRALITY.search(smiles):
            return None
        smiles = smiles.replace("@", "")
    if "/" in smiles or "\\" in smiles:
        smiles = smiles.replace("/", "").replace("\\", "")
    return smiles


def max_atoms_limit() -> int:
    """:data:`MAX_ATOMS`, or ``$MFRAY_MAX_ATOMS`` when set (a positive integer)."""
    raw = os.environ.get(MAX_ATOMS_ENV, "").strip()
    if not raw:
        return MAX_ATOMS
    if not raw.isascii() or not raw.isdigit() or int(raw) < 1:
        raise MfrayError(f"${MAX_ATOMS_ENV}={raw!r}: give a positive number of atoms")
    return int(raw)


@dataclass(frozen=True)
class Rejection:
    """Why a molecule was not stored. ``code`` is stable (for counting); ``reason`` is for people."""

    code: str
    reason: str


@dataclass(frozen=True)
class StandardizerConfig:
    largest_fragment: bool = True
    remove_stereo: bool = True
    neutralize: bool = True
    require_neutral: bool = True
    max_heavy_atoms: int | None = None
    allowed_elements: tuple[str, ...] | None = None
    strip_atom_maps: bool = True

    @classmethod
    def mfpcba(cls) -> StandardizerConfig:
        """The MF-PCBA recipe (the default)."""
        return cls()

    @classmethod
    def minimal(cls) -> StandardizerConfig:
        """Parse and sanitise only."""
        return cls(largest_fragment=False, remove_stereo=False, neutralize=False, require_neutral=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StandardizerConfig:
        d = dict(d)
        if d.get("allowed_elements") is not None:
            d["allowed_elements"] = tuple(d["allowed_elements"])
        return cls(**d)


class Standardizer:
    """Parse and standardise SMILES: ``standardizer(smiles) -> Mol | Rejection``.

    Args:
        config: which steps run (see :class:`StandardizerConfig`).
    """

    def __init__(self, config: StandardizerConfig | None = None) -> None:
        self.config = config or StandardizerConfig()
        self._chooser = rdMolStandardize.LargestFragmentChooser(preferOrganic=True)
        self._uncharger = rdMolStandardize.Uncharger(canonicalOrder=True)
        self.max_atoms = max_atoms_limit()
        self._allowed = (
            {Chem.GetPeriodicTable().GetAtomicNumber(e) for e in self.config.allowed_elements}
            if self.config.allowed_elements
            else None
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"

    def _parse(self, smiles: str) -> tuple[Chem.Mol | None, bool]:
        """``(Chem.MolFromSmiles(smiles), stereo_stripped)``, made cheaper when stereo is to be stripped.

        With stereo stripped, MolFromSmiles does three things we can do more cheaply with the same result:
        it parses, it runs removeHs (which, with no H atom to remove, is exactly sanitizeMol) and then it
        perceives stereochemistry (CIP ranks, ~15 us/molecule), which RemoveStereochemistry would throw
        away. So: delete the stereo marks from the text, parse without sanitising, sanitise, and record
        that stereo perception is done (there is none to perceive), which also spares MolToSmiles from
        perceiving it again on its copy. SMILES with explicit H atoms, CXSMILES extensions, names or
        non-tetrahedral stereo take the plain route. tests/chem/test_graph_fast.py checks both agree.
        """
        if not self.config.remove_stereo or " " in smiles or "\t" in smiles or "|" in smiles:
            return Chem.MolFromSmiles(smiles), False
        text = _strip_stereo(smiles)
        if text is None or _EXPLICIT_H.search(text):
            return Chem.MolFromSmiles(smiles), False
        mol = Chem.MolFromSmiles(text, _PARSE_ONLY)
        if mol is None:
            return None, True
        try:
            Chem.SanitizeMol(mol)
        except Exception:  # noqa: BLE001 - MolFromSmiles returns None for any sanitisation failure
            return None, True
        mol.SetIntProp("_StereochemDone", 1, True)
        return mol, True

    def __call__(self, smiles: str | None) -> Chem.Mol | Rejection:
        cfg = self.config
        if smiles is None or not smiles.strip():
            return Rejection("empty_smiles", "empty SMILES")
        smiles = smiles.strip()
        if len(smiles) > MAX_SMILES_CHARS:
            return Rejection("too_large", f"SMILES of {len(smiles):,} characters (more than {MAX_SMILES_CHARS:,} "
                             "are not parsed)")
        if _WHITESPACE.search(smiles):  # RDKit would read the first token only: "CC O" -> ethane
            return Rejection("whitespace_in_smiles", f"SMILES {smiles[:120]!r} has whitespace inside (RDKit would "
                             f"read only {smiles.split()[0][:60]!r}; a name or CXSMILES extension after a space?)")
        mol, stereo_stripped = self._parse(smiles)
        if mol is None:
            return Rejection("unparsable_smiles", f"RDKit cannot parse SMILES {smiles[:120]!r}")
        if mol.GetNumAtoms() == 0:
            return Rejection("no_atoms", f"SMILES {smiles[:120]!r} has no heavy atoms")
        if mol.GetNumAtoms() > self.max_atoms:  # before any step that walks the molecule recursively
            return Rejection("too_large", f"{mol.GetNumAtoms():,} atoms > {self.max_atoms:,}, the most mfray "
                             "featurises (RDKit's SMILES writer can crash the process on larger molecules)")
        if cfg.strip_atom_maps and ":" in smiles:  # [CH3:1][OH:2] is methanol, not a different molecule
            for atom in mol.GetAtoms():
                atom.SetAtomMapNum(0)
        if cfg.largest_fragment and "." in smiles:
            mol = self._chooser.choose(mol)
        if cfg.remove_stereo and not stereo_stripped and ("@" in smiles or "/" in smiles or "\\" in smiles):
            Chem.RemoveStereochemistry(mol)
        charged = "+" in smiles or "-" in smiles and _CHARGED_BRACKET.search(smiles) is not None
        if cfg.neutralize and charged:
            mol = self._uncharger.uncharge(mol)
        if cfg.require_neutral and charged:
            q = Chem.GetFormalCharge(mol)
            if q != 0:
                return Rejection("charged", f"net charge {q:+d} after neutralisation (only neutral molecules are kept)")
        n = mol.GetNumAtoms()
        if cfg.max_heavy_atoms is not None and n > cfg.max_heavy_atoms:
            return Rejection("too_large", f"{n} heavy atoms > max_heavy_atoms = {cfg.max_heavy_atoms}")
        if self._allowed is not None:
            bad = sorted({a.GetSymbol() for a in mol.GetAtoms() if a.GetAtomicNum() not in self._allowed})
            if bad:
                return Rejection("element", f"elements {bad} not in allowed_elements")
        return mol
