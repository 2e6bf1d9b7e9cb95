"""Ray starts only when a step has work for it: small datasets featurise in-process, `study status` and
`study trials` never start Ray, and a finished study re-runs without it. No Ray runs in this file: a
test that would start one fails instead."""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from mfray.cli.main import main
from mfray.run.featurize import LOCAL_BELOW_ENV, choose_executor, featurize_dataset
from mfray.utils.errors import MfrayError


class RayStarted(Exception):
    pass


@pytest.fixture
def no_ray(monkeypatch):
    """Starting or connecting to Ray raises :class:`RayStarted` (mfray's helper and Ray's own init)."""
    import ray

    import mfray.run.runtime as runtime

    def refuse(*args, **kwargs):
        raise RayStarted("Ray was started")

    monkeypatch.setattr(runtime, "ensure_ray", refuse)
    monkeypatch.setattr(ray, "init", refuse)
    monkeypatch.delenv(LOCAL_BELOW_ENV, raising=False)


def test_a_small_dataset_is_featurised_in_process(no_ray, demo_spec, tmp_path):
    res = featurize_dataset(demo_spec, tmp_path, progress=False, log=lambda m: None)  # 655 rows, executor "auto"
    assert res.executor == "local" and res.store.manifest["timings_s"]["executor"] == "local"
    assert res.store.manifest["counts"]["molecules"] == 655
    # above the threshold the same call goes to Ray Data (here: to the refusing stand-in)
    started = []

    def start_ray():
        started.append(1)
        raise RayStarted()

    with pytest.raises(RayStarted):
        featurize_dataset(demo_spec, tmp_path / "big", local_below_rows=600, progress=False, log=lambda m: None,
                          ray_init=start_ray)
    assert started == [1]
    # a cache hit runs nothing at all
    again = featurize_dataset(demo_spec, tmp_path, local_below_rows=0, progress=False, log=lambda m: None)
    assert again.cache_hit and again.executor is None


def test_the_threshold_from_flag_environment_and_default(monkeypatch):
    monkeypatch.delenv(LOCAL_BELOW_ENV, raising=False)
    assert choose_executor("auto", 49_999) == "local" and choose_executor("auto", 50_000) == "ray"
    assert choose_executor("auto", 0) == "local" and choose_executor("ray", 10) == "ray"
    monkeypatch.setenv(LOCAL_BELOW_ENV, "100")
    assert choose_executor("auto", 99) == "local" and choose_executor("auto", 655) == "ray"
    assert choose_executor("auto", 655, threshold=1000) == "local"  # the flag wins over the environment
    monkeypatch.setenv(LOCAL_BELOW_ENV, "many")
    with pytest.raises(MfrayError, match=LOCAL_BELOW_ENV):
        choose_executor("auto", 655)
    with pytest.raises(MfrayError, match="--local-below -1"):
        choose_executor("auto", 655, threshold=-1)


def test_bad_featurize_flags_exit_2(no_ray, tmp_path, capsys):
    common = ["featurize", "aid1445", "--out", str(tmp_path), "--no-progress"]
    with pytest.raises(SystemExit) as e:  # argparse: a usage error naming the flag
        main([*common, "--local-below", "-5"])
    assert e.value.code == 2 and "argument --local-below: -5: give at least 0" in capsys.readouterr().err
    assert main([*common, "--local", "--local-below", "5"]) == 2
    assert "--local-below" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # argparse: the two are exclusive
        main([*common, "--local", "--ray"])
    assert e.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
    assert main(common) == 0  # the default chooses the process for 655 rows
    assert "in this process" in capsys.readouterr().out


STUDY = """
name = "finished"
tasks = ["aid1445"]
strategies = ["base"]
baselines = ["lf_linear"]
max_seeds = 2
[train]
max_epochs = 3
[search]
num_samples = 2
storage = "optuna.db"
[search.space]
readout = ["sum", "mean"]
"""


def _finish_by_hand(plan) -> None:
    """Write what a finished run of ``plan`` leaves in its storage (search records, results parts),
    without Ray or training: the steps' own keys, so the runner finds every one done."""
    from mfray.results.record import RunRecord
    from mfray.results.store import ResultsStore
    from mfray.run.study.runner import task_names
    from mfray.run.study.space import resolve_config
    from mfray.run.study.steps import study_steps

    for k, s in enumerate(plan.searches):
        trials = [{"trial_id": f"t{k}{i}", "params": {"readout": r, "strategy": s.strategy}, "status": "finished",
                   "valid_loss": 0.5 + i, "epochs": 3, "attempts": 1 + i, "t_start": 100.0, "t_end": 103.5,
                   "error": None} for i, r in enumerate(("sum", "mean"))]
        s.trials.write_json({"search": s.key, "label": s.label, "experiment": "", "retry": 0, "trials": trials})
        s.best.write_json({"search": s.key, "label": s.label, "trial_id": trials[0]["trial_id"], "valid_loss": 0.5,
                           "params": trials[0]["params"], "config": resolve_config(plan.study, s.strategy, trials[0]["params"]),
                           "n_trials": 2, "n_failed": 0})
    store = ResultsStore(plan.results.uri)
    now = datetime.now(UTC)
    for step in study_steps(plan, set(), task_names(plan), ("runs", "baselines")):
        ident = step.identity
        metrics = {f: {"rmse": 0.3 if ident["strategy"] == "base" else 0.2, "r2": 0.1} for f in ("train", "valid", "test")}
        store.append_run(RunRecord(study=ident["study"], task=ident["task"], dataset="aid1445", setting=ident["setting"],
                                   strategy=ident["strategy"], model=ident["model"], split_seed=ident["split_seed"],
                                   metrics=metrics, readout=ident["readout"], config_hash=ident["config_hash"],
                                   n_train_hf=524, best_epoch=1, started_at=now, finished_at=now))


