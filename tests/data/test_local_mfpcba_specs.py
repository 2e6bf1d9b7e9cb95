"""Dataset specs for the 9 local MF-PCBA pairs (data_specs/local_mfpcba) and the AZ-style template.

Reading the real files is skipped when shared/data/mfpcba is not beside the checkout; the full
primary screens (210k-640k rows) are only read for their headers and first two chunks.
"""

from __future__ import annotations

import csv
import gzip
import itertools
import json
import math
from pathlib import Path

import pyarrow as pa
import pytest

from mfray.data.sources.local import LocalFilesSource
from mfray.data.sources.tabular import NULL_TOKENS
from mfray.data.specs import LocalSource, load_spec
from mfray.utils.errors import SpecError

REPO = Path(__file__).resolve().parents[2]
SPEC_DIR = REPO / "data_specs" / "local_mfpcba"
PAIRS = {  # codename -> (SD AID, DR AID)
    "serine": (873, 1431), "splicing": (2221, 435010), "ubiquitin": (485273, 493155),
    "fatty_acid_synthase": (602261, 624326), "transcription3": (624304, 624474),
    "transcription_4": (652154, 687027), "toxin_B": (652162, 720512),
    "transcription_5": (1259374, 1259375), "transcription2": (2098, 2382),
}
SPEC_FILES = sorted([f"{c}.toml" for c in PAIRS] + [f"{c}_hf.toml" for c in PAIRS])


def _data_dir() -> Path:
    # where the specs point (resolved like every spec path: relative to the spec file)
    spec = load_spec(SPEC_DIR / "serine_hf.toml")
    return LocalFilesSource(spec).path("hf").parent


def _need_data() -> Path:
    d = _data_dir()
    if not d.is_dir():
        pytest.skip(f"MF-PCBA data not present at {d}")
    return d


def test_exactly_the_18_specs_exist() -> None:
    assert sorted(p.name for p in SPEC_DIR.glob("*.toml")) == SPEC_FILES


@pytest.mark.parametrize("fname", SPEC_FILES)
def test_spec_loads(fname: str) -> None:
    spec = load_spec(SPEC_DIR / fname)
    stem = fname.removesuffix(".toml")
    code = stem.removesuffix("_hf")
    sd, dr = PAIRS[code]
    assert spec.name == stem
    assert spec.fidelities == ["lf", "hf"] and spec.task_type == "regression"
    assert spec.molecule_key == "structure" and spec.duplicates == "mean"
    assert spec.tags == ["mfpcba", "local", "paper23"]
    assert code in spec.description and str(sd) in spec.description and str(dr) in spec.description
    assert "Buterez" in spec.citation and "MIT" in spec.citation
    assert spec.split.kind == "random" and len(spec.split.seeds) == 5
    src = spec.source
    assert isinstance(src, LocalSource)
    labels = {(lab.fidelity, lab.target): (lab.file, lab.column) for lab in src.labels}
    if stem.endswith("_hf"):
        assert list(src.files) == ["hf"]
        assert labels == {("lf", "SD"): ("hf", "SD_score"), ("hf", "DR"): ("hf", "HF_value")}
    else:
        assert sorted(src.files) == ["hf", "primary"]
        assert labels == {("lf", "SD"): ("primary", "SD_score"), ("hf", "DR"): ("hf", "HF_value")}
        assert src.files["primary"].path.endswith(f"full/{code}__SD{sd}__HF{dr}__full.csv.gz")
    assert src.files["hf"].path.endswith(f"/{code}__SD{sd}__HF{dr}.csv")
    assert all(not f.path.startswith("/") and "$" not in f.path for f in src.files.values())


@pytest.mark.parametrize("code", sorted(PAIRS))
def test_split_seeds_are_the_mfpcba_seeds(code: str) -> None:
    d = _need_data()
    seeds = json.loads((d / "MF_PCBA_random_seeds.json").read_text())
    sd, dr = PAIRS[code]
    for fname in (f"{code}.toml", f"{code}_hf.toml"):
        assert load_spec(SPEC_DIR / fname).split.seeds == seeds[f"{dr}-{sd}"]


