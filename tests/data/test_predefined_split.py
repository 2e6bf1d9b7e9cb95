"""A predefined split: the folds that come with the data (a column, or one file of ids per fold)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from mfray.data.specs import load_spec
from mfray.run.featurize import featurize_dataset
from mfray.utils.errors import DataError, SpecError

REPO = Path(__file__).resolve().parents[2]


def _store(spec, tmp_path):
    return featurize_dataset(spec, tmp_path / "stores", executor="local", progress=False, log=lambda m: None).store


def _folds(store, seed):
    s = store.table("splits").filter(pl.col("seed") == seed)
    return {f: set(s.filter(pl.col("fold") == f)["mol_id"].to_list()) for f in ("train", "valid", "test")}


def test_folds_from_a_column_are_the_papers(tmp_path):
    spec = load_spec(REPO / "data_specs" / "aid1445_paper.toml")
    store = _store(spec, tmp_path)
    data = pl.read_parquet(REPO / "data" / "aid1445" / "aid1445.parquet", columns=["CID", "paper_split"])
    want = {"train": "train", "valid": "validate", "test": "test"}
    mols = store.table("molecules").select("mol_id", "source_id")
    by_sid = dict(zip(mols["source_id"].to_list(), mols["mol_id"].to_list()))
    for seed in spec.split.seeds:
        got = _folds(store, seed)
        assert {f: len(v) for f, v in got.items()} == {"train": 524, "valid": 65, "test": 66}
        for fold, text in want.items():
            cids = data.filter(pl.col("paper_split") == text)["CID"].cast(pl.Int64).cast(pl.String).to_list()
            assert got[fold] == {by_sid[c] for c in cids}
    assert store.manifest["counts"]["predefined_split"]["molecules_by_fold"] == {"train": 524, "valid": 65, "test": 66}


def test_folds_from_files_of_ids_equal_the_column(tmp_path, shared_data):
    column = _store(load_spec(REPO / "data_specs" / "aid1445_paper.toml"), tmp_path / "a")
    text = (REPO / "data_specs" / "aid1445_paper.toml").read_text()
    d = shared_data / "aid1445"
    text = text.replace('column = "paper_split"', f'files = {{ train = "{d}/train.csv", valid = "{d}/validate.csv", '
                        f'test = "{d}/test.csv" }}\nid_column = "CID"')
    text = text.replace('path = "../data/', f'path = "{REPO}/data/')
    (tmp_path / "f.toml").write_text(text)
    files = _store(load_spec(tmp_path / "f.toml"), tmp_path / "b")
    assert _folds(files, 0) == _folds(column, 0)


def test_bad_and_conflicting_folds(tmp_path):
    (tmp_path / "d.csv").write_text("id,smiles,lf,hf,fold\n1,CCO,1,2,train\n2,CCN,1,2,VALIDATE\n3,CCC,1,2,test\n"
                                    "4,CCCC,1,2,holdout\n5,CCCCC,1,2,\n6,CCO,1,2,test\n7,CCCO,1,2, Train \n")
    spec_text = """name = "p"
molecule_key = "structure"
duplicates = "mean"
[source]
kind = "local"
[source.files.m]
path = "d.csv"
smiles_column = "smiles"
id_column = "id"
[[source.labels]]
fidelity = "lf"
target = "y"
file = "m"
column = "lf"
[[source.labels]]
fidelity = "hf"
target = "y"
file = "m"
column = "hf"
[split]
kind = "predefined"
column = "fold"
seeds = [7]
"""
    (tmp_path / "p.toml").write_text(spec_text)
    store = _store(load_spec(tmp_path / "p.toml"), tmp_path)
    q = store.table("quarantine")
    assert q["file_row"].to_list() == [4] and "column 'fold': unknown fold 'holdout'" in q["reason"][0]
    info = store.manifest["counts"]["predefined_split"]
    # CCO is in train (row 1) and in test (row 6): out of the split; CCCCC has no fold
    assert info == {"molecules_by_fold": {"train": 1, "valid": 1, "test": 1}, "without_fold": 1, "in_two_folds": 1}
    (tmp_path / "q.toml").write_text(spec_text.replace('column = "fold"', 'column = "nope"'))
    with pytest.raises(DataError, match="split.column 'nope' .* is in none of the files"):
        _store(load_spec(tmp_path / "q.toml"), tmp_path / "q")
    (tmp_path / "r.toml").write_text(spec_text.replace('column = "fold"\n', ""))
    with pytest.raises(SpecError, match="needs split.column"):
        load_spec(tmp_path / "r.toml")
    (tmp_path / "s.toml").write_text(spec_text.replace('kind = "predefined"', 'kind = "random"'))
    with pytest.raises(SpecError, match='column: only for kind = "predefined"'):
        load_spec(tmp_path / "s.toml")
