"""Issue 13, class 1: one molecule never takes a featurisation run down.

A molecule that crashes RDKit's process (a 20,000-atom chain overflows the SMILES writer's stack) is
refused up front by the declared atom limit; and when a molecule does crash a Ray Data worker anyway
(here: the limit is raised past the crash point on purpose), the task is retried a bounded number of
times, then its shard is featurised in separate processes, bisected down to the molecule, which is
quarantined with a reason while every other row is stored.
"""

from __future__ import annotations

import subprocess
import sys

import polars as pl
import pytest

from mfray.data.specs import load_spec
from mfray.run.featurize import featurize_dataset

pytestmark = pytest.mark.faults

CHAIN = "C" * 20_000

SPEC = """
name = "{name}"
[source]
kind = "local"
[source.files.main]
path = "mols.csv"
smiles_column = "smiles"
id_column = "id"
[[source.labels]]
fidelity = "hf"
target = "y"
file = "main"
column = "y"
[split]
seeds = [1]
"""


@pytest.fixture
def chain_data(tmp_path):
    rows = ["id,smiles,y", "1,CCO,1", "2,CCN,2", f"3,{CHAIN},3", "4,CCC,4", "5,c1ccccc1,5", "6,CCCl,6"]
    (tmp_path / "mols.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "chain.toml").write_text(SPEC.format(name="chain"))
    return tmp_path


def test_a_molecule_over_the_atom_limit_is_quarantined_not_a_segfault(chain_data):
    # a child process: if the limit were gone, RDKit would kill this process, not the test run
    proc = subprocess.run([sys.executable, "-m", "mfray", "featurize", str(chain_data / "chain.toml"),
                           "--out", str(chain_data / "stores"), "--local"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    q = pl.read_parquet(next((chain_data / "stores").glob("chain/*/quarantine.parquet")))
    assert q["code"].to_list() == ["too_large"]
    assert "20,000 atoms > 4,000" in q["reason"][0]


@pytest.mark.ray
def test_a_crashing_molecule_in_ray_data_is_bisected_out_and_quarantined(chain_data, monkeypatch):
    import ray

    # past the declared limit on purpose, so that the 20,000-atom chain really crashes its worker
    monkeypatch.setenv("MFRAY_MAX_ATOMS", "100000")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"MFRAY_MAX_ATOMS": "100000", "OMP_NUM_THREADS": "1"}})
    logs: list[str] = []
    try:
        res = featurize_dataset(load_spec(chain_data / "chain.toml"), chain_data / "stores", executor="ray",
                                num_workers=2, progress=False, log=logs.append, ray_init=lambda: None)
    finally:
        ray.shutdown()
    counts = res.store.manifest["counts"]
    assert counts["rows_read"] == 6 and counts["rows_stored"] == 5 and counts["rows_quarantined"] == 1
    q = res.store.table("quarantine")
    assert q["code"].to_list() == ["featurizer_crash"]
    assert q["file_row"].to_list() == [3]
    assert "process died on this molecule (signal 11" in q["reason"][0]
    assert sorted(res.store.table("molecules")["source_id"].to_list()) == ["1", "2", "4", "5", "6"]
    assert any("failed in Ray Data after 1 retry" in m for m in logs), logs
    assert any("1 molecule(s) crashed the featuriser" in m for m in logs), logs
