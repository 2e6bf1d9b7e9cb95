"""Featurise a real MF-PCBA HF file end to end (skips without ../shared/data)."""

import polars as pl

from mfray.data.catalog import resolve_spec
from mfray.run.featurize import featurize_dataset


def test_serine_hf_counts_add_up(shared_data, tmp_path):
    spec = resolve_spec("serine_hf")
    store = featurize_dataset(spec, tmp_path, executor="local", progress=False, log=lambda m: None).store
    c = store.manifest["counts"]
    n_lines = sum(1 for _ in open(shared_data / "mfpcba" / "serine__SD873__HF1431.csv")) - 1
    assert c["rows_read"] == n_lines
    assert c["rows_stored"] + c["rows_quarantined"] == c["rows_read"]
    assert c["labelled_molecules"]["hf/DR"] > 1000
    q = store.table("quarantine")
    assert q.filter(pl.col("reason").is_null()).height == 0
    tl = store.table("task_labels")
    hf = tl.filter(pl.col("fidelity") == "hf")["value"]
    assert 3 < hf.min() and hf.max() < 11  # pXC50
    split = store.split_ids(spec.split.seeds[0])
    assert len(split["train"]) + len(split["valid"]) + len(split["test"]) == c["labelled_molecules"]["hf/DR"]
