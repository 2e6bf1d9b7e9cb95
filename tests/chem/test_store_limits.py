"""Issue 13, class 2: values never wrap and every stored SMILES parses back.

The graph store keeps uint8/int8 atom properties and uint16 atom indices: a molecule whose values do not
fit is quarantined with a reason (an atom with 300 neighbours was stored with degree 44). Standardisation
can produce a SMILES RDKit cannot read back (neutralising the cyclopentadienyl anion gives the
unkekulizable 'c1cccc1'): those are quarantined too, never stored.
"""

from __future__ import annotations

import pytest
from rdkit import Chem

from mfray.chem.graph import GraphExtractor
from mfray.chem.standardize import Standardizer, StandardizerConfig

#: charged aromatics, anions, zwitterions, salts and organometallics
TRICKY = [
    "c1cc[cH-]c1", "C1=CC=C[CH-]1", "c1ccc2[cH-]ccc2c1", "[Fe+2].c1cc[cH-]c1.c1cc[cH-]c1",
    "[cH-]1cccc1.[cH-]1cccc1.[Fe+2]", "C[n+]1ccccc1", "[O-][n+]1ccccc1", "c1cc[n-]c1", "c1ccc[nH+]c1",
    "c1cc[o+]cc1", "c1cc[s+]cc1", "[CH2-]C=C", "F[P-](F)(F)(F)(F)F", "[B-](F)(F)(F)F", "[O-]c1ccccc1",
    "CC(=O)[O-].[Na+]", "[Cu+2].[O-]C(=O)C", "C[N+](C)(C)C.[Cl-]", "O=[N+]([O-])c1ccccc1", "[NH4+]",
    "C[S+](C)C", "[Ru]", "Cl[Pt](Cl)([NH3])[NH3]", "C[Hg]C", "[Li]c1ccccc1", "C[Sn](C)(C)C",
    "O=C1[O-][Cu+2][O-]C1=O", "[Co+3]", "c1ccc2c(c1)[se]c1ccccc12", "CC[Si](C)(C)O[Si](C)(C)C",
    "[2H]C([2H])([2H])O", "C[C@H](N)C(=O)[O-]", "N[C@@H](CCC(=O)[O-])C(=O)O", "c1ccc2[nH]ccc2c1",
]


@pytest.mark.parametrize("preset", ["mfpcba", "minimal"])
def test_every_stored_smiles_parses_back(preset):
    cfg = StandardizerConfig.mfpcba() if preset == "mfpcba" else StandardizerConfig.minimal()
    out = GraphExtractor(Standardizer(cfg))(TRICKY)
    assert len(out.ok) == len(TRICKY)
    for smi, ok, can in zip(TRICKY, out.ok, out.smiles):
        if ok:
            assert Chem.MolFromSmiles(can) is not None, (smi, can)
    if preset == "mfpcba":  # the anion rings neutralise into radicals: refused with a reason
        codes = dict(zip(TRICKY, out.reject_code))
        assert codes["c1cc[cH-]c1"] == "unstable_smiles"
        reason = dict(zip(TRICKY, out.reject_reason))["c1cc[cH-]c1"]
        assert "'c1cccc1'" in reason and "does not parse back" in reason
    else:  # kept as given, and stored as a SMILES that parses
        assert dict(zip(TRICKY, out.smiles))["c1cc[cH-]c1"] == "c1cc[cH-]c1"


@pytest.mark.parametrize("smiles, what", [("[Fe]" + "(C)" * 300, "degree 300"), ("*" + "(C)" * 300, "degree 300")])
def test_values_that_would_wrap_are_quarantined(smiles, what):
    out = GraphExtractor(Standardizer(StandardizerConfig.minimal()))([smiles, "CCO"])
    assert out.ok == [False, True]
    assert out.reject_code[0] == "out_of_range"
    assert what in out.reject_reason[0] and "0..255" in out.reject_reason[0]
    assert out.n_atoms == [0, 3]


def test_large_but_fitting_molecules_are_stored_exactly():
    smi = "C(" * 120 + "C" + ")" * 120  # 121 atoms, 120 bonds + 242 Hs: asked atom by atom, and fits
    out = GraphExtractor()([smi])
    assert out.ok == [True]
    assert max(out.atom["atom_degree"]) == 4


def test_atom_maps_are_stripped_by_default_and_kept_on_request():
    plain = GraphExtractor()(["CO", "[CH3:1][OH:2]"])
    assert plain.smiles == ["CO", "CO"] and plain.key[0] == plain.key[1]
    kept = GraphExtractor(Standardizer(StandardizerConfig(strip_atom_maps=False)))(["[CH3:1][OH:2]"])
    assert kept.smiles == ["[CH3:1][OH:2]"]


def test_limits_are_part_of_the_store_key(monkeypatch):
    a = GraphExtractor().spec()
    monkeypatch.setenv("MFRAY_MAX_ATOMS", "100")
    b = GraphExtractor().spec()
    assert a["max_atoms"] == 4000 and b["max_atoms"] == 100
    assert GraphExtractor()(["C" * 101]).reject_code == ["too_large"]
    monkeypatch.setenv("MFRAY_MAX_ATOMS", "lots")
    with pytest.raises(Exception, match=r"\$MFRAY_MAX_ATOMS='lots': give a positive number"):
        GraphExtractor()
