"""Every shipped dataset spec loads; the bundled demo pair featurises with the counts its SOURCE.txt gives."""

from __future__ import annotations

import pytest

from mfray.data.specs import load_spec


def test_every_shipped_spec_loads(repo):
    paths = sorted((repo / "data_specs").rglob("*.toml"))
    assert len(paths) > 80
    for p in paths:
        assert load_spec(p).name, p


def test_demo_pair_is_a_real_screen_sample(repo, tmp_path):
    from mfray.run.featurize import featurize_dataset

    store = featurize_dataset(load_spec(repo / "data_specs" / "fatty_acid_synthase_demo.toml"), tmp_path,
                              executor="local", progress=False, log=lambda m: None).store
    c = store.manifest["counts"]
    assert c["rows_read"] == 20010 and c["rows_read"] == c["rows_stored"] + c["rows_quarantined"]
    labels = store.table("task_labels")
    per = {f: labels.filter(labels["fidelity"] == f).height for f in ("lf", "hf")}
    assert per["lf"] > 19000 and 990 <= per["hf"] <= 1010
