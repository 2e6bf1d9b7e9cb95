"""The graph store built from the bundled demo data."""

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from rdkit import Chem

from mfray.data.specs import load_spec
from mfray.run.featurize import featurize_dataset


def test_demo_store_counts_and_tables(demo_store):
    c = demo_store.manifest["counts"]
    assert c["rows_read"] == c["rows_stored"] == c["molecules"] == 655
    assert c["rows_quarantined"] == 0
    assert c["labelled_molecules"] == {"hf/DR": 655, "lf/SD": 655}
    mols = demo_store.table("molecules")
    assert mols["mol_id"].n_unique() == 655
    graphs = demo_store.graphs()
    assert graphs.num_rows == 655
    assert graphs.schema.field("atom_z").type == pa.list_(pa.uint8())
    # about 0.1 kB per molecule, not kilobytes of one-hot floats
    assert demo_store.manifest["bytes_per_molecule"] < 150


def test_artifacts_are_fixed_size_float32(demo_store):
    art = demo_store.table("artifacts")
    assert art.height == 655
    arrow = art.to_arrow()
    assert arrow.schema.field("STEmbeddings").type == pa.list_(pa.float32(), 256)
    assert arrow.schema.field("SumEmbeddings").type == pa.list_(pa.float32(), 50)
    assert art["STPredSD"].null_count() == 0


def test_graphs_match_rdkit_and_are_returned_in_the_order_asked(demo_store):
    mols = demo_store.table("molecules").sample(5, seed=1)
    ids = mols["mol_id"].to_numpy()[::-1]
    g = demo_store.graphs(ids)
    assert g.column("mol_id").to_numpy().tolist() == ids.tolist()
    smiles = dict(zip(mols["mol_id"].to_list(), mols["smiles"].to_list()))
    for row in g.to_pylist():
        m = Chem.MolFromSmiles(smiles[row["mol_id"]])
        assert row["n_atoms"] == m.GetNumAtoms()
        assert row["atom_z"] == [a.GetAtomicNum() for a in m.GetAtoms()]
        assert row["atom_hs"] == [a.GetTotalNumHs() for a in m.GetAtoms()]
        pairs = sorted(tuple(sorted(row["edge_index"][i : i + 2])) for i in range(0, len(row["edge_index"]), 2))
        assert pairs == sorted(tuple(sorted((b.GetBeginAtomIdx(), b.GetEndAtomIdx()))) for b in m.GetBonds())


def test_splits_are_stored_by_id_for_every_seed(demo_store, demo_spec):
    splits = demo_store.table("splits")
    assert sorted(splits["seed"].unique().to_list()) == sorted(demo_spec.split.seeds)
    parts = demo_store.split_ids(demo_spec.split.seeds[0])
    assert [len(parts[f]) for f in ("train", "valid", "test")] == [524, 65, 66]
    assert not set(parts["train"]) & set(parts["test"])
    with pytest.raises(Exception, match="no split for seed 12345"):
        demo_store.split_ids(12345)


def test_second_run_is_a_cache_hit_and_changes_invalidate(demo_spec, tmp_path):
    first = featurize_dataset(demo_spec, tmp_path, executor="local", progress=False, log=lambda m: None)
    again = featurize_dataset(demo_spec, tmp_path, executor="local", progress=False, log=lambda m: None)
    assert not first.cache_hit and again.cache_hit
    assert again.store.path == first.store.path
    other = demo_spec.model_copy(update={"standardize": demo_spec.standardize.model_copy(update={"preset": "minimal"})})
    third = featurize_dataset(other, tmp_path, executor="local", progress=False, log=lambda m: None)
    assert not third.cache_hit and third.store.path != first.store.path
    # a featuriser preset is applied at collate time: it does not need a new store
    paper = demo_spec.model_copy(update={"featurizer": demo_spec.featurizer.model_copy(update={"preset": "paper"})})
    assert featurize_dataset(paper, tmp_path, executor="local", progress=False, log=lambda m: None).cache_hit


def test_labels_keep_provenance(demo_store):
    labels = demo_store.table("labels")
    assert labels.height == 2 * 655
    assert set(labels.columns) >= {"mol_id", "fidelity", "target", "value", "file", "file_row", "source_id"}
    dr = demo_store.table("task_labels").filter(pl.col("fidelity") == "hf")["value"]
    assert 3 < dr.mean() < 7  # pXC50


def test_store_carries_its_resolved_spec(demo_store, demo_spec):
    import tomllib

    from mfray.data.specs import parse_spec

    data = tomllib.loads((demo_store.path / "spec.toml").read_text())
    assert parse_spec(data) == demo_spec.model_copy(update={"spec_path": None})
