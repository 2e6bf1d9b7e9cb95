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


def aid1445_spec(name: str, seeds: list[int], hf_qualifier: bool = False) -> str:
    """A local spec over ``<name>.csv`` holding the demo molecules' CID, smiles, SD (LF) and DR (HF, with
    a ``DR_qualifier`` column if ``hf_qualifier``: censored labels)."""
    qualifier = 'qualifier_column = "DR_qualifier"\ncensored = "censored"\n' if hf_qualifier else ""
    return f"""
name = "{name}"
molecule_key = "id"
[source]
kind = "local"
[source.files.dr]
path = "{name}.csv"
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
{qualifier}[split]
seeds = {list(seeds)}
"""


@pytest.fixture(scope="session")
def aid1445_variant(tmp_path_factory):
    """``make(name, transform, seeds, hf_qualifier=False)``: the demo molecules (CID, smiles, SD, DR) passed
    through ``transform`` (a polars frame -> frame), written as ``<name>.csv`` with :func:`aid1445_spec`,
    featurised in-process; returns the store."""
    import polars as pl

    from mfray.data.specs import load_spec
    from mfray.run.featurize import featurize_dataset

    def make(name: str, transform, seeds: list[int], hf_qualifier: bool = False):
        d = pl.read_parquet(REPO / "data" / "aid1445" / "aid1445.parquet", columns=["CID", "smiles", "SD", "DR"])
        d = transform(d)
        folder = tmp_path_factory.mktemp(name)
        d.write_csv(folder / f"{name}.csv")
        spec = write_spec(folder / f"{name}.toml", aid1445_spec(name, seeds, hf_qualifier))
        return featurize_dataset(load_spec(spec), folder / "stores", executor="local", progress=False,
                                 log=lambda m: None).store

    return make


@pytest.fixture(scope="session")
def censored_store(aid1445_variant):
    """The demo molecules with the weakest 40% of HF values censored: value = the 40th-percentile pXC50
    with qualifier '<' (the true pXC50 lies below), like PubChem's '>' on the IC50 of an inactive."""
    import numpy as np
    import polars as pl

    def censor(d):
        floor = float(np.quantile(d["DR"].to_numpy(), 0.4))
        return d.with_columns(
            DR_qualifier=pl.when(pl.col("DR") < floor).then(pl.lit("<")).otherwise(pl.lit("=")),
            DR=pl.when(pl.col("DR") < floor).then(pl.lit(floor)).otherwise(pl.col("DR")),
            CID=pl.col("CID").cast(pl.Int64),
        )

    return aid1445_variant("aid1445_censored", censor, [11, 12], hf_qualifier=True)
