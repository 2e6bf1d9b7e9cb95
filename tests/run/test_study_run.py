"""A tiny study end to end on a local Ray: searches, retries, concurrency, refits, idempotent re-run."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl
import pytest

from mfray.results.store import ResultsStore
from mfray.run.study import make_plan, parse_study

pytestmark = pytest.mark.ray

TINY = {
    "name": "tiny", "tasks": ["aid1445"], "strategies": ["base", "label"], "baselines": ["lf_linear"],
    "max_seeds": 2, "train": {"max_epochs": 3, "patience": 0, "batch_size": 64},
    "model": {"hidden_dim": 16, "latent_dim": 8, "head_hidden_dim": 16},
    "search": {"num_samples": 3, "max_concurrent_trials": 1, "grace_period": 1, "n_startup_trials": 2,
               "checkpoint_every": 2,
               "space": {"readout": ["sum", "mean"], "lr": {"low": 1e-4, "high": 1e-2, "log": True}}},
    "failure": {"trial_retries": 1},
}


@pytest.fixture(scope="module")
def ray_local(tmp_path_factory):
    import ray

    from mfray.run.runtime import ensure_ray
    from mfray.run.study.trial import FAULT_ENV

    if ray.is_initialized():
        ray.shutdown()
    # Ray workers inherit the environment of the local Ray this process starts: the first attempt
    # of trial 1 of every search raises, exercising the retry policy
    os.environ[FAULT_ENV] = "1"
    ensure_ray(num_cpus=2, log_to_driver=False)
    yield
    ray.shutdown()
    os.environ.pop(FAULT_ENV, None)


def test_tiny_study(ray_local, demo_store, tmp_path):
    from mfray.run.study.runner import run_study
    from mfray.run.study.status import study_status

    root = str(Path(demo_store.path).parents[1])
    db = tmp_path / "optuna.db"  # Optuna RDB storage: what optuna-dashboard watches
    spec = {**TINY, "search": {**TINY["search"], "storage": str(db)}}
    plan = make_plan(parse_study(spec), str(tmp_path / "storage"), store_root=root)
    assert plan.tasks[0].store_path == str(demo_store.path)
    out = run_study(plan, log=lambda m: None)
    assert out.counts["search"] == {"ran": 2} and out.counts["runs"] == {"ran": 6}, out.counts
    assert out.counts["selection"] == {"ran": 2}, out.counts  # one selected run per seed

    for s in plan.searches:
        trials = s.trials.read_json()["trials"]
        assert len(trials) == 3 and all(t["status"] == "finished" for t in trials)
        # the injected fault hit the first attempt of trial 1; the retry finished it
        assert sorted(t["attempts"] for t in trials) == [1, 1, 2]
        # max_concurrent_trials = 1 with 2 CPUs free: no two trials overlapped in time
        spans = sorted((t["t_start"], t["t_end"]) for t in trials)
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), spans
        best = s.best.read_json()
        assert best["valid_loss"] == min(t["valid_loss"] for t in trials)
        # trials that reached epoch 2 left their fit state as a Tune checkpoint (what a restore resumes)
        full = [t for t in trials if t["epochs"] >= 2]
        ckpts = list(Path(plan.ray_storage.uri).glob(f"search-{s.key}/hf_trial_*/checkpoint_*/fit_state.pt"))
        assert full and len(ckpts) == len(full)
        assert best["config"]["readout"] in ("sum", "mean")

    import optuna

    summaries = optuna.get_all_study_summaries(storage=f"sqlite:///{db}")
    assert sorted(x.study_name.split(".")[3] for x in summaries) == ["base", "label"]
    assert all(x.n_trials == 3 for x in summaries)

    df = ResultsStore(plan.results.uri).read(study="tiny")
    runs = df.select("run_key", "strategy", "split_seed").unique()
    assert runs.height == 8 and runs.group_by("strategy").len().sort("strategy")["len"].to_list() == [2, 2, 2, 2]
    test_r2 = df.filter((df["fold"] == "test") & (df["metric"] == "r2"))
    assert test_r2.height == 8 and test_r2["value"].is_finite().all()
    # the selection: the method with the lowest mean valid rmse over the seeds, its test scores copied
    valid = (df.filter((pl.col("fold") == "valid") & (pl.col("metric") == "rmse") & (pl.col("strategy") != "selected"))
             .group_by("strategy").agg(pl.col("value").mean()))
    chosen = valid.sort("value")["strategy"][0]
    sel = df.filter(pl.col("strategy") == "selected")
    assert set(sel["params_selected"].to_list()) == {chosen}
    for seed in sel["split_seed"].unique().to_list():
        a = sel.filter((pl.col("split_seed") == seed) & (pl.col("fold") == "test")).sort("metric")["value"]
        b = df.filter((pl.col("strategy") == chosen) & (pl.col("split_seed") == seed) & (pl.col("fold") == "test")
                      ).sort("metric")["value"]
        assert a.to_list() == b.to_list()
    from mfray.results.report import make_report

    assert "strategy selection and its regret" in make_report(df, study="tiny", metrics=["r2"])
    assert set(df["trial_id"].drop_nulls().to_list()) <= {s.best.read_json()["trial_id"] for s in plan.searches}

    # the trial table reads what Tune recorded: trials.json, and the same from Tune's own trial folders
    from mfray.run.study.trials import _latest_experiment, _tune_rows, trials_table

    table = trials_table(plan)
    assert table.height == 6 and set(table["state"]) == {"finished"} and set(table["source"]) == {"trials.json"}
    assert {"param_readout", "param_lr", "valid_loss", "attempts", "best"} <= set(table.columns)
    for s in plan.searches:
        rows = table.filter(pl.col("search") == s.key)
        best = s.best.read_json()
        assert rows.filter(pl.col("best"))[["trial_id", "valid_loss"]].row(0) == (best["trial_id"], best["valid_loss"])
        assert sorted(rows["attempts"].to_list()) == [1, 1, 2]
        live = {r["trial_id"]: r for r in _tune_rows(_latest_experiment(plan, s), retries=1, driver_live=False)}
        assert {t: (r["state"], r["attempts"], r["valid_loss"], r["params"]["readout"]) for t, r in live.items()} == {
            r["trial_id"]: (r["state"], r["attempts"], r["valid_loss"], r["param_readout"]) for r in rows.iter_rows(named=True)}

    st = study_status(plan)
    assert st.driver_state() == "finished"
    assert st.counts() == {"featurise": {"done": 1}, "search": {"done": 2}, "runs": {"done": 4}, "baselines": {"done": 2}}

    # a re-run finds everything done: no search, no training, no new rows
    parts = sorted(p.name for p in Path(plan.results.uri).rglob("run-*.parquet"))
    again = run_study(plan, log=lambda m: None)
    assert again.counts == {"featurise": {"cached": 1}, "search": {"cached": 2}, "runs": {"cached": 6},
                            "selection": {"cached": 2}}
    assert sorted(p.name for p in Path(plan.results.uri).rglob("run-*.parquet")) == parts


def test_a_search_whose_trials_all_fail_is_reported_and_the_study_goes_on(ray_local, demo_store, tmp_path):
    from mfray.run.study.runner import run_study

    root = str(Path(demo_store.path).parents[1])
    import torch

    if torch.cuda.is_available():
        pytest.skip("the failing trials train on a CUDA device, which this machine has")
    # settings the spec cannot refuse up front but no trial can run with (settings that cannot work, such
    # as 3 heads at width 16, are refused before Ray starts): every trial raises in every attempt
    spec = {**TINY, "name": "failing", "strategies": ["base"], "baselines": [],
            "train": {**TINY.get("train", {}), "device": "cuda"},
            "search": {**TINY["search"], "num_samples": 2}}
    plan = make_plan(parse_study(spec), str(tmp_path / "storage"), store_root=root)
    out = run_study(plan, log=lambda m: None)
    steps = [f["step"] for f in out.failures]
    assert steps.count("trial") == 2 and steps.count("search") == 1
    assert "cuda" in out.failures[0]["error"].lower()
    assert not plan.searches[0].best.exists() and plan.searches[0].trials.exists()
    from mfray.run.study.status import study_status

    st = study_status(plan)
    assert st.counts()["search"] == {"failed": 1} and "finished with failures" in st.driver_state()


def test_auto_search_and_per_trial_resources(ray_local, demo_store, tmp_path):
    """The strategy searched as a parameter; 2 CPUs per trial on a 2-CPU Ray: trials run one at a
    time even though max_concurrent_trials allows 2."""
    from mfray.run.study.runner import run_study

    root = str(Path(demo_store.path).parents[1])
    spec = {**TINY, "name": "auto", "strategies": [], "baselines": [], "max_seeds": 1,
            "resources": {"cpus_per_trial": 2},
            "search": {**TINY["search"], "num_samples": 3, "max_concurrent_trials": 2,
                       "space": {"strategy": ["base", "label"], "readout": ["sum", "mean"]}}}
    plan = make_plan(parse_study(spec), str(tmp_path / "storage"), store_root=root)
    run_study(plan, log=lambda m: None)
    trials = plan.searches[0].trials.read_json()["trials"]
    assert {t["params"]["strategy"] for t in trials} <= {"base", "label"} and len(trials) == 3
    spans = sorted((t["t_start"], t["t_end"]) for t in trials)
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), spans
    df = ResultsStore(plan.results.uri).read(study="auto")
    best = plan.searches[0].best.read_json()
    assert set(df["strategy"]) == {"auto"} and set(df["params_strategy"]) == {best["config"]["strategy"]}


def test_study_under_two_censored_policies(ray_local, censored_store, tmp_path):
    """The same study run with censored = "censored", then "drop": separate searches and runs, the policy
    recorded on every row, bound metrics stored, and one report section per policy."""
    from mfray.results.report import make_report
    from mfray.run.study.runner import run_study

    spec_path = str(Path(censored_store.path).parents[2] / "aid1445_censored.toml")
    study = {**TINY, "name": "cens", "tasks": [spec_path], "strategies": ["base"], "max_seeds": 1,
             "train": {"max_epochs": 2, "patience": 0, "batch_size": 64},
             "search": {**TINY["search"], "num_samples": 2}}
    root = str(Path(censored_store.path).parents[1])
    plans = {}
    for policy in ("censored", "drop"):
        plans[policy] = make_plan(parse_study({**study, "censored": policy}), str(tmp_path / "st"), store_root=root)
        assert plans[policy].tasks[0].censored == policy
        run_study(plans[policy], log=lambda m: None)
    assert plans["censored"].searches[0].key != plans["drop"].searches[0].key
    df = ResultsStore(str(tmp_path / "st" / "results")).read(study="cens")
    assert sorted(df["censored"].unique().to_list()) == ["censored", "drop"]
    # base and lf_linear under each policy, and the selection among them under each policy
    assert df.select("run_key").n_unique() == 6 and df.filter(pl.col("strategy") == "selected")["censored"].n_unique() == 2
    test = df.filter(pl.col("fold") == "test")
    assert {"censored_acc", "active_auroc", "n_fitted", "n_censored"} <= set(test["metric"].to_list())
    fit_on = df.filter(pl.col("strategy") == "lf_linear").group_by("censored").agg(pl.col("params_fit_on").first())
    assert dict(fit_on.iter_rows()) == {"censored": "fitted values only (bounds left out)",
                                        "drop": "fitted values only (bounds left out)"}
    n_train = df.group_by("censored", "strategy").agg(pl.col("n_train_hf").first()).sort("censored", "strategy")
    # drop trains on fitted values only: fewer HF training labels
    assert n_train.filter(pl.col("censored") == "drop")["n_train_hf"].max() < \
        n_train.filter(pl.col("censored") == "censored")["n_train_hf"].min(), n_train
    text = make_report(str(tmp_path / "st" / "results"), study="cens")
    assert "## Study cens [censored=censored]" in text and "## Study cens [censored=drop]" in text
    assert "train fitted" in text


def test_inductive_study_with_lf_model_strategies(ray_local, demo_store, tmp_path):
    """predicted_label, embeddings, tune_vgae, tune_readout and delta, inductively: Ray Train pretrains the
    LF models without the valid/test molecules, their outputs feed the searches, every run lands."""
    from mfray.data.tasks import holdout_ids
    from mfray.run.study.runner import run_study
    from mfray.train.task import LF_MOLECULES

    spec = {"name": "ind", "tasks": ["aid1445"], "settings": ["inductive"], "max_seeds": 2,
            "strategies": ["predicted_label", "embeddings", "tune_vgae", "tune_readout", "delta"],
            "train": {"max_epochs": 2, "patience": 0, "batch_size": 64},
            "model": {"hidden_dim": 16, "latent_dim": 8, "head_hidden_dim": 16},
            "readout_kwargs": {"set_transformer": {"hidden_dim": 16, "num_heads": 2, "num_seeds": 2, "out_dim": 8}},
            "pretrain": {"max_epochs": 1, "num_workers": 1, "batch_size": 128},
            "search": {"num_samples": 1, "max_concurrent_trials": 1, "grace_period": 1, "n_startup_trials": 1,
                       "space": {"freeze": ["encoder", "none"]}},
            "failure": {"trial_retries": 1}}
    root = str(Path(demo_store.path).parents[1])
    plan = make_plan(parse_study(spec), str(tmp_path / "storage"), store_root=root)
    assert {s.strategy for s in plan.searches} == set(spec["strategies"])
    assert len(plan.lf) == 2 and all(lf.config["holdout"]["seeds"] == plan.tasks[0].seeds for lf in plan.lf)
    out = run_study(plan, log=lambda m: None)
    assert out.counts["pretrain"] == {"ran": 2} and out.counts["lf outputs"] == {"ran": 1}, out.counts
    assert not out.failures, out.failures
    held = holdout_ids(demo_store, plan.tasks[0].seeds)
    for lf in plan.lf:
        seen = pl.read_parquet(Path(lf.location.path) / LF_MOLECULES)["mol_id"]
        assert seen.len() > 0 and not seen.is_in(held.tolist()).any(), "an inductive LF model saw a new molecule"
    df = ResultsStore(plan.results.uri).read(study="ind")
    assert set(df["strategy"].unique().to_list()) == {*spec["strategies"], "selected"}
    assert set(df["setting"].unique().to_list()) == {"inductive"}
    runs = df.filter((pl.col("fold") == "test") & (pl.col("metric") == "r2"))
    assert runs.height == 6 * 2 and runs["value"].is_not_nan().all()
    tr = df.filter(pl.col("strategy") == "tune_readout").select("readout").unique()["readout"].to_list()
    assert tr == ["set_transformer"]  # the built model's (the LF model's readout)

    # the refits kept their models: export an LF-model strategy and score molecules with the ensemble
    from mfray.predict import load_predictor, predict_file
    from mfray.run.study.export import export_model

    for strategy in ("embeddings", "tune_readout"):
        exp = export_model(plan, "aid1445", tmp_path / strategy, strategy=strategy)
        assert [m["split_seed"] for m in exp.members] == sorted(plan.tasks[0].seeds)
        assert (exp.lf_checkpoint is not None) == (strategy == "embeddings")
        pred = load_predictor(tmp_path / strategy)
        assert len(pred.members) == 2 and (pred.lf_model is not None) == (strategy == "embeddings")
        mols = demo_store.table("molecules").select("mol_id", pl.col("input_smiles").alias("smiles"))
        mols.write_csv(tmp_path / "mols.csv")
        predict_file(pred, tmp_path / "mols.csv", tmp_path / f"{strategy}.parquet", executor="local")
        got = pl.read_parquet(tmp_path / f"{strategy}.parquet").with_columns(pl.col("mol_id").cast(pl.Int64))
        assert got.height == mols.height and (got["prediction_std"] > 0).all()
        # the ensemble mean is the mean of the refits' own predictions of the same molecules
        refs = [pl.read_parquet(Path(plan.run_dir(m["run_key"]).path) / "predictions.parquet")
                .select("mol_id", pl.col("y_pred").alias(f"p{i}")) for i, m in enumerate(exp.members)]
        both = got.join(refs[0], on="mol_id").join(refs[1], on="mol_id")
        import numpy as np

        np.testing.assert_allclose(both["prediction"].to_numpy(), ((both["p0"] + both["p1"]) / 2).to_numpy(), atol=1e-4)
    best = export_model(plan, "aid1445", tmp_path / "best", best=True)
    chosen = df.filter(pl.col("strategy") == "selected")["params_selected"][0]
    assert best.strategy == chosen and chosen in best.chosen_by
    with pytest.raises(Exception, match="no finished runs of it"):
        export_model(plan, "aid1445", tmp_path / "x", strategy="label")


def test_a_strategy_blind_to_the_setting_is_searched_and_fit_once_for_both(ray_local, demo_store, tmp_path):
    """base reads no measured LF label: its transductive and inductive runs are the same fit, so one
    search and one refit per seed serve both settings, each recorded under its own setting."""
    from mfray.run.study.runner import run_study

    spec = {**TINY, "name": "both", "settings": ["transductive", "inductive"], "strategies": ["base", "label"],
            "baselines": [], "search": {**TINY["search"], "num_samples": 2}}
    root = str(Path(demo_store.path).parents[1])
    plan = make_plan(parse_study(spec), str(tmp_path / "storage"), store_root=root)
    keys = {(s.strategy, s.setting): s.key for s in plan.searches}
    assert keys[("base", "transductive")] == keys[("base", "inductive")] != keys[("label", "transductive")]
    lines: list[str] = []
    out = run_study(plan, log=lines.append)
    assert out.counts["search"] == {"ran": 2, "cached": 1}, out.counts
    assert any("runs: 6 to record, 4 fit(s) (2 serve both settings)" in line for line in lines), lines
    df = ResultsStore(plan.results.uri).read(study="both")
    base = df.filter((pl.col("strategy") == "base") & (pl.col("fold") == "test") & (pl.col("metric") == "r2"))
    by = {(r["setting"], r["split_seed"]): r["value"] for r in base.iter_rows(named=True)}
    assert len(by) == 4 and all(by[("transductive", s)] == by[("inductive", s)] for s in plan.tasks[0].seeds)
    for key in base["run_key"].unique().to_list():
        assert (Path(plan.run_dir(key).path) / "best.ckpt").exists()
