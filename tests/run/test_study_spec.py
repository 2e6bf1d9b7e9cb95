"""Study specs, the define-by-run search space and the content-keyed plan (no Ray, no training)."""

from __future__ import annotations

import re

import optuna
import pytest

from mfray.run.study import load_study, make_plan, parse_study
from mfray.run.study.space import resolve_config, suggest
from mfray.utils.errors import SpecError

BASE = {"name": "t", "tasks": ["aid1445"], "strategies": ["base", "label", "tune_readout"],
        "search": {"space": {"readout": ["sum", "set_transformer"], "lr": {"low": 1e-4, "high": 1e-2, "log": True},
                             "hidden_dim": [32, 64], "freeze": ["encoder", "none"],
                             "unfreeze_epoch": {"low": 2, "high": 5}}}}


def test_shipped_studies_load(repo):
    paths = sorted((repo / "studies").glob("*.toml"))
    assert {"demo", "mfpcba23", "az16", "qmugs12", "mfpcba9_transfer", "mfpcba9_transfer_paper"} <= {p.stem for p in paths}
    for p in paths:  # every shipped study loads, and is named as its file
        assert load_study(p).name == p.stem, p


def test_unknown_key_names_file_and_key(tmp_path):
    p = tmp_path / "s.toml"
    p.write_text('name = "x"\ntasks = ["aid1445"]\n[search]\nnum_sampels = 3\n')
    with pytest.raises(SpecError) as e:
        load_study(p)
    assert str(p) in str(e.value) and "search.num_sampels" in str(e.value)


@pytest.mark.parametrize("patch, needle", [
    ({"strategies": ["nope"]}, "unknown strategy 'nope'"),
    ({"search": {"space": {"readout": ["sumx"]}}}, "unknown readout 'sumx'"),
    ({"search": {"space": {"depth": [1]}}}, "unknown search parameter 'depth'"),
    ({"search": {"space": {"freeze": ["head"]}}}, "freeze choices"),
    ({"train": {"epochs": 3}}, "unknown train setting"),
    ({"settings": ["inductive"], "strategies": ["label"]}, "inductive"),
    ({"train": {"lr": "fast"}}, "train.lr = 'fast': Input should be a valid number"),
    ({"train": {"max_epochs": "ten"}}, "train.max_epochs = 'ten': Input should be a valid integer"),
    ({"model": {"hidden_dim": "wide"}}, "model.hidden_dim = 'wide'"),
    ({"readout_kwargs": {"set_transformer": {"num_head": 4}}}, "unknown argument(s) ['num_head'] for readout 'set_transformer'"),
])
def test_bad_specs_say_what_is_wrong(patch, needle):
    with pytest.raises(SpecError) as e:
        parse_study({**BASE, **patch}, where="s.toml")
    assert needle in str(e.value) and "s.toml" in str(e.value)


def _sample(study, strategy, n=12):
    out = []
    st = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(n):
        trial = st.ask()
        const = suggest(trial, study, strategy)
        out.append((dict(trial.params), const))
        st.tell(trial, 0.0)
    return out


def test_space_is_conditional_on_the_strategy():
    study = parse_study(BASE)
    for params, const in _sample(study, "base"):
        assert const == {"strategy": "base"}
        assert set(params) == {"readout", "lr", "hidden_dim"}  # no freezing for a model trained from scratch
    seen_unfreeze = {True: 0, False: 0}
    for params, _ in _sample(study, "tune_readout", 20):
        assert "readout" not in params and "hidden_dim" not in params  # the LF model's encoder and readout
        assert params["freeze"] in ("encoder", "none")
        seen_unfreeze["unfreeze_epoch" in params] += 1
        assert ("unfreeze_epoch" in params) == (params["freeze"] != "none")
    assert all(seen_unfreeze.values())


def test_auto_search_draws_the_strategy_first(tmp_path):
    study = parse_study({**BASE, "strategies": [],
                         "search": {"space": {**BASE["search"]["space"], "strategy": ["base", "label", "tune_readout"]}}})
    seen = set()
    for params, const in _sample(study, "auto", 30):
        seen.add(params["strategy"])
        assert const == {}
        if params["strategy"] == "tune_readout":
            assert "freeze" in params and "readout" not in params
        else:
            assert "readout" in params and "freeze" not in params
        cfg = resolve_config(study, "auto", params)
        assert cfg["strategy"] == params["strategy"]
    assert seen == {"base", "label", "tune_readout"}
    plan = make_plan(study, str(tmp_path))
    assert [s.strategy for s in plan.searches] == ["auto"] and list(plan.searches[0].lf) == ["set_transformer"]
    ind = make_plan(study.model_copy(update={"settings": ["inductive"]}), str(tmp_path))
    from mfray.run.study.space import candidates

    assert candidates(study, "inductive") == ["base", "tune_readout"] and len(ind.searches) == 1


