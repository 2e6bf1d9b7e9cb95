"""Issue 13, class 3: parsing never changes data silently.

Each case used to store something other than what the file said: a SMILES with a space inside became
its first token, a duplicated column name read the first copy, '1_000' and non-ASCII digits became
numbers, an atom-mapped SMILES became another molecule, ids '007' and '7' collided, and an id of spaces
became the id "".
"""

from __future__ import annotations

import pyarrow as pa
import pytest

from mfray.data.sources.tabular import parse_embedding, parse_numeric
from mfray.utils.errors import DataError

from test_bad_input import featurize, spec_text


def _write(tmp_path, name, body, key="id"):
    (tmp_path / f"{name}.csv").write_text(body)
    (tmp_path / f"{name}.toml").write_text(spec_text(f"{name}.csv", key=key).replace('name = "bad"', f'name = "{name}"'))
    return featurize(tmp_path / f"{name}.toml", tmp_path).store


def test_smiles_with_whitespace_inside_is_rejected_not_truncated(tmp_path):
    store = _write(tmp_path, "ws", "id,smiles,lf,hf\n1,CC O,1,2\n2,CCO,1,2\n3, CCN ,1,2\n")
    q = store.table("quarantine")
    assert q["code"].to_list() == ["whitespace_in_smiles"] and q["file_row"].to_list() == [1]
    assert "'CC O' has whitespace inside" in q["reason"][0]
    assert sorted(store.table("molecules")["smiles"].to_list()) == ["CCN", "CCO"]  # outer spaces are trimmed


def test_a_duplicated_column_name_is_an_error(tmp_path):
    with pytest.raises(DataError, match=r"dup\.csv: the header names a column the spec uses more than once "
                                        r"\('lf' is columns 3, 5\)"):
        _write(tmp_path, "dup", "id,smiles,lf,hf,lf\n1,CCO,1,2,5\n")


@pytest.mark.parametrize("text", ["1_000", "١٢", "１２", "0x10", "1,000", "1d3", "12abc"])
def test_numbers_follow_a_strict_grammar(text):
    values, reasons = parse_numeric(pa.array([text, "1.5"]), "lf")
    assert values.to_pylist() == [None, 1.5]
    assert reasons[0] == f"column 'lf': non-numeric value {text!r}"


@pytest.mark.parametrize("text, value", [(" 1.5 ", 1.5), ("+.5", 0.5), ("5.", 5.0), ("-1e3", -1000.0), ("2E-2", 0.02)])
def test_ordinary_numbers_still_parse(text, value):
    values, reasons = parse_numeric(pa.array([text, "x"]), "lf")  # 'x' forces the per-value path
    assert values.to_pylist()[0] == pytest.approx(value) and reasons[0] is None


def test_embedding_text_follows_the_same_grammar():
    vals, why = parse_embedding(pa.array(["[1, 2.5]", "[1_0, 2]"]), "emb")
    assert vals.to_pylist()[0] == [1.0, 2.5] and vals.to_pylist()[1] is None
    assert why == [None, "column 'emb': not a list of finite numbers"]


def test_atom_mapped_smiles_is_the_same_molecule(tmp_path):
    store = _write(tmp_path, "maps", "id,smiles,lf,hf\n1,[CH3:1][OH:2],1,2\n2,CO,1,2\n", key="structure")
    mols = store.table("molecules")
    assert mols.height == 1 and mols["smiles"].to_list() == ["CO"] and mols["n_rows"].to_list() == [2]


def test_ids_are_compared_as_text(tmp_path):
    store = _write(tmp_path, "ids", "id,smiles,lf,hf\n007,CCO,1,2\n7,CCN,1,2\n+1,CCC,1,2\n1,CCCC,1,2\n-0,CCCCC,1,2\n"
                                    "0,CCCCCC,1,2\n")
    mols = store.table("molecules")
    assert sorted(mols["source_id"].to_list()) == ["+1", "-0", "0", "007", "1", "7"]
    assert mols["mol_id"].n_unique() == 6
    assert store.table("quarantine").height == 0


def test_integer_ids_written_plainly_keep_their_value_as_mol_id(tmp_path):
    store = _write(tmp_path, "intids", "id,smiles,lf,hf\n7,CCO,1,2\n-3,CCN,1,2\n")
    assert sorted(store.table("molecules")["mol_id"].to_list()) == [-3, 7]


def test_an_id_of_only_whitespace_is_missing(tmp_path):
    store = _write(tmp_path, "blank", "id,smiles,lf,hf\n1,CCO,1,2\n   ,CCN,1,2\n")
    q = store.table("quarantine")
    assert q["code"].to_list() == ["missing_id"] and q["file_row"].to_list() == [2]
    assert q["source_id"].to_list() == [None]
