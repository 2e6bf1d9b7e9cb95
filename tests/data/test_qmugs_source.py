"""QMugs summary.csv source: schema, 12 properties x 2 fidelities, outlier filter, rejects, split index.

Runs on the synthetic fixture tests/fixtures/qmugs (README.txt there lists its deliberate cases).
"""

from __future__ import annotations

import csv
import shutil
import tomllib
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from mfray.data.sources.base import SOURCES, label_column
from mfray.data.sources.qmugs import (
    QmugsSummarySource,
    load_qmugs_split_index,
    qmugs_fold_role,
    qmugs_source_id,
)
from mfray.data.specs import QMUGS_PROPERTIES, load_spec, parse_spec
from mfray.utils.errors import DataError, SpecError

REPO = Path(__file__).resolve().parents[2]
FIXTURE_SPEC = REPO / "data_specs" / "qmugs_fixture.toml"
FIXTURE = REPO / "tests" / "fixtures" / "qmugs"
SUMMARY = FIXTURE / "summary.csv"

# deliberate cases of the fixture (0-based data rows, see README.txt)
CONFORMERS = (3, 4)
OUTLIER_LF_DIPOLE_TOT = 12
NON_NUMERIC = 22
BAD_SMILES = 30
OUTLIER_HF_HOMO = 41
NO_DFT = 50


def _csv_rows(path: Path = SUMMARY) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _spec_dict(**source: object) -> dict:
    data = tomllib.loads(FIXTURE_SPEC.read_text())
    data["source"].update(source)
    return data


def _source(**source: object) -> QmugsSummarySource:
    return QmugsSummarySource(parse_spec(_spec_dict(**source), spec_path=str(FIXTURE_SPEC)))


def _read(src: QmugsSummarySource, chunk_rows: int = 65536) -> pa.Table:
    return pa.concat_tables(list(src.iter_tables(chunk_rows=chunk_rows)))


@pytest.fixture(scope="module")
def fixture_source() -> QmugsSummarySource:
    return QmugsSummarySource(load_spec(FIXTURE_SPEC))


@pytest.fixture(scope="module")
def table(fixture_source: QmugsSummarySource) -> pa.Table:
    return _read(fixture_source)


# ---------------------------------------------------------------- specs and schema
def test_registered_under_qmugs() -> None:
    assert SOURCES.get("qmugs") is QmugsSummarySource