def test_one_choice_parameters_are_constants_of_the_config():
    study = parse_study({**BASE, "search": {"space": {"readout": ["set_transformer"], "hidden_dim": [32, 64]}}})
    for params, const in _sample(study, "base", 3):
        assert const == {"strategy": "base", "readout": "set_transformer"} and set(params) == {"hidden_dim"}


def test_resolve_config():
    study = parse_study({**BASE, "model": {"hidden_dim": 16, "head_hidden_dim": 8},
                         "readout_kwargs": {"set_transformer": {"hidden_dim": 32, "num_heads": 2}}})
    c = resolve_config(study, "base", {"readout": "set_transformer", "lr": 1e-3, "hidden_dim": 64})
    assert c["readout"] == "set_transformer" and c["model"]["hidden_dim"] == 64
    assert c["model"]["readout_kwargs"] == {"hidden_dim": 32, "num_heads": 2} and c["train"]["lr"] == 1e-3
    t = resolve_config(study, "tune_readout", {"freeze": "none", "lr": 1e-3})
    assert t["readout"] is None and t["lf_readout"] == "set_transformer" and t["freeze"] == []
    assert t["model"] == {"head_hidden_dim": 8}  # encoder widths come from the LF model
    d = resolve_config(study, "tune_readout", {})
    assert d["freeze"] is None and d["train"]["lr"] == 5e-5  # strategy defaults: encoder frozen, LR 5e-5


def test_plan_keys_are_content_hashes(tmp_path):
    study = parse_study(BASE)
    a = make_plan(study, str(tmp_path / "s"))
    b = make_plan(study, str(tmp_path / "s"))
    assert [s.key for s in a.searches] == [s.key for s in b.searches]
    assert [s.strategy for s in a.searches] == ["base", "label", "tune_readout"]
    assert len(a.lf) == 1 and a.lf[0].readout == "set_transformer"
    assert a.searches[2].lf["set_transformer"] is a.lf[0]
    # how many trials run at once does not change what a search finds; its budget does
    c = make_plan(parse_study({**BASE, "search": {**BASE["search"], "max_concurrent_trials": 7}}), str(tmp_path / "s"))
    d = make_plan(parse_study({**BASE, "search": {**BASE["search"], "num_samples": 9}}), str(tmp_path / "s"))
    assert [s.key for s in c.searches] == [s.key for s in a.searches]
    assert all(x.key != y.key for x, y in zip(d.searches, a.searches))
    # an LF model is shared by the searches that need it, and depends on its own settings only
    e = make_plan(parse_study({**BASE, "train": {"max_epochs": 3}}), str(tmp_path / "s"))
    assert e.lf[0].key == a.lf[0].key


def test_inductive_setting_skips_the_label_strategy(tmp_path):
    study = parse_study({**BASE, "settings": ["transductive", "inductive"]})
    plan = make_plan(study, str(tmp_path))
    assert [(s.setting, s.strategy) for s in plan.searches] == [
        ("transductive", "base"), ("transductive", "label"), ("transductive", "tune_readout"),
        ("inductive", "base"), ("inductive", "tune_readout")]


def test_missing_data_is_skipped_and_named(tmp_path):
    study = parse_study({"name": "m", "missing_data": "skip",
                         "tasks": ["aid1445", {"dataset": "mfpcba_1465"}, {"dataset": "no_such_dataset"}]})
    plan = make_plan(study, str(tmp_path))
    assert [t.dataset for t in plan.tasks] == ["aid1445"]
    why = dict(plan.missing)
    assert "not downloaded" in why["mfpcba_1465"] and "no dataset spec named 'no_such_dataset'" in why["no_such_dataset"]
    with pytest.raises(Exception, match="no data for task mfpcba_1465"):
        make_plan(parse_study({"name": "m", "tasks": ["mfpcba_1465"]}), str(tmp_path))


def test_alternatives_pick_the_first_task_with_data(tmp_path, shared_data):
    study = load_study(__import__("pathlib").Path(__file__).resolve().parents[2] / "studies" / "mfpcba23.toml")
    plan = make_plan(study, str(tmp_path))
    names = sorted(t.dataset for t in plan.tasks)
    # the PubChem download is absent here: the local whole-screen copy wins over the HF-only one
    assert {"serine", "toxin_B", "ubiquitin", "aid1445"} <= set(names) and not any(n.endswith("_hf") for n in names)
    assert len(plan.tasks) + len(plan.missing) == 23


def test_smoke_is_a_separate_small_study():
    s = parse_study(BASE).smoke()
    assert s.name == "t-smoke" and s.search.num_samples == 2 and s.max_seeds == 2
    assert s.train["max_epochs"] <= 3 and s.search.space["readout"] == ["sum"]