def test_status_trials_and_a_finished_study_run_without_ray(no_ray, demo_store, tmp_path, capsys):
    from mfray.run.study import load_study, make_plan
    from mfray.run.study.runner import run_study
    from mfray.run.study.status import study_status

    spec = tmp_path / "finished.toml"
    spec.write_text(STUDY)
    root = str(Path(demo_store.path).parents[1])
    storage = tmp_path / "storage"
    plan = make_plan(load_study(spec), str(storage), store_root=root)
    cli = ["--storage", str(storage), "--store-root", root]

    assert main(["study", "status", str(spec), *cli]) == 0  # nothing done yet: still no Ray
    assert "never run" in capsys.readouterr().out
    _finish_by_hand(plan)
    out = run_study(plan, log=lambda m: None)
    assert out.counts == {"featurise": {"cached": 1}, "search": {"cached": 1}, "runs": {"cached": 4},
                          "selection": {"ran": 2}}, out.counts  # the selection reads the store: no Ray either
    assert run_study(plan, log=lambda m: None).counts["selection"] == {"cached": 2}
    assert study_status(plan).counts() == {"featurise": {"done": 1}, "search": {"done": 1}, "runs": {"done": 2},
                                           "baselines": {"done": 2}}
    assert main(["study", "run", str(spec), *cli, "--no-report"]) == 0
    assert main(["study", "status", str(spec), *cli]) == 0
    assert "study finished: finished" in capsys.readouterr().out

    # the trial table: printed per search, written as CSV and Parquet with the same rows
    table = tmp_path / "t" / "trials.csv"
    assert main(["study", "trials", str(spec), *cli, "--out", str(table)]) == 0
    cap = capsys.readouterr()
    assert "aid1445 transductive base" in cap.out and "* t00" in cap.out and "valid loss" in cap.out
    assert "optuna-dashboard sqlite:///" in cap.err and str(storage / "optuna.db") in cap.err
    rows = list(csv.DictReader(table.open()))
    assert [r["trial_id"] for r in rows] == ["t00", "t01"]
    assert rows[0]["best"] == "true" and rows[1]["best"] == "false"
    assert rows[0]["param_readout"] == "sum" and rows[1]["attempts"] == "2" and rows[0]["source"] == "trials.json"
    assert float(rows[0]["valid_loss"]) == 0.5 and float(rows[0]["seconds"]) == 3.5
    assert main(["study", "trials", str(spec), *cli, "--out", str(tmp_path / "trials.parquet")]) == 0
    pq = pl.read_parquet(tmp_path / "trials.parquet")
    assert pq["trial_id"].to_list() == ["t00", "t01"] and pq.schema["valid_loss"] == pl.Float64
    assert main(["study", "trials", str(spec), *cli, "--out", str(tmp_path / "trials.xlsx")]) == 2
    assert "--out" in capsys.readouterr().err and not (tmp_path / "trials.xlsx").exists()


def test_the_ray_dashboard_is_asked_for_when_ray_starts(demo_store, tmp_path, monkeypatch):
    """`study run --ray-dashboard` (or MFRAY_RAY_DASHBOARD=1) reaches the Ray that the first pending step
    starts; without it a study with nothing to pretrain starts Ray without the dashboard."""
    import mfray.run.runtime as runtime

    calls = []

    def record(**kwargs):
        calls.append(kwargs)
        raise RayStarted()

    monkeypatch.setattr(runtime, "ensure_ray", record)
    spec = tmp_path / "pending.toml"
    spec.write_text(STUDY)
    cli = ["study", "run", str(spec), "--storage", str(tmp_path / "st"), "--store-root", str(Path(demo_store.path).parents[1])]
    with pytest.raises(RayStarted):  # its search is pending: the first step with work starts Ray
        main([*cli, "--ray-dashboard"])
    with pytest.raises(RayStarted):
        main(cli)
    assert [c["dashboard"] for c in calls] == [True, False] and all(c["log_to_driver"] is False for c in calls)
    monkeypatch.setenv(runtime.DASHBOARD_ENV, "1")
    assert runtime.dashboard_requested()
    monkeypatch.setenv(runtime.DASHBOARD_ENV, "0")
    assert not runtime.dashboard_requested()
