"""A study's LF outputs: which molecules get them, and that size-sorted batches put every row back."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest


@pytest.fixture(scope="module")
def half_store(aid1445_variant):
    """The demo molecules, DR kept for every other one: an LF set twice the HF set."""
    return aid1445_variant(
        "aid1445_half_hf",
        lambda d: d.with_columns(pl.when(pl.int_range(pl.len()) % 2 == 0).then(pl.col("DR")).otherwise(None).alias("DR")),
        [1])


@pytest.fixture(scope="module")
def lf_ckpt(half_store, tmp_path_factory):
    from mfray.train.loop import TrainConfig
    from mfray.train.task import LFRunConfig, pretrain_lf

    cfg = LFRunConfig(readout="set_transformer", max_molecules=None,
                      model={"hidden_dim": 16, "latent_dim": 8,
                             "readout_kwargs": {"hidden_dim": 16, "num_heads": 2, "num_seeds": 2, "out_dim": 8}},
                      train=TrainConfig(lr=1e-3, batch_size=64, max_epochs=1, patience=0, precision="32"))
    path, _ = pretrain_lf(half_store, cfg, tmp_path_factory.mktemp("lf"))
    return path


def test_outputs_cover_the_hf_molecules_only(half_store, lf_ckpt, tmp_path):
    from mfray.run.study.trial import export_lf_outputs

    n = export_lf_outputs(str(lf_ckpt), str(half_store.path), str(tmp_path / "out.parquet"))
    out = pl.read_parquet(tmp_path / "out.parquet")
    labels = half_store.table("task_labels")
    hf = set(labels.filter(pl.col("fidelity") == "hf")["mol_id"].to_list())
    lf = set(labels.filter(pl.col("fidelity") == "lf")["mol_id"].to_list())
    assert len(lf) > 1.8 * len(hf)
    assert n == out.height == len(hf) and set(out["mol_id"].to_list()) == hf


def test_size_sorted_batches_give_each_molecule_its_own_outputs(half_store, lf_ckpt):
    from mfray.models.checkpoint import load_model
    from mfray.train.loop import predict
    from mfray.train.task import _datasets, embed_store

    ids = half_store.table("molecules")["mol_id"].to_numpy()[:200]
    table = embed_store(lf_ckpt, half_store, ids)
    assert table.column("mol_id").to_numpy().tolist() == ids.tolist()  # in the order asked
    model, _ = load_model(lf_ckpt)
    # one molecule at a time: no batching, no sorting
    for i in (0, 57, 199):
        _, emb = predict(model, _datasets(half_store, model.spec, ids[i:i + 1], None, None), with_embeddings=True)
        got = np.asarray(table.column("embedding")[i].as_py(), dtype=np.float32)
        np.testing.assert_allclose(got, emb[0], rtol=1e-4, atol=1e-5)
