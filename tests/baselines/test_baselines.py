"""Classical baselines on the bundled AID 1445 demo (featurised once per session by conftest)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import tomllib

import numpy as np
import polars as pl
import pytest

from mfray.baselines import BASELINES, build_features, run_baseline
from mfray.baselines.models import RandomForestBaseline
from mfray.data.tasks import load_task
from mfray.utils.errors import DataError

SEED = 946067


@pytest.fixture(scope="module")
def task(demo_store):
    return load_task(demo_store, SEED)


@pytest.fixture(scope="module")
def rf_morgan(task):
    return run_baseline(task, "rf", features="morgan", grid="fast", n_jobs=2)


def test_registry_holds_the_three_baselines():
    assert BASELINES.names() == ["lf_linear", "rf", "svr"]
    with pytest.raises(ValueError, match="no grid 'huge'; choices"):
        BASELINES.build("rf").configs("huge")
    with pytest.raises(ValueError, match=r"unknown SVR parameter\(s\) \['gama'\]"):
        BASELINES.build("svr").configs({"gama": [1.0]})
    assert len(BASELINES.build("rf").configs("reference")) == 360
    assert len(BASELINES.build("svr").configs("reference")) == 200


def test_lf_linear_is_a_straight_line_on_the_measured_label(task):
    r = run_baseline(task, "lf_linear")
    assert r.features is None and r.aux_key == "lf_label" and r.best_params == {}
    assert r.metrics["test"]["r2"] > 0.5  # 0.74 on this seed
    slope, intercept = np.polyfit(task.train.aux["lf_label"][:, 0].astype(np.float64), task.train.y[:, 0], 1)
    assert r.search["slope"] == pytest.approx(slope, rel=1e-6)
    assert r.search["intercept"] == pytest.approx(intercept, rel=1e-6)
    np.testing.assert_allclose(r.test_predictions.y_pred[:, 0], intercept + slope * task.test.aux["lf_label"][:, 0],
                               rtol=1e-5)
    with pytest.raises(ValueError, match="takes no augmentation"):
        run_baseline(task, "lf_linear", augment="label")


def test_rf_fast_grid_selects_on_the_validation_fold(task, rf_morgan):
    r = rf_morgan
    assert r.features == "morgan" and r.augment is None and r.grid == "fast"
    assert r.best_params in BASELINES.build("rf").configs("fast")
    # the reported valid MSE is the selected model's, and the minimum over the grid (search.valid_mse)
    assert r.metrics["valid"]["rmse"] ** 2 == pytest.approx(r.valid_mse, rel=1e-9)
    assert r.search["configs"] == 4 and r.search["forests_fitted"] == 2  # n_estimators 25 reads the 50-tree forest
    assert set(r.metrics) == {"train", "valid", "test"}
    assert r.metrics["train"]["r2"] > r.metrics["test"]["r2"]
    np.testing.assert_array_equal(r.test_predictions.mol_ids, task.test.mol_ids)
    assert r.test_predictions.y_pred.shape == (len(task.test), 1)


def test_rf_shared_forest_search_equals_fitting_every_configuration():
    """The exact shortcuts of the RF search (prefix trees, effective min_samples_split, depth reuse)
    against a plain fit of each configuration, dense and sparse."""
    from sklearn.ensemble import RandomForestRegressor

    rng = np.random.default_rng(0)
    X = (rng.random((160, 40)) < 0.08).astype(np.float32)
    y = X[:, :5].sum(1) + 0.1 * rng.standard_normal(160)
    Xt, yt, Xv, yv = X[:120], y[:120], X[120:], y[120:]
    grid = {"n_estimators": [3, 8], "max_depth": [None, 500, 2], "min_samples_leaf": [1, 4], "min_samples_split": [2, 5]}
    configs = RandomForestBaseline().configs(grid)
    for sparse in (False, True):
        found = RandomForestBaseline(sparse=sparse).search(Xt, yt, Xv, yv, configs, seed=3)
        # 12 tree shapes; (leaf 4, split 2) == (leaf 4, split 5) and max_depth 500 == None: 6 forests
        assert found.info["forests_fitted"] == 6 and found.info["forests_reused"] == 3
        for c, mse in zip(configs, found.valid_mse, strict=True):
            direct = RandomForestRegressor(**c, random_state=3).fit(Xt, yt).predict(Xv)
            assert mse == pytest.approx(np.mean((direct - yv) ** 2), rel=1e-9, abs=1e-12), c


def test_augment_label_beats_structure_alone(task, rf_morgan):
    r = run_baseline(task, "rf", features="morgan", augment="label", grid="fast", n_jobs=2)
    assert r.aux_key == "lf_label"
    assert r.metrics["test"]["r2"] > rf_morgan.metrics["test"]["r2"] + 0.2  # 0.68 against 0.03


def test_augmented_features_are_standardised_on_train(task):
    fs = build_features(task, "morgan", "artifact:STEmbeddings")
    assert (fs.descriptor_width, fs.aux_width, fs.width) == (2048, 256, 2304)
    aux = fs.X["train"][:, 2048:]
    np.testing.assert_allclose(aux.mean(0), 0, atol=1e-4)
    assert set(np.unique(fs.X["valid"][:, :2048])) <= {0.0, 1.0}  # bits are left as they are


def test_svr_predicted_label_runs(task):
    r = run_baseline(task, "svr", augment="predicted_label", grid="fast")
    assert r.aux_key == "artifact:STPredSD" and set(r.best_params) == {"C", "gamma"}
    assert r.metrics["test"]["r2"] > 0.3


def test_a_missing_aux_input_is_a_clear_error(task):
    with pytest.raises(DataError, match=r"no aux input 'artifact:Nope'; available: \[.*'lf_label'"):
        run_baseline(task, "rf", augment="embeddings", aux_key="artifact:Nope", grid="fast")
    holes = {**task.valid.aux, "lf_label": task.valid.aux["lf_label"].copy()}
    holes["lf_label"][[3, 7]] = np.nan
    broken = dataclasses.replace(task, folds={**task.folds, "valid": dataclasses.replace(task.valid, aux=holes)})
    with pytest.raises(DataError, match=r"'lf_label' is missing \(NaN\) for 2 of 65 molecules of the valid fold"):
        run_baseline(broken, "rf", augment="label", grid="fast")
    with pytest.raises(ValueError, match="without an augmentation"):
        run_baseline(task, "rf", aux_key="lf_label", grid="fast")


def test_cli_writes_metrics_predictions_and_config(demo_store, tmp_path, capsys):
    from mfray.cli import baseline as cmd

    parser = argparse.ArgumentParser()
    cmd.add_parser(parser.add_subparsers())
    out = tmp_path / "lf"
    args = parser.parse_args(["baseline", "aid1445", "--model", "lf_linear", "--out", str(out),
                              "--store-root", str(demo_store.path.parents[1])])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "mean" in printed and "R2 " in printed and "+-" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    seeds = [r["split_seed"] for r in metrics["per_seed"]]
    assert seeds == [946067, 721263, 691383, 374914, 724299]
    assert set(metrics["summary"]["test"]) == {"mae", "rmse", "r2", "pearson"}
    preds = pl.read_parquet(out / "predictions.parquet")
    assert preds.columns == ["mol_id", "seed", "y_true", "y_pred"]
    assert preds.height == sum(r["n_test"] for r in metrics["per_seed"])
    config = tomllib.loads((out / "config.toml").read_text())
    assert config["baseline"]["model"] == "lf_linear" and config["baseline"]["aux_key"] == "lf_label"
    assert config["dataset"]["split_seeds"] == seeds and config["dataset"]["store"] == str(demo_store.path)

    args = parser.parse_args(["baseline", "aid1445", "--model", "svr", "--augment", "label", "--grid", "fast",
                              "--seed", str(SEED), "--out", str(tmp_path / "svr"),
                              "--store-root", str(demo_store.path.parents[1])])
    assert args.func(args) == 0
    config = tomllib.loads((tmp_path / "svr" / "config.toml").read_text())
    assert config["baseline"]["features"] == "morgan" and config["baseline"]["grid_values"]["C"] == [1.0, 10.0]
