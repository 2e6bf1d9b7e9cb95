"""scripts/paper_claims.py: W/T/L per claim from a results store with known effects."""

from __future__ import annotations

import importlib.util
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mfray.results import ResultsStore, RunRecord

from results_synth import VERSIONS

REPO = Path(__file__).resolve().parents[2]
# per task: inductive test r2 of each (study, strategy); the claims follow from these numbers
TASKS = {
    "t1:hf/DR": {"base": 0.10, "predicted_label": 0.20, "embeddings": 0.30, "tune_vgae": 0.10, "tune_readout": 0.20,
                 "delta": 0.0, "hybrid_label": -0.2, "sum:embeddings": 0.25, "sum:predicted_label": 0.20},
    "t2:hf/DR": {"base": 0.10, "predicted_label": 0.05, "embeddings": 0.40, "tune_vgae": 0.30, "tune_readout": 0.10,
                 "delta": 0.102, "hybrid_label": -0.1, "sum:embeddings": 0.30, "sum:predicted_label": 0.10},
}


def _claims():
    spec = importlib.util.spec_from_file_location("paper_claims", REPO / "scripts" / "paper_claims.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _store(tmp_path) -> Path:
    store = ResultsStore(tmp_path / "results")
    for task, values in TASKS.items():
        for key, r2 in values.items():
            study, strategy = (("mfpcba9_transfer_sum", key[4:]) if key.startswith("sum:")
                               else ("mfpcba9_transfer", key))
            for setting in ("transductive", "inductive"):
                for seed in (0, 1):
                    store.append_run(RunRecord(
                        study=study, task=task, dataset=task.split(":")[0], setting=setting, strategy=strategy,
                        model="gnn", readout=None, split_seed=seed, metrics={"test": {"r2": r2 + 0.01 * seed}},
                        params={}, n_train_hf=100, trial_id="t", started_at=datetime(2025, 1, 1, tzinfo=UTC),
                        finished_at=datetime(2025, 1, 1, 1, tzinfo=UTC), versions=VERSIONS))
    return tmp_path / "results"


def test_claims_count_wins_ties_and_losses(tmp_path, capsys):
    assert _claims().main([str(_store(tmp_path))]) == 0
    out = {line.split("|")[1].strip(): line.split("|")[2:4] for line in capsys.readouterr().out.splitlines()
           if line.startswith("| (")}
    assert out["(a) predicted_label vs base, inductive"][0].strip() == "1/0/1 of 2"
    assert out["(a) embeddings vs base, inductive"] == [" 2/0/0 of 2 ", " +0.250 "]
    assert out["(a) delta vs base, inductive"][0].strip() == "0/1/1 of 2"  # +0.002 is a tie (< 0.005)
    assert out["(b) tune_readout vs tune_vgae, inductive"] == [" 1/0/1 of 2 ", " -0.050 "]
    assert out["(c) embeddings: ST LF vs sum LF, inductive"] == [" 2/0/0 of 2 ", " +0.075 "]
    assert out["(c) predicted_label: ST LF vs sum LF, transductive"][0].strip() == "0/1/1 of 2"  # tie, loss


def test_a_store_without_the_study_exits_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert _claims().main([str(tmp_path / "empty")]) == 2
    assert "no results of study 'mfpcba9_transfer'" in capsys.readouterr().err


def test_extra_per_task_means_add_tasks_the_store_lacks(tmp_path, capsys):
    extra = tmp_path / "extra.csv"
    extra.write_text("# measured elsewhere\nstudy,task,setting,strategy,metric,mean\n"
                     "mfpcba9_transfer,t3:hf/DR,inductive,base,r2,0.1\n"
                     "mfpcba9_transfer,t3:hf/DR,inductive,embeddings,r2,0.5\n"
                     "mfpcba9_transfer,t1:hf/DR,inductive,embeddings,r2,-9\n"  # the store has t1: ignored
                     "mfpcba9_transfer,t3:hf/DR,inductive,base,mae,7\n")  # another metric: ignored
    assert _claims().main([str(_store(tmp_path)), "--extra", str(extra)]) == 0
    out = {line.split("|")[1].strip(): line.split("|")[2:4] for line in capsys.readouterr().out.splitlines()
           if line.startswith("| (")}
    assert out["(a) embeddings vs base, inductive"] == [" 3/0/0 of 3 ", " +0.300 "]
    assert _claims().main([str(_store(tmp_path)), "--extra", str(tmp_path / "missing.csv")]) == 2


def test_min_seeds_leaves_out_a_metric_that_rests_on_one_seed(tmp_path, capsys):
    root = _store(tmp_path)
    store = ResultsStore(root)
    for strategy, r2 in (("base", 0.1), ("embeddings", 0.9)):  # t3: the metric on one split seed only
        store.append_run(RunRecord(
            study="mfpcba9_transfer", task="t3:hf/DR", dataset="t3", setting="inductive", strategy=strategy,
            model="gnn", readout=None, split_seed=0, metrics={"test": {"r2": r2}}, params={}, n_train_hf=100,
            trial_id="t", started_at=datetime(2025, 1, 1, tzinfo=UTC), finished_at=datetime(2025, 1, 1, 1, tzinfo=UTC),
            versions=VERSIONS))

    def embeddings_vs_base(*flags: str) -> str:
        assert _claims().main([str(root), *flags]) == 0
        return next(line.split("|")[2].strip() for line in capsys.readouterr().out.splitlines()
                    if line.startswith("| (a) embeddings vs base, inductive"))

    assert embeddings_vs_base() == "3/0/0 of 3"
    assert embeddings_vs_base("--min-seeds", "2") == "2/0/0 of 2"
    with pytest.raises(SystemExit) as e:  # argparse: exit 2, naming the flag
        _claims().main([str(root), "--min-seeds", "0"])
    assert e.value.code == 2 and "--min-seeds" in capsys.readouterr().err
