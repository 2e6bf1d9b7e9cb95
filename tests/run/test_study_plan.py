"""`mfray study plan`: the steps of a study counted (no Ray, nothing trained), and `--estimate`: the cost of
the steps still to do from throughputs measured on this machine."""

from __future__ import annotations

import dataclasses
import gzip
from pathlib import Path

import pytest

from mfray.cli.main import main
from mfray.run.study import load_study, make_plan
from mfray.run.study.estimate import Rates, TaskCounts, estimate, outline, task_counts
from mfray.run.study.steps import study_steps

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "studies" / "demo.toml"


@pytest.fixture
def demo_plan(tmp_path, monkeypatch):
    monkeypatch.setenv("MFRAY_CACHE", str(tmp_path / "cache"))  # not featurised: counted from the source
    return make_plan(load_study(DEMO), str(tmp_path / "storage"), store_root=str(tmp_path / "graphs"))


def _rows_in_source() -> int:
    src = REPO / "data" / "fatty_acid_synthase"
    files = sorted(src.glob("*.csv*"))
    assert files, src
    n = 0
    for f in files:
        opener = gzip.open if f.suffix == ".gz" else open
        with opener(f, "rt") as fh:
            n += sum(1 for _ in fh) - 1
    return n


def test_plan_counts_every_step_kind(demo_plan, capsys):
    out = outline(demo_plan)
    steps = study_steps(demo_plan)
    for kind in ("featurise", "pretrain", "lf outputs", "search", "runs", "baselines"):
        assert out.kinds[kind] == (sum(s.kind == kind for s in steps), 0), kind
    assert out.kinds["search"][0] == 5 and out.kinds["runs"][0] == 15 and out.kinds["baselines"][0] == 6
    text = out.render()
    assert "| search | 5 | 0 | 5 |" in text and "| runs | 15 | 0 | 15 |" in text


def test_an_unfeaturised_task_is_counted_from_its_source(demo_plan):
    c = task_counts(demo_plan.tasks[0])
    assert not c.exact
    assert c.rows == c.lf and c.hf == 1010  # every screen row has an LF value; 1,010 have a pXC50
    assert c.rows == 20010


def _rates(plan, factor: float = 1.0) -> Rates:
    from mfray.run.study.estimate import _hf_model_keys

    keys = list(_hf_model_keys(plan))
    return Rates(device="cpu", featurise=2000 * factor, train={k: 500 * factor for k in keys},
                 infer={k: 2000 * factor for k in keys}, baselines={"lf_linear": 1e5 * factor, "rf": 30 * factor})


def _counts(plan) -> dict[str, TaskCounts]:
    return {t.id: TaskCounts(rows=20010, molecules=20010, lf=20010, hf=1010, exact=True) for t in plan.tasks}


def test_the_estimate_scales_with_the_measured_rates_and_the_cores(demo_plan):
    counts = _counts(demo_plan)
    slow = {ln.kind: ln for ln in estimate(demo_plan, _rates(demo_plan), 2, counts, {})}
    fast = {ln.kind: ln for ln in estimate(demo_plan, _rates(demo_plan, 2.0), 2, counts, {})}
    wide = {ln.kind: ln for ln in estimate(demo_plan, _rates(demo_plan), 4, counts, {})}
    for kind in ("featurise", "pretrain", "search", "runs", "baselines"):
        assert slow[kind].cpu_s > 0, kind
        assert fast[kind].cpu_s < slow[kind].cpu_s, kind  # twice the speed: less work (overheads stay)
    assert wide["runs"].wall_s == pytest.approx(slow["runs"].wall_s / 2)
    assert wide["runs"].cpu_s == pytest.approx(slow["runs"].cpu_s)
    # 40 epochs x (808 train / 500 + 101 valid / 2000) per trial, 4 trials: the arithmetic of the docstring
    per_trial = 40 * (808 / 500 + 101 / 2000) + 6.0
    assert slow["search"].cpu_s == pytest.approx(5 * 4 * per_trial, rel=0.01)
    half = {ln.kind: ln for ln in estimate(demo_plan, _rates(demo_plan), 2, counts, {}, epochs_fraction=0.5)}
    assert half["search"].cpu_s < 0.55 * slow["search"].cpu_s


def test_what_is_done_costs_nothing(demo_plan):
    counts = _counts(demo_plan)
    done = {"featurise": {t.store_key for t in demo_plan.tasks}, "pretrain": {lf.key for lf in demo_plan.lf},
            "lf outputs": {lf.key for lf in demo_plan.lf}, "search": {s.key for s in demo_plan.searches}}
    for s in demo_plan.searches:
        done[f"runs:{s.key}"] = {str(x) for x in s.task.seeds}
    lines = {ln.kind: ln for ln in estimate(demo_plan, _rates(demo_plan), 2, counts, done)}
    for kind in ("featurise", "pretrain", "lf outputs", "search", "runs"):
        assert lines[kind].cpu_s == 0, kind


@pytest.mark.parametrize("flag", [["--cpus", "0"], ["--cpus", "two"], ["--epochs-fraction", "0"],
                                  ["--epochs-fraction", "1.5"], ["--device", "tpu"]])
def test_bad_flags_exit_2_naming_the_flag(flag, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["study", "plan", str(DEMO), "--storage", str(tmp_path), *flag])
    assert e.value.code == 2
    assert flag[0] in capsys.readouterr().err


def test_estimate_measures_once_then_reuses_the_measurement(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MFRAY_CACHE", str(tmp_path / "cache"))
    args = ["study", "plan", str(DEMO), "--storage", str(tmp_path / "st"), "--estimate"]
    assert main(args) == 0
    first = capsys.readouterr()
    assert "measuring this machine" in first.err and "| total |" in first.out
    assert "CPU-hours to do" in first.out
    assert len(list((tmp_path / "cache" / "rates").glob("*.json"))) == 1
    assert main(args) == 0
    second = capsys.readouterr()
    assert "measuring" not in second.err and "rates measured here before" in second.err
    assert second.out == first.out  # the same measurement, the same estimate


def test_rates_round_trip():
    r = Rates(device="cpu", featurise=1.0, train={"hf": 2.0}, infer={"hf": 3.0}, baselines={"rf": 4.0}, seconds=5.0)
    assert Rates(**dataclasses.asdict(r)) == r