def test_censored_policy_of_tasks_keys_and_overrides(tmp_path, shared_data):
    """serine_hf's HF values carry qualifiers (spec default: censored); aid1445's do not."""
    base = {"name": "c", "tasks": ["serine_hf", "aid1445"], "strategies": ["base"], "baselines": ["lf_linear"]}
    plans = {pol: make_plan(parse_study({**base, **({"censored": pol} if pol else {})}), str(tmp_path))
             for pol in (None, "drop", "as_value", "censored")}
    by = {pol: {t.dataset: t for t in p.tasks} for pol, p in plans.items()}
    assert by[None]["serine_hf"].censored == "censored" and by["drop"]["serine_hf"].censored == "drop"
    assert all(by[p]["aid1445"].censored is None for p in by)  # no qualifiers: a policy means nothing
    # one store for every policy; different searches and baseline runs per policy; aid1445 unchanged
    assert len({by[p]["serine_hf"].store_key for p in by}) == 1
    keys = {p: {s.task.dataset: s.key for s in plans[p].searches} for p in plans}
    assert len({keys[p]["serine_hf"] for p in ("drop", "as_value", "censored")}) == 3
    assert keys[None]["serine_hf"] == keys["censored"]["serine_hf"]
    assert len({keys[p]["aid1445"] for p in keys}) == 1
    from mfray.run.study.plan import baseline_identity

    hashes = {p: baseline_identity(plans[p], by[p]["serine_hf"], "lf_linear", 1, "x")["config_hash"] for p in plans}
    assert len({hashes["drop"], hashes["as_value"], hashes["censored"]}) == 3
    # a task's own policy wins over the study's
    own = parse_study({**base, "censored": "drop", "tasks": [{"dataset": "serine_hf", "censored": "as_value"}]})
    assert make_plan(own, str(tmp_path)).tasks[0].censored == "as_value"
    with pytest.raises(SpecError, match="censored: got 'maybe'; allowed values: 'drop', 'as_value' or 'censored'"):
        parse_study({**base, "censored": "maybe"})


def test_one_held_out_lf_model_can_serve_both_settings(tmp_path):
    both = {**BASE, "settings": ["transductive", "inductive"]}
    per_setting = make_plan(parse_study(both), str(tmp_path))
    assert len(per_setting.lf) == 2 and sum("holdout" in lf.config for lf in per_setting.lf) == 1
    shared = make_plan(parse_study({**both, "pretrain": {"holdout": "always"}}), str(tmp_path))
    assert len(shared.lf) == 1 and "holdout" in shared.lf[0].config
    lf_keys = {s.setting: [lf.key for lf in s.lf.values()] for s in shared.searches if s.strategy == "tune_readout"}
    assert lf_keys["transductive"] == lf_keys["inductive"] == [shared.lf[0].key]


def test_lf_size_presets(tmp_path):
    from mfray.models import ModelSpec, build_model

    params = {}
    for size in ("study", "paper", "cpu"):
        plan = make_plan(parse_study({**BASE, "model": {"hidden_dim": 32}, "pretrain": {"size": size}}), str(tmp_path))
        model = plan.lf[0].config["model"]
        params[size] = sum(p.numel() for p in build_model(ModelSpec(readout="set_transformer", **model)).parameters())
    assert 14.0e6 < params["paper"] < 14.8e6  # the paper's LF model, whatever the study's [model] says
    assert 1.0e6 < params["cpu"] < 1.5e6
    assert params["study"] != params["paper"]  # the study's hidden_dim 32 encoder


def test_tasks_option_runs_one_sitting(tmp_path, capsys):
    from mfray.cli.main import main

    spec = tmp_path / "s.toml"
    spec.write_text('name = "s"\ntasks = ["aid1445", "aid1445_paper"]\nstrategies = ["base"]\n')
    assert main(["study", "status", str(spec), "--storage", str(tmp_path / "st")]) == 0
    assert re.search(r"search\s+2 pending", capsys.readouterr().out)
    assert main(["study", "status", str(spec), "--tasks", "aid1445_paper", "--storage", str(tmp_path / "st")]) == 0
    assert re.search(r"search\s+1 pending", capsys.readouterr().out)
    assert main(["study", "status", str(spec), "--tasks", "nope", "--storage", str(tmp_path / "st")]) == 2
    assert "nope not a task of" in capsys.readouterr().err


def test_lf_preset_is_per_readout():
    from mfray.models.spec import lf_preset

    assert lf_preset("paper", "set_transformer") == {}
    assert lf_preset("cpu", "set_transformer")["readout_kwargs"]["hidden_dim"] == 256
    assert lf_preset("cpu", "sum") == {}  # a sum readout has no width to narrow
    with pytest.raises(KeyError):
        lf_preset("huge", "sum")
