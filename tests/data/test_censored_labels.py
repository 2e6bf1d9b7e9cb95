"""Censored labels in dataset specs: qualifier columns, directions under transforms, bad qualifiers,
bounds under the duplicates policies, and the policies applied when a task is loaded."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from mfray.cli.main import main
from mfray.data.specs import load_spec
from mfray.data.tasks import load_task
from mfray.run.featurize import featurize_dataset
from mfray.utils.errors import DataError, SpecError

# IC50 in uM with PubChem-style qualifiers: '>' 50 = weaker than the top concentration
CSV = """id,smiles,ic50,q,lf
1,CCO,0.1,=,10
2,CCN,50, > ,1
3,CCC,100,>=,2
4,CCCC,0.01,<,90
5,CCCCC,3,,40
6,CCCCCC,2,~,30
7,CCCCO,5,<=,50
8,CCCCN,7,=,20
9,CCCCCl,8,=,25
10,c1ccccc1,9,=,35
"""


def spec_text(transform="pxc50_from_um", policy="censored", extra_label="", duplicates="quarantine",
              qualifier='qualifier_column = "q"', file="d.csv", seeds="[1, 2]"):
    return f"""
name = "cens"
molecule_key = "id"
duplicates = "{duplicates}"
[source]
kind = "local"
[source.files.main]
path = "{file}"
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
column = "ic50"
transform = "{transform}"
{qualifier}
{f'censored = "{policy}"' if policy else ""}
{extra_label}
[split]
fractions = [0.6, 0.2, 0.2]
seeds = {seeds}
"""


def build(tmp_path, text, csv=CSV, name="s.toml"):
    (tmp_path / "d.csv").write_text(csv)
    (tmp_path / name).write_text(text)
    spec = load_spec(tmp_path / name)
    res = featurize_dataset(spec, tmp_path / "stores", executor="local", progress=False, log=lambda m: None)
    return spec, res.store


def hf_labels(store) -> dict[int, tuple[float, int]]:
    tl = store.table("task_labels").filter(pl.col("fidelity") == "hf")
    return {m: (v, c) for m, v, c in tl.select("mol_id", "value", "censor").iter_rows()}


# the censor of ids 1..7 for a '>' = +1 (value above the bound) qualifier on the raw column
RAW_DIRECTION = {1: 0, 2: 1, 3: 1, 4: -1, 5: 0, 6: 0, 7: -1, 8: 0, 9: 0, 10: 0}


@pytest.mark.parametrize(("transform", "flip"), [("none", 1), ("log10", 1), ("pxc50_from_um", -1),
                                                 ("neg_log10", -1), ("minus", -1)])
def test_direction_follows_the_transform(tmp_path, transform, flip):
    _, store = build(tmp_path, spec_text(transform))
    got = hf_labels(store)
    assert {m: c for m, (_, c) in got.items()} == {m: d * flip for m, d in RAW_DIRECTION.items()}
    # the stored value is the transformed bound
    expect = {"none": 50.0, "log10": math.log10(50), "pxc50_from_um": 6 - math.log10(50),
              "neg_log10": -math.log10(50), "minus": -50.0}[transform]
    assert got[2][0] == pytest.approx(expect)


def test_qualifier_written_on_the_reversed_quantity(tmp_path):
    """The local MF-PCBA files: HF_value already pXC50, HF_qualifier written on the IC50."""
    _, store = build(tmp_path, spec_text("none", extra_label="qualifier_reversed = true"))
    assert {m: c for m, (_, c) in hf_labels(store).items()} == {m: -d for m, d in RAW_DIRECTION.items()}


def test_counts_in_manifest_and_cli(tmp_path, capsys, monkeypatch):
    spec, store = build(tmp_path, spec_text())
    c = store.manifest["counts"]["label_censoring"]
    assert c["hf/y"] == {"fitted": 6, "censored_below": 2, "censored_above": 2, "qualified": True}
    assert c["lf/y"]["qualified"] is False
    monkeypatch.setenv("MFRAY_CACHE", str(tmp_path / "cache"))
    assert main(["featurize", str(tmp_path / "s.toml"), "--local"]) == 0
    out = capsys.readouterr().out
    assert "labelled hf/y" in out and "fitted 6 / censored-below 2 / censored-above 2" in out
    assert main(["data", "show", str(tmp_path / "s.toml")]) == 0
    out = capsys.readouterr().out
    assert "qualifier 'q'" in out and "censored = 'censored'" in out
    assert "fitted 6 / censored-below 2 / censored-above 2" in out


def test_unknown_qualifier_is_quarantined_with_its_row(tmp_path):
    csv = CSV.replace("8,CCCCN,7,=,20", "8,CCCCN,7,ca.,20") + "11,CCOC,,junk,5\n"
    _, store = build(tmp_path, spec_text(), csv=csv)
    m = store.manifest["counts"]
    assert m["rows_read"] == 11 and m["rows_stored"] + m["rows_quarantined"] == 11
    q = store.table("quarantine")
    assert q.height == 1 and q["file_row"].to_list() == [8]
    assert "column 'q': unknown qualifier 'ca.'" in q["reason"][0]
    # a qualifier on a missing value qualifies nothing: row 11 is kept (for its LF label)
    assert 11 not in hf_labels(store) and store.table("task_labels").filter(pl.col("mol_id") == 11).height == 1


def test_missing_qualifier_column_names_file_and_columns(tmp_path):
    with pytest.raises(DataError, match=r"d.csv: missing column\(s\) \['qq'\].*the file has columns \['id', 'smiles', 'ic50', 'q', 'lf'\]"):
        build(tmp_path, spec_text(qualifier='qualifier_column = "qq"'))


@pytest.mark.parametrize(("qualifier", "policy", "message"), [
    ('qualifier_column = "q"', None, "source.labels[1]: Value error, qualifier_column is set but censored is not"),
    ("", "censored", "censored = 'censored' needs qualifier_column"),
    ('qualifier_column = "q"', "sometimes", "source.labels[1].censored: got 'sometimes'; allowed values: 'drop', 'as_value' or 'censored'"),
    ('qualifier_column = "ic50"', "drop", "qualifier_column is the label column itself"),
])
def test_spec_errors_name_the_key(tmp_path, qualifier, policy, message):
    (tmp_path / "s.toml").write_text(spec_text(qualifier=qualifier, policy=policy))
    with pytest.raises(SpecError) as e:
        load_spec(tmp_path / "s.toml")
    assert str(tmp_path / "s.toml") in str(e.value) and message in str(e.value)


def test_a_transform_without_a_direction_cannot_carry_bounds(monkeypatch, tmp_path):
    from mfray.data import specs

    monkeypatch.delitem(specs.TRANSFORM_DIRECTION, "log10")
    (tmp_path / "s.toml").write_text(spec_text("log10"))
    with pytest.raises(SpecError, match="transform 'log10' cannot say which way a bound points"):
        load_spec(tmp_path / "s.toml")


def test_cli_bad_qualifier_spec_exits_2(tmp_path, capsys):
    (tmp_path / "s.toml").write_text(spec_text(policy=None))
    assert main(["featurize", str(tmp_path / "s.toml"), "--local", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "qualifier_column is set but censored is not" in err and "Traceback" not in err


def test_policy_is_not_part_of_the_store_key(tmp_path):
    _, a = build(tmp_path, spec_text(policy="censored"))
    _, b = build(tmp_path, spec_text(policy="drop"), name="t.toml")
    assert a.path.name == b.path.name  # one store serves every policy
    _, c = build(tmp_path, spec_text(extra_label="qualifier_reversed = true"), name="u.toml")
    assert c.path.name != a.path.name  # the directions differ: another store


# -------------------------------------------------------------------------- duplicates with bounds
DUP = """id,smiles,ic50,q,lf
1,CCO,1,=,1
1,CCO,50,>,1
1,CCO,3,=,1
2,CCN,50,>,1
2,CCN,30,>,1
7,CCCCO,0.5,<,1
7,CCCCO,0.2,<,1
3,CCC,50,>,1
3,CCC,0.01,<,1
4,CCCC,2,=,1
5,CCCCC,4,=,1
6,CCCCCC,5,=,1
"""


def test_fitted_values_win_and_bounds_keep_the_tightest(tmp_path):
    _, store = build(tmp_path, spec_text("none", duplicates="mean"), csv=DUP)
    got = hf_labels(store)
    assert got[1] == (2.0, 0)  # mean of the fitted 1 and 3; the bound is ignored
    assert got[2] == (50.0, 1)  # true value > 50 and > 30: the tighter lower bound is 50
    assert got[7] == (0.2, -1)  # true value < 0.5 and < 0.2: below 0.2
    assert 3 not in got  # > 50 and < 0.01: no one label; dropped and counted
    assert store.manifest["counts"]["bound_conflicts_dropped"] == 1
    labels = store.table("labels").filter(pl.col("fidelity") == "hf")
    assert labels.height == 12 and labels["censor"].to_list() == [0, 1, 0, 1, 1, -1, -1, 1, -1, 0, 0, 0]


def test_quarantine_policy_treats_a_bound_and_a_value_as_a_conflict(tmp_path):
    csv = DUP.replace("1,CCO,3,=,1\n", "")
    csv = csv.replace("1,CCO,50,>,1", "1,CCO,1,>,1")  # same number, different meaning
    _, store = build(tmp_path, spec_text("none"), csv=csv)
    q = store.table("quarantine")
    assert set(q.filter(pl.col("code") == "conflicting_labels")["file_row"].to_list()) >= {1, 2}


# -------------------------------------------------------------------------- policies at load time
def test_policies_change_what_training_sees_not_the_split(tmp_path):
    spec, store = build(tmp_path, spec_text())
    tasks = {p: load_task(store, 1, censored=p) for p in ("drop", "as_value", "censored")}
    assert load_task(store, 1).censored == "censored"  # the spec's
    assert {p: t.censored for p, t in tasks.items()} == {p: p for p in tasks}  # or the override
    ids = {p: [t.folds[f].mol_ids.tolist() for f in ("train", "valid", "test")] for p, t in tasks.items()}
    assert ids["drop"] == ids["as_value"] == ids["censored"]
    fold = tasks["censored"].train
    y_drop, c_drop = fold.training_labels("drop")
    bound = fold.censor != 0
    assert bound.any() and np.isnan(y_drop[bound]).all() and np.array_equal(y_drop[~bound], fold.y[~bound])
    assert c_drop is None
    y_as, c_as = fold.training_labels("as_value")
    assert np.array_equal(y_as, fold.y) and c_as is None
    y_c, c_c = fold.training_labels("censored")
    assert np.array_equal(y_c, fold.y) and np.array_equal(c_c, fold.censor)
    assert fold.n_labelled("drop") == int((~bound).any(axis=1).sum()) < fold.n_labelled("censored") == len(fold)
    with pytest.raises(DataError, match="unknown censored-label policy 'sometimes'"):
        load_task(store, 1, censored="sometimes")


def test_a_task_without_qualifiers_has_no_policy(demo_store):
    t = load_task(demo_store, demo_store.manifest["spec"]["split"]["seeds"][0], censored="drop")
    assert t.censored is None and not (t.train.censor != 0).any()
