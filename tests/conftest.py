"""Shared test fixtures. Tests run on CPU in seconds; real-data tests skip when ../shared/data is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


@pytest.fixture(scope="session")
def demo_spec():
    from mfray.data.specs import load_spec

    return load_spec(REPO / "data_specs" / "aid1445.toml")


@pytest.fixture(scope="session")
def demo_store(tmp_path_factory, demo_spec):
    """The bundled AID 1445 demo featurised once per session (in-process executor)."""
    from mfray.run.featurize import featurize_dataset

    root = tmp_path_factory.mktemp("stores")
    return featurize_dataset(demo_spec, root, executor="local", progress=False, log=lambda m: None).store


def write_spec(path: Path, body: str) -> Path:
    path.write_text(body)
    return path


CENSORED_SPEC = """
name = "aid1445_censored"
description = "AID 1445 with its weakest 40% of pXC50 values replaced by a bound, as PubChem reports inactives"
molecule_key = "id"
[source]
kind = "local"
[source.files.dr]
path = "aid1445_censored.csv"
smiles_column = "smiles"
id_column = "CID"
[[source.labels]]
fidelity = "lf"
target = "SD"
file = "dr"
column = "SD"
[[source.labels]]
fidelity = "hf"
target = "DR"
file = "dr"
column = "DR"
qualifier_column = "DR_qualifier"
censored = "censored"
[split]
seeds = [11, 12]
"""


@pytest.fixture(scope="session")
def censored_store(tmp_path_factory):
    """The demo molecules with the weakest 40% of HF values censored: value = the 40th-percentile pXC50
    with qualifier '<' (the true pXC50 lies below), like PubChem's '>' on the IC50 of an inactive."""
    import numpy as np
    import polars as pl

    from mfray.data.specs import load_spec
    from mfray.run.featurize import featurize_dataset

    d = pl.read_parquet(REPO / "data" / "aid1445" / "aid1445.parquet", columns=["CID", "smiles", "SD", "DR"])
    floor = float(np.quantile(d["DR"].to_numpy(), 0.4))
    d = d.with_columns(
        DR_qualifier=pl.when(pl.col("DR") < floor).then(pl.lit("<")).otherwise(pl.lit("=")),
        DR=pl.when(pl.col("DR") < floor).then(pl.lit(floor)).otherwise(pl.col("DR")),
        CID=pl.col("CID").cast(pl.Int64),
    )
    folder = tmp_path_factory.mktemp("censored")
    d.write_csv(folder / "aid1445_censored.csv")
    spec = write_spec(folder / "aid1445_censored.toml", CENSORED_SPEC)
    return featurize_dataset(load_spec(spec), folder / "stores", executor="local", progress=False,
                             log=lambda m: None).store
