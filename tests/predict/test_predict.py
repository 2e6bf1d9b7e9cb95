"""`mfray predict`: a model scores new molecules exactly as it scored its own in training, for every
strategy; rejected rows are kept with reasons; the counts add up; nothing scored is an error."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from mfray.cli.main import main

SMALL = {"hidden_dim": 16, "latent_dim": 4}


@pytest.fixture(scope="module")
def lf_ckpt(demo_store, tmp_path_factory):
    from mfray.train.loop import TrainConfig
    from mfray.train.task import LFRunConfig, pretrain_lf

    cfg = LFRunConfig(readout="set_transformer", model={**SMALL, "readout_kwargs": {"hidden_dim": 16, "num_heads": 2,
                                                                                   "num_seeds": 2, "out_dim": 8}},
                      train=TrainConfig(lr=1e-3, batch_size=128, max_epochs=2, patience=0, seed=0))
    path, _ = pretrain_lf(demo_store, cfg, tmp_path_factory.mktemp("lf"))
    return str(path)


@pytest.fixture(scope="module")
def screen(demo_store, tmp_path_factory):
    """The demo molecules as a user's file: CID, SMILES (as given), measured SD; plus a broken row."""
    mols = demo_store.table("molecules").select("mol_id", "input_smiles", "source_id")
    sd = demo_store.table("task_labels").filter(pl.col("fidelity") == "lf").select("mol_id", pl.col("value").alias("SD"))
    d = mols.join(sd, on="mol_id", how="left").sort("mol_id")
    d = d.select(pl.col("source_id").alias("CID"), pl.col("input_smiles").alias("SMILES"),
                 pl.col("SD").cast(pl.String), "mol_id")
    broken = pl.DataFrame({"CID": ["x1"], "SMILES": ["C1CC"], "SD": ["40"], "mol_id": [0]})
    d = pl.concat([d.head(300), broken, d.slice(300)])
    path = tmp_path_factory.mktemp("screen") / "screen.csv"
    d.drop("mol_id").write_csv(path)
    return path, d


def _train(demo_store, strategy, out, lf=None, setting="transductive", scale_aux=False):
    from mfray.data.tasks import load_task
    from mfray.train.loop import TrainConfig
    from mfray.train.task import HFRunConfig, train_hf

    task = load_task(demo_store, 946067).for_setting(setting)
    cfg = HFRunConfig(strategy=strategy, model=dict(SMALL) if strategy not in ("tune_readout", "tune_vgae") else {},
                      train=TrainConfig(lr=1e-3, batch_size=64, max_epochs=2, patience=0, seed=1, scale_aux=scale_aux),
                      lf_checkpoint=lf)
    train_hf(task, cfg, out)
    return out


@pytest.mark.parametrize("strategy,setting,scale_aux", [
    ("base", "transductive", False), ("label", "transductive", False), ("label", "transductive", True),
    ("hybrid_label", "transductive", False), ("predicted_label", "inductive", False),
    ("embeddings", "inductive", True), ("delta", "transductive", False), ("delta", "inductive", False),
    ("tune_readout", "transductive", False)])
def test_predict_reproduces_training_predictions(demo_store, lf_ckpt, screen, tmp_path, strategy, setting, scale_aux):
    from mfray.predict import load_predictor, predict_file

    out = _train(demo_store, strategy, tmp_path / "run", lf_ckpt, setting, scale_aux)
    path, frame = screen
    pred = load_predictor(out)
    summary = predict_file(pred, path, tmp_path / "preds.csv", smiles_column="SMILES", executor="local", chunk_rows=128)
    assert summary.n_input == frame.height and summary.n_scored + summary.n_rejected == summary.n_input
    assert summary.n_rejected == 1 and summary.rejected_by == {"unparsable_smiles": 1}
    rej = pl.read_csv(summary.rejected_file)
    assert rej["row"].to_list() == [301] and rej["CID"].to_list() == ["x1"]

    got = pl.read_csv(tmp_path / "preds.csv", schema_overrides={"CID": pl.String})
    assert got.columns[:3] == ["CID", "SMILES", "SD"] and got.height == frame.height - 1
    assert got["CID"].to_list() == [c for c in frame["CID"].to_list() if c != "x1"]  # input order
    ref = pl.read_parquet(out / "predictions.parquet").join(frame.select("mol_id", "CID"), on="mol_id")
    both = ref.join(got.select("CID", "prediction"), on="CID")
    assert both.height == ref.height == demo_store.manifest["counts"]["molecules"]
    np.testing.assert_allclose(both["prediction"].to_numpy(), both["y_pred"].to_numpy(), rtol=1e-4, atol=1e-4)


def test_hybrid_label_uses_the_lf_model_where_no_value_is_given(demo_store, lf_ckpt, screen, tmp_path):
    from mfray.predict import load_predictor, predict_file

    out = _train(demo_store, "hybrid_label", tmp_path / "run", lf_ckpt)
    path, frame = screen
    d = pl.read_csv(path, schema_overrides={"SD": pl.String, "CID": pl.String})
    d = d.with_columns(pl.when(pl.int_range(pl.len()) % 3 == 0).then(None).otherwise(pl.col("SD")).alias("SD"))
    d.write_csv(tmp_path / "mixed.csv")
    summary = predict_file(load_predictor(out), tmp_path / "mixed.csv", tmp_path / "p.parquet", executor="local")
    got = pl.read_parquet(tmp_path / "p.parquet")
    assert summary.n_scored == got.height == d.height - 1
    measured = got["SD"].is_not_null()
    assert (got.filter(measured)["lf_source"] == "measured").all()
    assert (got.filter(~measured)["lf_source"] == "predicted").all() and (~measured).sum() > 100
    assert got["prediction"].is_finite().all()


