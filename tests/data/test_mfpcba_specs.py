"""The 60 MF-PCBA dataset specs (data_specs/mfpcba, written by scripts/make_mfpcba_specs.py)."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import pytest

from mfray.data.sources.base import build_source
from mfray.data.sources.mfpcba import PubchemMfpcbaSource
from mfray.data.specs import DatasetSpec, MfpcbaSource, load_spec

REPO = Path(__file__).resolve().parents[2]
SPECS = REPO / "data_specs" / "mfpcba"
SHARED = Path("/work/shared/data")

#: METHOD.md section 8: the 23 datasets of the MF-PCBA paper's evaluation
PAPER_23 = {
    "1259350-1224905", "1259375-1259374", "1259418-1259416", "1259420-1259416", "1431-873", "1445", "1465",
    "1949", "2382-2098", "435010-2221", "449756-435005", "449762", "463203-2650", "493155-485273",
    "504313-2732", "504329", "504941-488895", "624273-588549", "624326-602261", "624330", "624474-624304",
    "687027-652154", "720512-652162",
}


@pytest.fixture(scope="module")
def specs() -> dict[str, DatasetSpec]:
    return {p.stem: load_spec(p) for p in sorted(SPECS.glob("*.toml"))}


def test_all_sixty_load(specs: dict[str, DatasetSpec]) -> None:
    assert len(specs) == 60
    for stem, spec in specs.items():
        assert spec.name == f"mfpcba_{stem}"
        assert isinstance(spec.source, MfpcbaSource)
        assert spec.task_type == "regression" and spec.fidelities == ["lf", "hf"]
        assert spec.duplicates == "mfpcba"
        assert spec.standardize.preset == "mfpcba" and spec.featurizer.preset == "default"
        assert spec.split.kind == "random" and len(spec.split.seeds) == 5
        assert spec.split.fractions == (0.8, 0.1, 0.1)
        assert "mfpcba" in spec.tags and "Buterez" in spec.citation and "2023" in spec.citation
        # the name is "DR AID-SD AID", or one AID when one assay holds both
        dr, _, sd = stem.partition("-")
        assert spec.source.dr_aid == int(dr) and spec.source.sd_aid == int(sd or dr)
        assert spec.source.sd_columns and spec.source.dr_columns


def test_paper_23(specs: dict[str, DatasetSpec]) -> None:
    tagged = {stem for stem, spec in specs.items() if "paper23" in spec.tags}
    assert tagged == PAPER_23
    # the paper's datasets carry the LF featuriser's atomic-number range; the others leave the default
    for stem, spec in specs.items():
        assert (spec.featurizer.max_atomic_number is not None) == (stem in PAPER_23)


def test_build_source(specs: dict[str, DatasetSpec]) -> None:
    src = build_source(specs["1431-873"])  # no network: constructing touches nothing
    assert isinstance(src, PubchemMfpcbaSource)
    assert src.labels() == [("lf", "SD"), ("hf", "DR")]
    assert src.describe()["dr_columns"] == ["IC50 #1"]


@pytest.mark.skipif(not SHARED.exists(), reason="/work/shared/data is not available")
def test_match_the_table_and_published_seeds(specs: dict[str, DatasetSpec]) -> None:
    table = SHARED / "mfpcba_60.csv"
    with table.open(newline="") as f:
        rows = {r["name"]: r for r in csv.DictReader(f)}
    assert set(rows) == set(specs)
    assert {n for n, r in rows.items() if r["in_paper_23"] == "True"} == PAPER_23
    for name, r in rows.items():
        src = specs[name].source
        assert isinstance(src, MfpcbaSource)
        assert (src.sd_aid, src.dr_aid) == (int(r["sd_aid"]), int(r["dr_aid"]))
        assert src.sd_columns == r["sd_columns"].split("|") and src.dr_columns == r["dr_columns"].split("|")
        assert src.transform_dr == r["transform_dr"].lower()
        assert specs[name].featurizer.max_atomic_number == (int(r["lf_max_atomic_number"]) if r["lf_max_atomic_number"] else None)
        assert specs[name].split.seeds == [int(s) for s in r["split_seeds"].split("|")]

    seeds_file = SHARED / "mfpcba" / "MF_PCBA_random_seeds.json"
    if seeds_file.exists():
        published = json.loads(seeds_file.read_text())
        checked = [n for n in specs if n in published]
        assert len(checked) >= 23
        for name in checked:
            assert specs[name].split.seeds == published[name], name


@pytest.mark.skipif(not SHARED.exists(), reason="/work/shared/data is not available")
def test_generator_is_up_to_date(tmp_path: Path) -> None:
    """The committed specs are what the script writes now."""
    spec = importlib.util.spec_from_file_location("make_mfpcba_specs", REPO / "scripts" / "make_mfpcba_specs.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--table", str(SHARED / "mfpcba_60.csv"), "--out", str(tmp_path)]) == 0
    for p in sorted(tmp_path.glob("*.toml")):
        assert p.read_text() == (SPECS / p.name).read_text(), p.name


def test_specs_declare_their_qualifiers(specs: dict[str, DatasetSpec]) -> None:
    """Every pair but AID 489005 (no qualifier column in its table) treats bounds as censored by default;
    the qualifier columns read off real PubChem headers are named, the rest found by layout ("auto")."""
    named = 0
    for name, spec in specs.items():
        src = spec.source
        if src.dr_aid == 489005:
            assert src.dr_qualifier_columns is None and src.censored is None
            continue
        assert src.censored == "censored" and src.dr_qualifier_columns is not None, name
        named += isinstance(src.dr_qualifier_columns, dict)
        # '>' on the AC50 means pAC50 below the bound: columns already in -log units are reversed
        assert src.dr_qualifier_reversed == (src.transform_dr == "no" and src.dr_columns[0].startswith("pA")), name
    assert named == 18
    assert specs["1431-873"].source.dr_qualifier_columns == {"IC50 #1": "Qualifier"}
    assert specs["720512-652162"].source.dr_qualifier_reversed is True
