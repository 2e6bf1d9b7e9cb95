import pytest

from mfray.chem.standardize import Rejection, Standardizer, StandardizerConfig
from rdkit import Chem


def smi(m):
    return Chem.MolToSmiles(m)


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("CCO", "CCO"),
        ("C[C@H](N)C(=O)O", "CC(N)C(=O)O"),  # stereo stripped
        ("C/C=C/C", "CC=CC"),
        ("c1ccccc1[O-].[Na+]", "Oc1ccccc1"),  # salt: largest fragment, neutralised
        ("CC(=O)[O-]", "CC(=O)O"),  # neutralised
        ("[Cl-].C[NH3+]", "CN"),
        ("C", "C"),  # single atom
        ("[13CH4]", "[13CH4]"),  # isotopes are kept (not part of the MF-PCBA recipe)
        ("O=[Fe]", Chem.MolToSmiles(Chem.MolFromSmiles("O=[Fe]"))),  # metals kept unless allowed_elements says otherwise
    ],
)
def test_mfpcba_recipe(raw, expected):
    out = Standardizer()(raw)
    assert not isinstance(out, Rejection), out
    assert smi(out) == expected


@pytest.mark.parametrize(
    "raw, code",
    [
        ("", "empty_smiles"),
        ("   ", "empty_smiles"),
        (None, "empty_smiles"),
        ("C1CC", "unparsable_smiles"),
        ("notasmiles", "unparsable_smiles"),
        ("CC O", "whitespace_in_smiles"),  # RDKit alone reads "CC": ethane, silently
        ("CCO\tethanol", "whitespace_in_smiles"),
        ("C1CC1 |$;;$|", "whitespace_in_smiles"),
        ("C[N+](C)(C)C", "charged"),  # quaternary ammonium cannot be neutralised
    ],
)
def test_rejections_have_codes_and_reasons(raw, code):
    out = Standardizer()(raw)
    assert isinstance(out, Rejection)
    assert out.code == code and out.reason


def test_filters_and_minimal_preset():
    assert Standardizer(StandardizerConfig(max_heavy_atoms=2))("CCC").code == "too_large"
    r = Standardizer(StandardizerConfig(allowed_elements=("C", "O")))("CCN")
    assert isinstance(r, Rejection) and r.code == "element" and "N" in r.reason
    keep = Standardizer(StandardizerConfig.minimal())("C[N+](C)(C)C.[Cl-]")
    assert smi(keep) == "C[N+](C)(C)C.[Cl-]"
