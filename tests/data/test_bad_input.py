"""Bad input never crashes and never loses rows: each case has a clear message and a reason."""

from __future__ import annotations

import polars as pl
import pytest

from mfray.cli.main import main
from mfray.data.specs import load_spec
from mfray.run.featurize import featurize_dataset
from mfray.utils.errors import DataError, SpecError

BAD_CSV = """id,smiles,lf,hf
1,CCO,1.0,2.0
2,,1.0,2.0
3,C1CC,1.0,2.0
4,C[N+](C)(C)C,1.0,2.0
5,CCN,abc,2.0
6,CCC,inf,2.0
7,CCCC,NaN,
8,c1ccccc1,3.0,4.0
8,c1ccccc1,3.5,4.0
9,CC(=O)O,1.0,
"""


def spec_text(path="bad.csv", key="id", duplicates="quarantine", extra=""):
    return f"""
name = "bad"
molecule_key = "{key}"
duplicates = "{duplicates}"
{extra}
[source]
kind = "local"
[source.files.main]
path = "{path}"
smiles_column = "smiles"
id_column = "id"
[[source.labels]]
fidelity = "lf"
target = "y"
file = "main"
column = "lf"
[[source.labels]]
fidelity = "hf"
target = "y"
file = "main"
column = "hf"
[split]
seeds = [1]
"""


@pytest.fixture
def bad_dir(tmp_path):
    (tmp_path / "bad.csv").write_text(BAD_CSV)
    (tmp_path / "bad.toml").write_text(spec_text())
    return tmp_path


def featurize(path, tmp_path):
    return featurize_dataset(load_spec(path), tmp_path / "stores", executor="local", progress=False, log=lambda m: None)


def test_every_row_is_stored_or_quarantined_with_a_reason(bad_dir):
    store = featurize(bad_dir / "bad.toml", bad_dir).store
    c = store.manifest["counts"]
    assert c["rows_read"] == 10
    assert c["rows_stored"] + c["rows_quarantined"] == c["rows_read"]
    q = store.table("quarantine").sort("file_row")
    by_row = dict(zip(q["file_row"].to_list(), q["code"].to_list()))
    assert by_row == {
        2: "empty_smiles", 3: "unparsable_smiles", 4: "charged", 5: "bad_value", 6: "bad_value",
        7: "no_label", 8: "conflicting_labels", 9: "conflicting_labels",
    }
    reasons = dict(zip(q["file_row"].to_list(), q["reason"].to_list()))
    assert "column 'lf': non-numeric value 'abc'" in reasons[5]
    assert "column 'lf': infinite value" in reasons[6]
    assert "conflicting values for lf/y" in reasons[8] and "8, 9" in reasons[8]
    assert all(f.endswith("bad.csv") for f in q["file"].to_list())
    assert q["smiles"].to_list()[2] == "C[N+](C)(C)C"  # the input is kept as given
    assert sorted(store.table("molecules")["source_id"].to_list()) == ["1", "9"]
    assert c["quarantine_by_code"]["conflicting_labels"] == 2


def test_duplicates_policy_combines_instead(bad_dir):
    (bad_dir / "mean.toml").write_text(spec_text(duplicates="mean").replace('name = "bad"', 'name = "bad_mean"'))
    store = featurize(bad_dir / "mean.toml", bad_dir).store
    labels = store.table("task_labels")
    benzene = store.table("molecules").filter(pl.col("source_id") == "8")["mol_id"][0]
    lf = labels.filter((pl.col("mol_id") == benzene) & (pl.col("fidelity") == "lf"))
    assert lf["value"][0] == pytest.approx(3.25) and lf["n"][0] == 2
    # both measurements are kept with provenance
    assert store.table("labels").filter(pl.col("mol_id") == benzene).height == 4


def test_id_reused_for_another_structure_is_quarantined(tmp_path):
    (tmp_path / "ids.csv").write_text("id,smiles,lf,hf\nA,CCO,1,2\nA,CCN,1,2\nB,CCO,1,2\n")
    (tmp_path / "ids.toml").write_text(spec_text("ids.csv").replace('name = "bad"', 'name = "ids"'))
    store = featurize(tmp_path / "ids.toml", tmp_path).store
    q = store.table("quarantine")
    assert q["code"].to_list() == ["id_conflict"]
    assert "id A is also used for a different structure CCO (input row 1)" in q["reason"][0]
    # structure keys instead: rows 1 and 3 are the same molecule
    (tmp_path / "st.toml").write_text(spec_text("ids.csv", key="structure", duplicates="mean").replace('name = "bad"', 'name = "st"'))
    assert featurize(tmp_path / "st.toml", tmp_path).store.manifest["counts"]["molecules"] == 2