def test_lf_model_predicts_its_own_target(demo_store, lf_ckpt, screen, tmp_path):
    from mfray.predict import load_predictor, predict_file
    from mfray.train.task import embed_store

    path, frame = screen
    predict_file(load_predictor(lf_ckpt), path, tmp_path / "lf.parquet", embeddings=True, executor="local")
    got = pl.read_parquet(tmp_path / "lf.parquet").join(frame.select("CID", "mol_id"), on="CID")
    ref = pl.from_arrow(embed_store(lf_ckpt, demo_store)).join(got.select("mol_id", pl.col("prediction").alias("p"),
                                                                         pl.col("embedding").alias("e")), on="mol_id")
    np.testing.assert_allclose(ref["p"].to_numpy(), ref["prediction"].to_numpy(), rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(np.stack(ref["e"].to_numpy()), np.stack(ref["embedding"].to_numpy()), atol=1e-3)


def test_cli_predict_and_its_errors(demo_store, lf_ckpt, screen, tmp_path, capsys):
    out = _train(demo_store, "label", tmp_path / "label", lf_ckpt)
    path, frame = screen
    preds = tmp_path / "preds.csv"
    assert main(["predict", str(out), str(path), "--out", str(preds), "--lf-column", "SD", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert f"scored {frame.height - 1:,} of {frame.height:,} rows" in text and "rejected 1 rows (unparsable_smiles 1)" in text
    # the label model needs the measured LF value: a file without it says which column to name
    pl.read_csv(path, infer_schema=False).drop("SD").write_csv(tmp_path / "nolf.csv")
    assert main(["predict", str(out), str(tmp_path / "nolf.csv"), "--no-progress"]) == 2
    assert "--lf-column" in capsys.readouterr().err
    # every row rejected: nothing scored is an error, and the rows are kept with their reasons
    pl.DataFrame({"smiles": ["C1CC", "xx"], "SD": ["1", "2"]}).write_csv(tmp_path / "bad.csv")
    assert main(["predict", str(out), str(tmp_path / "bad.csv"), "--out", str(tmp_path / "b.csv"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "no molecule could be scored: 2 of 2 rows rejected" in err and not (tmp_path / "b.csv").exists()
    assert pl.read_csv(tmp_path / "b.rejected.csv").height == 2
    with pytest.raises(SystemExit) as e:  # argparse: a usage error, exit 2
        main(["predict", str(out), str(path), "--batch-size", "0"])
    assert e.value.code == 2 and "argument --batch-size: 0: give at least 1" in capsys.readouterr().err
    for bad, needle in ((["--smiles-column", "nope"], "--smiles-column 'nope' is not a column"),
                        (["--out", str(tmp_path / "x.txt")], "give a .csv or .parquet"),
                        (["--lf-column", "nope"], "--lf-column 'nope' is not a column")):
        assert main(["predict", str(out), str(path), "--no-progress", *bad]) == 2, bad
        assert needle in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "missing"), str(path)]) == 2
    assert "model does not exist" in capsys.readouterr().err
    # a model that reads an LF model's outputs, whose LF model moved away
    emb = _train(demo_store, "embeddings", tmp_path / "emb", lf_ckpt)
    assert main(["predict", str(emb), str(path), "--lf-checkpoint", str(tmp_path / "gone.ckpt"), "--no-progress"]) == 2
    assert "checkpoint does not exist" in capsys.readouterr().err


@pytest.mark.ray
def test_ray_data_scoring_matches_in_process(demo_store, lf_ckpt, screen, tmp_path):
    """The Ray Data path (actors, the model in the object store once, results in input order) writes what
    the in-process loop writes."""
    import ray

    from mfray.predict import load_predictor
    from mfray.run.predict import predict_file
    from mfray.run.runtime import ensure_ray

    out = _train(demo_store, "hybrid_label", tmp_path / "run", lf_ckpt)
    path, frame = screen
    pred = load_predictor(out)
    ensure_ray(num_cpus=2, log_to_driver=False)
    try:
        a = predict_file(pred, path, tmp_path / "ray.parquet", executor="ray", workers=2, chunk_rows=100, embeddings=True)
    finally:
        ray.shutdown()
    b = predict_file(pred, path, tmp_path / "local.parquet", executor="local", chunk_rows=100, embeddings=True)
    assert (a.executor, b.executor) == ("ray", "local")
    assert (a.n_input, a.n_scored, a.n_rejected) == (b.n_input, b.n_scored, b.n_rejected) == (frame.height, frame.height - 1, 1)
    ra, rb = pl.read_parquet(tmp_path / "ray.parquet"), pl.read_parquet(tmp_path / "local.parquet")
    assert ra.columns == rb.columns and ra["CID"].to_list() == rb["CID"].to_list()
    np.testing.assert_allclose(ra["prediction"].to_numpy(), rb["prediction"].to_numpy(), atol=1e-5)
    assert ra["lf_source"].to_list() == rb["lf_source"].to_list()
    assert pl.read_csv(a.rejected_file)["row"].to_list() == [301]