def _bad(text: str | None) -> bool:
    """What parse_numeric should reject, decided independently: non-empty, not a null token, not finite."""
    if text is None:
        return False
    s = text.strip()
    if s in NULL_TOKENS:
        return False
    try:
        return not math.isfinite(float(s))
    except ValueError:
        return True


def _value(text: str) -> float | None:
    s = text.strip()
    if s in NULL_TOKENS:
        return None
    try:
        v = float(s)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


@pytest.mark.parametrize("code", sorted(PAIRS))
def test_hf_spec_reads_the_real_file(code: str) -> None:
    _need_data()
    spec = load_spec(SPEC_DIR / f"{code}_hf.toml")
    src = LocalFilesSource(spec)
    path = src.path("hf")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    table = pa.concat_tables(list(src.iter_tables()))
    assert table.schema == src.raw_schema()
    assert table.num_rows == len(rows) > 0
    assert table["file_row"].to_pylist() == list(range(1, len(rows) + 1))
    assert table["smiles"].to_pylist() == [r["SMILES"] for r in rows]
    # reasons only where a value is bad, and naming its column
    rejects = table["reject"].to_pylist()
    for i, r in enumerate(rows):
        bad_cols = [c for c in ("SD_score", "HF_value") if _bad(r[c])]
        if bad_cols:
            assert rejects[i] is not None and all(repr(c) in rejects[i] for c in bad_cols)
        else:
            assert rejects[i] is None, (i, rejects[i])
    sd = table["label:lf:SD"].to_pylist()
    dr = table["label:hf:DR"].to_pylist()
    assert sd == pytest.approx([_value(r["SD_score"]) for r in rows], nan_ok=True)
    assert dr == pytest.approx([_value(r["HF_value"]) for r in rows], nan_ok=True)
    assert sum(v is not None for v in dr) > 0
    # HF_qualifier is PubChem's qualifier on the XC50: '>' = pXC50 below the stored bound (censor -1)
    censor = table["censor:hf:DR"].to_pylist()
    want = {">": -1, "<": 1, "=": 0, "": 0}
    assert censor == [None if _value(r["HF_value"]) is None else want[r["HF_qualifier"].strip()] for r in rows]


#: valued HF rows per qualifier in the 9 files (shared/data/mfpcba/SOURCE.txt): (fitted, '>', '<')
QUALIFIER_COUNTS = {
    "serine": (81, 1176, 0), "ubiquitin": (337, 836, 0), "transcription2": (451, 1827, 81),
    "transcription3": (375, 997, 4), "transcription_5": (26, 442, 0), "toxin_B": (47, 77, 0),
    "splicing": (1902, 206, 2), "fatty_acid_synthase": (1003, 6, 1), "transcription_4": (1212, 0, 61),
}


@pytest.mark.parametrize("code", sorted(PAIRS))
def test_specs_declare_the_qualifier_and_count_the_bounds(code: str) -> None:
    for fname in (f"{code}.toml", f"{code}_hf.toml"):
        hf = next(lab for lab in load_spec(SPEC_DIR / fname).source.labels if lab.fidelity == "hf")
        assert (hf.qualifier_column, hf.qualifier_reversed, hf.censored) == ("HF_qualifier", True, "censored")
        assert hf.direction == -1
    _need_data()
    table = pa.concat_tables(list(LocalFilesSource(load_spec(SPEC_DIR / f"{code}_hf.toml")).iter_tables()))
    c = [v for v in table["censor:hf:DR"].to_pylist() if v is not None]
    assert (c.count(0), c.count(-1), c.count(1)) == QUALIFIER_COUNTS[code]