def test_missing_columns_name_file_and_columns(tmp_path):
    (tmp_path / "bad.csv").write_text("id,SMILES,lf\n1,CCO,1\n")
    (tmp_path / "bad.toml").write_text(spec_text())
    with pytest.raises(DataError, match=r"bad\.csv: missing column\(s\) \['smiles', 'hf'\].*has columns \['id', 'SMILES', 'lf'\]"):
        featurize(tmp_path / "bad.toml", tmp_path)


def test_missing_file(tmp_path):
    (tmp_path / "bad.toml").write_text(spec_text("nowhere.csv"))
    with pytest.raises(DataError, match=r"nowhere\.csv: data file 'main' of dataset 'bad' does not exist"):
        featurize(tmp_path / "bad.toml", tmp_path)


def test_non_utf8_file_names_the_line(tmp_path):
    (tmp_path / "bad.csv").write_bytes("id,smiles,lf,hf\n1,CCO,1,2\n2,CC\xe9O,1,2\n".encode("latin-1"))
    (tmp_path / "bad.toml").write_text(spec_text())
    with pytest.raises(DataError, match=r"bad\.csv: not valid utf-8 text at line 3, byte 5 \(0xe9\)"):
        featurize(tmp_path / "bad.toml", tmp_path)


def test_latin1_file_reads_when_the_spec_says_so(tmp_path):
    (tmp_path / "l1.csv").write_bytes("id,smiles,lf,hf\n1,CCO,1,2\n2,CCN,1,2\n".encode("latin-1"))
    text = spec_text("l1.csv").replace('id_column = "id"', 'id_column = "id"\nencoding = "latin-1"')
    (tmp_path / "l1.toml").write_text(text.replace('name = "bad"', 'name = "l1"'))
    assert featurize(tmp_path / "l1.toml", tmp_path).store.manifest["counts"]["molecules"] == 2


@pytest.mark.parametrize(
    "body, message",
    [
        ('name = "x"\ncolour = 1\n[source]\nkind = "local"\nfiles = {}\nlabels = []', "unknown key 'colour'"),
        ('name = "x"\n[source]\nkind = "excel"', "source: got 'excel'; allowed kinds: 'local', 'mfpcba', 'qmugs'"),
        ('name = "x"\ntask_type = "ranking"\n' + spec_text().split('\n[source]', 1)[1].join(['[source]', '']),
         "task_type: got 'ranking'; allowed values: 'regression' or 'classification'"),
        (spec_text().replace("seeds = [1]", 'seeds = "one"'), "split.seeds: Input should be a valid list"),
        (spec_text().replace('column = "hf"', 'column = "hf"\nfile_typo = 1'), "unknown key 'source.labels[1].file_typo'"),
        (spec_text().replace('file = "main"\ncolumn = "hf"', 'file = "other"\ncolumn = "hf"'), "file = 'other' is not one of the files ['main']"),
        ("name = [", "not valid TOML"),
    ],
)
def test_spec_errors_name_the_file_and_key(tmp_path, body, message):
    p = tmp_path / "s.toml"
    p.write_text(body)
    with pytest.raises(SpecError) as e:
        load_spec(p)
    assert str(p) in str(e.value)
    assert message in str(e.value)


def test_spec_file_problems(tmp_path):
    with pytest.raises(SpecError, match="does not exist"):
        load_spec(tmp_path / "nope.toml")
    (tmp_path / "latin.toml").write_bytes('name = "caf\xe9"'.encode("latin-1"))
    with pytest.raises(SpecError, match="not UTF-8"):
        load_spec(tmp_path / "latin.toml")


def test_unset_environment_variable_in_a_path(tmp_path, monkeypatch):
    monkeypatch.delenv("MFRAY_TEST_UNSET", raising=False)
    (tmp_path / "env.toml").write_text(spec_text("$MFRAY_TEST_UNSET/x.csv"))
    with pytest.raises(SpecError, match="environment variable that is not set"):
        featurize(tmp_path / "env.toml", tmp_path)


def test_cli_reports_errors_without_traceback(tmp_path, capsys):
    (tmp_path / "bad.toml").write_text(spec_text("nowhere.csv"))
    code = main(["featurize", str(tmp_path / "bad.toml"), "--out", str(tmp_path / "o"), "--local"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("mfray featurize: error: ") and "nowhere.csv" in err and "Traceback" not in err
    assert main(["data", "show", "no_such_dataset_anywhere"]) == 2
    assert "no dataset spec named 'no_such_dataset_anywhere'" in capsys.readouterr().err