def test_real_spec_loads_and_resolves_only_when_used(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = load_spec(REPO / "data_specs" / "qmugs.toml")
    assert spec.name == "qmugs" and spec.fidelities == ["lf", "hf"]
    assert spec.duplicates == "mean"
    assert spec.source.kind == "qmugs"
    assert spec.source.properties == list(QMUGS_PROPERTIES)
    assert spec.source.summary_csv == "$QMUGS_DIR/summary.csv"
    assert spec.source.outlier_sd == 5.0
    assert "Isert" in spec.citation
    monkeypatch.delenv("QMUGS_DIR", raising=False)
    with pytest.raises(SpecError, match="QMUGS_DIR|environment variable"):
        QmugsSummarySource(spec).path  # noqa: B018 - resolving is what raises
    monkeypatch.setenv("QMUGS_DIR", "/data/qmugs")
    assert QmugsSummarySource(spec).path == Path("/data/qmugs/summary.csv")


def test_labels_are_12_properties_times_2_fidelities(fixture_source: QmugsSummarySource) -> None:
    labels = fixture_source.labels()
    assert len(labels) == 24
    assert labels[:2] == [("lf", "TOTAL_ENERGY"), ("hf", "TOTAL_ENERGY")]
    assert {t for _, t in labels} == set(QMUGS_PROPERTIES)
    assert all(labels.count((f, p)) == 1 for f in ("lf", "hf") for p in QMUGS_PROPERTIES)


def test_schema_and_row_identity(fixture_source: QmugsSummarySource, table: pa.Table) -> None:
    assert table.schema == fixture_source.raw_schema()
    assert table.num_rows == 60
    assert table["row"].to_pylist() == list(range(60))
    assert table["file_row"].to_pylist() == list(range(1, 61))
    assert set(table["file"].to_pylist()) == {str(SUMMARY)}
    rows = _csv_rows()
    assert table["source_id"].to_pylist() == [qmugs_source_id(r["chembl_id"], r["conf_id"]) for r in rows]
    assert table["smiles"].to_pylist() == [r["smiles"] for r in rows]


def test_values_map_gfn2_to_lf_and_dft_to_hf(table: pa.Table) -> None:
    rows = _csv_rows()
    for prop in QMUGS_PROPERTIES:
        for fid, prefix in (("lf", "GFN2"), ("hf", "DFT")):
            got = table[label_column(fid, prop)].to_pylist()
            assert got[0] == pytest.approx(float(rows[0][f"{prefix}_{prop}"]))
    # the fidelities are correlated, as in QMugs
    lf = np.array(table[label_column("lf", "FORMATION_ENERGY")].to_pylist(), dtype=float)
    hf = np.array(table[label_column("hf", "FORMATION_ENERGY")].to_pylist(), dtype=float)
    ok = np.isfinite(lf) & np.isfinite(hf)
    assert np.corrcoef(lf[ok], hf[ok])[0, 1] > 0.9


def test_chunks_are_bounded_and_do_not_change_the_result(fixture_source: QmugsSummarySource, table: pa.Table) -> None:
    chunks = list(QmugsSummarySource(fixture_source.spec).iter_tables(chunk_rows=7))
    assert max(c.num_rows for c in chunks) <= 7 and len(chunks) == 9
    assert pa.concat_tables(chunks).equals(table)


# ---------------------------------------------------------------- outliers
def test_outliers_are_nulled_and_counted(fixture_source: QmugsSummarySource, table: pa.Table) -> None:
    lf_dip = table[label_column("lf", "DIPOLE_TOT")].to_pylist()
    hf_homo = table[label_column("hf", "HOMO_ENERGY")].to_pylist()
    assert lf_dip[OUTLIER_LF_DIPOLE_TOT] is None
    assert hf_homo[OUTLIER_HF_HOMO] is None
    # only the outlying value goes: the row and its other fidelity stay
    assert table[label_column("hf", "DIPOLE_TOT")].to_pylist()[OUTLIER_LF_DIPOLE_TOT] is not None
    assert table[label_column("lf", "HOMO_ENERGY")].to_pylist()[OUTLIER_HF_HOMO] is not None
    rejects = table["reject"].to_pylist()
    assert rejects[OUTLIER_LF_DIPOLE_TOT] is None and rejects[OUTLIER_HF_HOMO] is None

    rep = fixture_source.outliers
    assert rep is not None and rep.complete and rep.outlier_sd == 5.0
    assert rep.total == 2
    assert {k: v for k, v in rep.counts.items() if v} == {
        label_column("lf", "DIPOLE_TOT"): 1, label_column("hf", "HOMO_ENERGY"): 1,
    }
    assert set(rep.counts) == {label_column(f, t) for f, t in fixture_source.labels()}
    rows = _csv_rows()
    assert sorted(rep.values) == [
        (OUTLIER_LF_DIPOLE_TOT, qmugs_source_id(rows[12]["chembl_id"], rows[12]["conf_id"]),
         label_column("lf", "DIPOLE_TOT"), pytest.approx(412.731)),
        (OUTLIER_HF_HOMO, qmugs_source_id(rows[41]["chembl_id"], rows[41]["conf_id"]),
         label_column("hf", "HOMO_ENERGY"), pytest.approx(0.9512)),
    ]
    described = fixture_source.describe()["outliers"]
    assert described["total"] == 2 and described["complete"] is True
    # every other value is kept
    n_null = sum(table[label_column(f, t)].null_count for f, t in fixture_source.labels())
    assert n_null == 2 + 1 + 12 + 0  # outliers + non-numeric value + the row without DFT results


def test_outlier_statistics_are_mean_and_population_std_of_the_file(fixture_source: QmugsSummarySource) -> None:
    stats = fixture_source.column_stats()
    for col, lab in (("DFT_HOMO_ENERGY", label_column("hf", "HOMO_ENERGY")),
                     ("DFT_LUMO_ENERGY", label_column("hf", "LUMO_ENERGY")),
                     ("GFN2_DIPOLE_TOT", label_column("lf", "DIPOLE_TOT"))):
        vals = []
        for r in _csv_rows():
            try:
                vals.append(float(r[col]))
            except ValueError:  # empty or non-numeric: not counted
                pass
        x = np.array(vals)
        st = stats[lab]
        assert st.n == len(x)
        assert st.mean == pytest.approx(x.mean(), rel=1e-12)
        assert st.std == pytest.approx(x.std(), rel=1e-12)
        assert st.n == (58 if col.startswith("DFT_LUMO") else 59 if col.startswith("DFT") else 60)


def test_outlier_filter_off_keeps_every_value() -> None:
    src = _source(outlier_sd=None)
    t = _read(src)
    assert src.outliers is None
    assert t[label_column("lf", "DIPOLE_TOT")].to_pylist()[OUTLIER_LF_DIPOLE_TOT] == pytest.approx(412.731)
    assert t[label_column("hf", "HOMO_ENERGY")].to_pylist()[OUTLIER_HF_HOMO] == pytest.approx(0.9512)


def test_a_tighter_limit_removes_more() -> None:
    src = _source(outlier_sd=2.5)
    _read(src)
    assert src.outliers is not None and src.outliers.total > 2


# ---------------------------------------------------------------- rejects and odd rows
def test_non_numeric_value_rejects_the_row_with_a_reason_naming_the_column(table: pa.Table) -> None:
    rejects = table["reject"].to_pylist()
    reason = rejects[NON_NUMERIC]
    assert reason is not None and "DFT_LUMO_ENERGY" in reason and "not_converged" in reason
    assert [i for i, r in enumerate(rejects) if r] == [NON_NUMERIC]
    assert table[label_column("hf", "LUMO_ENERGY")].to_pylist()[NON_NUMERIC] is None
    # the rejected row is kept, with its other values
    assert table[label_column("hf", "HOMO_ENERGY")].to_pylist()[NON_NUMERIC] is not None


def test_missing_dft_values_are_nulls_not_rejects(table: pa.Table) -> None:
    assert table["reject"].to_pylist()[NO_DFT] is None
    for prop in QMUGS_PROPERTIES:
        assert table[label_column("hf", prop)].to_pylist()[NO_DFT] is None
        assert table[label_column("lf", prop)].to_pylist()[NO_DFT] is not None


def test_bad_smiles_is_passed_through_for_the_standardiser(table: pa.Table) -> None:
    assert table["smiles"].to_pylist()[BAD_SMILES] == "CC(=O)Nc1ccc(cc1"
    assert table["reject"].to_pylist()[BAD_SMILES] is None


def test_conformers_of_one_molecule_are_two_records(table: pa.Table) -> None:
    a, b = CONFORMERS
    ids = table["source_id"].to_pylist()
    smiles = table["smiles"].to_pylist()
    assert ids[a].split(":")[0] == ids[b].split(":")[0]
    assert (ids[a].split(":")[1], ids[b].split(":")[1]) == ("conf_00", "conf_01")
    assert smiles[a] == smiles[b]
    energies = table[label_column("hf", "TOTAL_ENERGY")].to_pylist()
    assert energies[a] != energies[b]


# ---------------------------------------------------------------- columns
def _write_variant(tmp_path: Path, rename: dict[str, str] | None = None, drop: tuple[str, ...] = ()) -> Path:
    rows = _csv_rows()
    cols = [c for c in rows[0] if c not in drop]
    out = tmp_path / "summary.csv"
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([(rename or {}).get(c, c) for c in cols])
        for r in rows:
            w.writerow([r[c] for c in cols])
    return out


def test_missing_columns_are_one_error_naming_file_and_columns(tmp_path: Path) -> None:
    path = _write_variant(tmp_path, drop=("DFT_HOMO_ENERGY", "GFN2_ROT_CONSTANT_B", "conf_id"))
    src = _source(summary_csv=str(path))
    with pytest.raises(DataError) as err:
        list(src.iter_tables())
    msg = str(err.value)
    assert str(path) in msg
    for col in ("DFT_HOMO_ENERGY", "GFN2_ROT_CONSTANT_B", "conf_id"):
        assert col in msg
    assert "DFT_LUMO_ENERGY" not in msg.split("the file has")[0]


def test_only_selected_properties_are_needed(tmp_path: Path) -> None:
    path = _write_variant(tmp_path, drop=("DFT_HOMO_ENERGY",))
    src = _source(summary_csv=str(path), properties=["LUMO_ENERGY", "DIPOLE_TOT"])
    t = _read(src)
    assert [c for c in t.column_names if c.startswith("label:")] == [
        "label:lf:LUMO_ENERGY", "label:hf:LUMO_ENERGY", "label:lf:DIPOLE_TOT", "label:hf:DIPOLE_TOT",
    ]


def test_uppercase_smiles_and_sdf_style_property_names_are_accepted(tmp_path: Path) -> None:
    rename = {"smiles": "SMILES", "DFT_HOMO_ENERGY": "DFT:HOMO_ENERGY", "GFN2_HOMO_ENERGY": "GFN2:HOMO_ENERGY"}
    path = _write_variant(tmp_path, rename=rename)
    t = _read(_source(summary_csv=str(path)))
    assert t.num_rows == 60
    assert t["smiles"].to_pylist()[0] == _csv_rows()[0]["smiles"]
    assert t[label_column("hf", "HOMO_ENERGY")].to_pylist()[0] == pytest.approx(float(_csv_rows()[0]["DFT_HOMO_ENERGY"]))


def test_missing_file_is_a_data_error(tmp_path: Path) -> None:
    src = _source(summary_csv=str(tmp_path / "nope.csv"))
    with pytest.raises(DataError, match="nope.csv"):
        list(src.iter_tables())


def test_fidelities_must_include_lf_and_hf() -> None:
    data = _spec_dict()
    data["fidelities"] = ["hf"]
    with pytest.raises(SpecError, match="lf"):
        QmugsSummarySource(parse_spec(data, spec_path=str(FIXTURE_SPEC)))


def test_fingerprint_covers_summary_and_split_index(fixture_source: QmugsSummarySource) -> None:
    fp = fixture_source.fingerprint()
    assert fp["summary"]["name"] == "summary.csv"
    assert sorted(f["name"] for f in fp["split_index"]) == ["test_1K.csv", "train_25K.csv", "train_8K.csv", "val_1K.csv"]


# ---------------------------------------------------------------- split index
def test_split_index_folder() -> None:
    t = load_qmugs_split_index(FIXTURE / "data_indices")
    assert t.column_names == ["chembl_id", "conf_id", "fold"]
    assert all(t.schema.field(c).type == pa.string() for c in t.column_names)
    keys: dict[str, set[tuple[str, str]]] = {}
    for r in t.to_pylist():
        keys.setdefault(r["fold"], set()).add((r["chembl_id"], r["conf_id"]))
    assert {k: len(v) for k, v in keys.items()} == {"train_8K": 20, "train_25K": 40, "val_1K": 6, "test_1K": 6}
    assert keys["train_8K"] <= keys["train_25K"]  # nested training sets
    assert not keys["val_1K"] & keys["test_1K"] and not (keys["val_1K"] | keys["test_1K"]) & keys["train_25K"]
    in_summary = {(r["chembl_id"], r["conf_id"]) for r in _csv_rows()}
    assert set().union(*keys.values()) <= in_summary
    assert {qmugs_fold_role(f) for f in keys} == {"train", "valid", "test"}


def test_split_index_single_file_and_fold_column(tmp_path: Path) -> None:
    t = load_qmugs_split_index(FIXTURE / "data_indices" / "val_1K.csv")
    assert set(t["fold"].to_pylist()) == {"val_1K"} and t.num_rows == 6
    f = tmp_path / "splits.csv"
    f.write_text("chembl_id,conf_id,fold\nCHEMBL1,conf_00,train\nCHEMBL2,conf_01,test\n")
    t = load_qmugs_split_index(f)
    assert t.to_pylist() == [
        {"chembl_id": "CHEMBL1", "conf_id": "conf_00", "fold": "train"},
        {"chembl_id": "CHEMBL2", "conf_id": "conf_01", "fold": "test"},
    ]


def test_split_index_errors(tmp_path: Path) -> None:
    bad = tmp_path / "train_8K.csv"
    bad.write_text("index,chembl_id\n1,CHEMBL1\n")
    with pytest.raises(DataError, match=r"train_8K\.csv.*conf_id"):
        load_qmugs_split_index(bad)
    bad.write_text("chembl_id,conf_id\nCHEMBL1,conf_00\nCHEMBL1,conf_00\n")
    with pytest.raises(DataError, match="CHEMBL1 conf_00 is listed more than once"):
        load_qmugs_split_index(bad)
    with pytest.raises(DataError, match="does not exist"):
        load_qmugs_split_index(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no .csv files"):
        load_qmugs_split_index(empty)
    with pytest.raises(DataError, match="train_, val_ or test_"):
        qmugs_fold_role("holdout")


def test_split_index_copy_keeps_fold_names(tmp_path: Path) -> None:
    dest = tmp_path / "idx"
    shutil.copytree(FIXTURE / "data_indices", dest)
    (dest / "notes.txt").write_text("not an index\n")
    assert set(load_qmugs_split_index(dest)["fold"].to_pylist()) == {"train_8K", "train_25K", "val_1K", "test_1K"}


# ---------------------------------------------------------------- published splits as the store's splits
@pytest.mark.parametrize("train", ["train_8K", "whole"])
def test_published_split_becomes_the_stores_split(tmp_path: Path, train: str) -> None:
    """split.kind = "predefined": the split index's conformers, mapped to the molecules molecule_key
    makes, are the store's folds for every seed (the same for each), instead of a random split."""
    from mfray.run.featurize import featurize_dataset

    data = _spec_dict(split_train=train)
    data["split"] = {"kind": "predefined", "seeds": [0, 1]}
    spec = parse_spec(data, spec_path=str(FIXTURE_SPEC))
    store = featurize_dataset(spec, tmp_path / "stores", executor="local", progress=False, log=lambda m: None).store
    index = load_qmugs_split_index(FIXTURE / "data_indices").to_pylist()
    rows = _csv_rows()
    # the structure of each listed conformer, as the store keyed it (molecules: first row of each mol_id)
    labels = store.table("labels").select("mol_id", "source_id").unique()
    mol_of = dict(zip(labels["source_id"].to_list(), labels["mol_id"].to_list()))
    want = {"valid": set(), "test": set(), "train": set()}
    for r in index:
        sid = f"{r['chembl_id']}:{r['conf_id']}"
        role = {"val": "valid", "test": "test", "train": "train"}[r["fold"].split("_")[0]]
        if role == "train" and r["fold"] != train:
            continue
        if sid in mol_of:
            want[role].add(mol_of[sid])
    if train == "whole":
        listed = want["valid"] | want["test"]
        want["train"] = {m for m in mol_of.values() if m not in listed}
    splits = store.table("splits")
    hf_ids = set(store.table("task_labels").filter(pl.col("fidelity") == "hf")["mol_id"].to_list())
    for seed in (0, 1):
        got = {f: set(splits.filter((pl.col("seed") == seed) & (pl.col("fold") == f))["mol_id"].to_list())
               for f in ("train", "valid", "test")}
        assert got == {f: ids & hf_ids for f, ids in want.items()}, (seed, train)
    info = store.manifest["counts"]["predefined_split"]
    assert sum(info["molecules_by_fold"].values()) == sum(len(v & hf_ids) for v in want.values())
    assert len(rows) == 60


def test_predefined_split_needs_the_index(tmp_path: Path) -> None:
    from mfray.utils.errors import SpecError

    data = _spec_dict(split_index=None)
    data["split"] = {"kind": "predefined"}
    with pytest.raises(SpecError, match="takes its folds from source.split_index"):
        parse_spec(data, spec_path=str(FIXTURE_SPEC))
    data = _spec_dict(split_train="train_8K")
    with pytest.raises(SpecError, match="split_train: only with split.kind"):
        parse_spec(data, spec_path=str(FIXTURE_SPEC))
    data = _spec_dict(split_train="train_9K")
    data["split"] = {"kind": "predefined"}
    src = QmugsSummarySource(parse_spec(data, spec_path=str(FIXTURE_SPEC)))
    with pytest.raises(DataError, match="split_train = 'train_9K' is not a fold of the split index"):
        _read(src)