@pytest.mark.parametrize("code", sorted(PAIRS))
def test_full_spec_columns_exist(code: str) -> None:
    _need_data()
    LocalFilesSource(load_spec(SPEC_DIR / f"{code}.toml")).check_columns()  # headers only


def test_full_spec_streams_the_primary_screen() -> None:
    _need_data()
    spec = load_spec(SPEC_DIR / "serine.toml")
    src = LocalFilesSource(spec)
    primary = src.path("primary")
    with gzip.open(primary, "rt", encoding="utf-8") as f:
        first = list(itertools.islice(csv.DictReader(f), 3))
    chunks = list(itertools.islice(src.iter_tables(chunk_rows=4096), 2))  # never the whole screen
    assert len(chunks) == 2
    for c in chunks:
        assert c.schema == src.raw_schema()
        assert set(c["file"].to_pylist()) == {str(primary)}
        assert c["label:hf:DR"].null_count == c.num_rows  # HF comes from the HF file only
    t = pa.concat_tables(chunks)
    assert t["row"].to_pylist() == list(range(t.num_rows))
    assert t["file_row"].to_pylist() == list(range(1, t.num_rows + 1))
    assert t["smiles"].to_pylist()[:3] == [r["SMILES"] for r in first]
    assert t["label:lf:SD"].to_pylist()[:3] == [float(r["SD_score"]) for r in first]
    assert t["label:lf:SD"].null_count < t.num_rows


# ---------------------------------------------------------------- AZ-style template
AZ = REPO / "data_specs" / "az_template.toml"


def test_az_template_loads_without_az_data(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZ_DATA", raising=False)
    spec = load_spec(AZ)
    assert spec.molecule_key == "id" and spec.duplicates == "mean"
    src = spec.source
    assert isinstance(src, LocalSource)
    assert {k: (f.smiles_column, f.id_column) for k, f in src.files.items()} == {
        "primary": ("SMILES", "Compound ID"), "confirmatory": ("SMILES", "Compound ID"),
    }
    assert [(lab.fidelity, lab.file, lab.column) for lab in src.labels] == [
        ("lf", "primary", "Z-Score"), ("hf", "confirmatory", "pIC50"),
    ]
    assert (src.labels[1].qualifier_column, src.labels[1].censored) == ("Qualifier", "censored")
    assert all(f.path.startswith("$AZ_DATA/") for f in src.files.values())
    with pytest.raises(SpecError, match="environment variable"):
        LocalFilesSource(spec).path("primary")


def test_az_template_reads_files_under_az_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with gzip.open(tmp_path / "assay_17_primary.csv.gz", "wt", encoding="utf-8") as f:
        f.write("Compound ID,SMILES,Z-Score,Plate\nAZ0001,CCO,-1.5,P1\nAZ0002,c1ccccc1O,4.2,P1\n"
                "AZ0003,CC(=O)O,n.d.,P2\nAZ0004,CCN,,P2\n")
    (tmp_path / "assay_17_confirmatory.csv").write_text("Compound ID,SMILES,pIC50,Qualifier\nAZ0002,c1ccccc1O,6.3,=\n"
                                                        "AZ0001,CCO,4.5,<\n")
    monkeypatch.setenv("AZ_DATA", str(tmp_path))
    src = LocalFilesSource(load_spec(AZ))
    t = pa.concat_tables(list(src.iter_tables()))
    assert t["source_id"].to_pylist() == ["AZ0001", "AZ0002", "AZ0003", "AZ0004", "AZ0002", "AZ0001"]
    assert t["label:lf:activity"].to_pylist() == [-1.5, 4.2, None, None, None, None]
    assert t["label:hf:activity"].to_pylist() == [None, None, None, None, 6.3, 4.5]
    assert t["censor:hf:activity"].to_pylist() == [None, None, None, None, 0, -1]  # '< 4.5': below the bound
    rejects = t["reject"].to_pylist()
    assert rejects[2] is not None and "'Z-Score'" in rejects[2]
    assert [i for i, r in enumerate(rejects) if r] == [2]
