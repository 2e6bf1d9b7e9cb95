"""The contract every registered transfer strategy keeps (a new strategy is tested here by registering it).

For each strategy and each setting it supports: its needs can be met in that setting; it trains end to
end; its LF inputs change its predictions (an augmentation scaled to zeros, or an offset ignored, fails
here); what it freezes stays bit-identical, BatchNorm statistics included; ``mfray train`` and a study
give it the same learning rate; and what a run records (readout, frozen stages) is the built model's.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mfray.cli.main import main
from mfray.data.tasks import load_task
from mfray.models import build_model
from mfray.run.study import parse_study
from mfray.run.study.space import resolve_config
from mfray.train.loop import TrainConfig, seed_everything
from mfray.train.task import HFRunConfig, LFRunConfig, pretrain_lf, train_hf
from mfray.transfer import SETTINGS, STRATEGIES, LFInput, get_strategy

SMALL = {"hidden_dim": 16, "latent_dim": 8, "head_hidden_dim": 16}
ST_SMALL = {"hidden_dim": 16, "num_heads": 2, "num_seeds": 2, "out_dim": 8}
NAMES = STRATEGIES.names()
CASES = [(n, s) for n in NAMES for s in SETTINGS if get_strategy(n).supports(s)]


@pytest.fixture(scope="module")
def seed(demo_spec):
    return demo_spec.split.seeds[0]


@pytest.fixture(scope="module")
def lf_models(demo_store, seed, tmp_path_factory):
    """Tiny LF models per readout; the inductive ones never saw split ``seed``'s valid/test molecules."""
    out = {}
    for setting in SETTINGS:
        for readout, kw in (("sum", {}), ("set_transformer", ST_SMALL)):
            cfg = LFRunConfig(readout=readout, model={**SMALL, "readout_kwargs": kw},
                              train=TrainConfig(lr=1e-3, batch_size=64, max_epochs=1, patience=0),
                              holdout_seeds=[seed] if setting == "inductive" else None)
            path, _ = pretrain_lf(demo_store, cfg, tmp_path_factory.mktemp(f"lf_{setting}_{readout}"))
            out[(setting, readout)] = str(path)
    return out


def _task(store, seed, setting, n=(48, 16, 16)):
    t = load_task(store, seed).for_setting(setting)
    for f, k in zip(("train", "valid", "test"), n):
        t.folds[f] = t.folds[f].subset(slice(0, k))
    return t


def _cfg(name, setting, lf_models, **kw):
    s = get_strategy(name)
    readout = s.lf_readouts(parse_study({"name": "x", "tasks": ["aid1445"]}))[0] if s.lf_init else "set_transformer"
    ckpt = lf_models[(setting, readout)] if s.needs_lf_model(setting) else None
    return HFRunConfig(strategy=name, model={} if s.lf_init else SMALL, lf_checkpoint=ckpt,
                       train=TrainConfig(lr=3e-3, batch_size=16, max_epochs=2, patience=0, seed=3), **kw)


@pytest.mark.parametrize("name", NAMES)
def test_needs_and_supports_agree_with_the_settings(name):
    s = get_strategy(name)
    assert s.supports("transductive"), "every strategy runs where all molecules have measured LF labels"
    for setting in SETTINGS:
        needs = s.needs(setting)
        assert needs <= set(LFInput)
        if s.supports(setting) and setting == "inductive" and LFInput.LABEL in needs:
            # new molecules have no measured label: only a fallback to the LF model makes this work
            assert LFInput.PREDICTION in needs
    if s.lf_init:
        assert s.needs_lf_model("transductive") and s.lf_readouts(parse_study({"name": "x", "tasks": ["aid1445"]}))


@pytest.mark.parametrize(("name", "setting"), CASES)
def test_trains_and_records_the_built_model(name, setting, demo_store, seed, lf_models, tmp_path):
    task = _task(demo_store, seed, setting)
    res = train_hf(task, _cfg(name, setting, lf_models), out_dir=tmp_path)
    ckpt = torch.load(tmp_path / "best.ckpt", weights_only=True)
    built = ckpt["model_spec"]
    assert res.readout == built["readout"] == res.model_spec.readout
    assert ckpt["meta"]["freeze"] == list(res.freeze_plan.stages)
    assert ckpt["meta"]["setting"] == setting
    assert res.train_config.lr == 3e-3
    s = get_strategy(name)
    assert res.freeze_plan.stages == s.default_freeze
    assert set(res.lf_inputs) == {k.value for k in s.needs(setting)}
    assert np.isfinite(res.predictions["y_pred"].to_numpy()).all()


@pytest.mark.parametrize(("name", "setting"), [c for c in CASES if get_strategy(c[0]).needs(c[1])])
def test_lf_inputs_change_the_predictions(name, setting, demo_store, seed, lf_models):
    """The same run with the LF inputs shuffled across molecules must predict differently."""
    task = _task(demo_store, seed, setting)
    cfg = _cfg(name, setting, lf_models)
    a = train_hf(task, cfg).predictions
    rng = np.random.default_rng(0)
    shuffled = _task(demo_store, seed, setting)
    needs = get_strategy(name).needs(setting)
    if LFInput.LABEL in needs:
        for f in ("train", "valid", "test"):
            lab = shuffled.folds[f].aux["lf_label"]
            shuffled.folds[f].aux["lf_label"] = lab[rng.permutation(len(lab))]
    if needs & {LFInput.PREDICTION, LFInput.EMBEDDING} and not (LFInput.LABEL in needs and setting == "transductive"
                                                                and name == "hybrid_label"):
        # LF-model inputs: reverse the molecule order the LF model's outputs are matched to
        from mfray.train import task as train_task

        orig = train_task.lf_model_outputs

        def reversed_outputs(t, model, ck):
            fn = orig(t, model, ck)
            return lambda fold: tuple(x[::-1].copy() for x in fn(fold))

        train_task.lf_model_outputs = reversed_outputs
        try:
            b = train_hf(shuffled, cfg).predictions
        finally:
            train_task.lf_model_outputs = orig
    else:
        b = train_hf(shuffled, cfg).predictions
    assert not np.allclose(a["y_pred"].to_numpy(), b["y_pred"].to_numpy(), atol=1e-5), name


@pytest.mark.parametrize(("name", "setting"), CASES)
def test_frozen_stages_stay_bit_identical(name, setting, demo_store, seed, lf_models, tmp_path):
    s = get_strategy(name)
    freeze = None if s.default_freeze else ["encoder"]
    cfg = _cfg(name, setting, lf_models, freeze=freeze)
    task = _task(demo_store, seed, setting)
    res = train_hf(task, cfg, out_dir=tmp_path)
    frozen = res.freeze_plan.stages
    assert "encoder" in frozen and res.n_trainable < res.n_params
    if s.lf_init:
        before = torch.load(cfg.lf_checkpoint, weights_only=True)["state_dict"]
    else:  # the initial weights depend on the seed only
        seed_everything(cfg.train.seed)
        before = build_model(res.model_spec).state_dict()
    after = torch.load(tmp_path / "best.ckpt", weights_only=True)["state_dict"]
    enc = [k for k in after if k.startswith("encoder.")]
    assert any("running_mean" in k for k in enc)
    changed = [k for k in enc if not torch.equal(before[k], after[k])]
    assert not changed, f"{name}: frozen encoder tensors changed: {changed[:3]}"
    if res.fit.best_epoch >= 0:  # trained weights kept (not the starting point): the head did train
        head = [k for k in after if k.startswith("head.") and after[k].is_floating_point() and "running" not in k]
        assert any(not torch.equal(before[k], after[k]) for k in head if k in before)


@pytest.mark.parametrize("name", NAMES)
def test_the_strategy_lr_is_the_same_in_mfray_train_and_in_a_study(name, demo_store, lf_models, tmp_path):
    import tomllib

    s = get_strategy(name)
    args = ["train", "aid1445", "--strategy", name, "--epochs", "1", "--out", str(tmp_path), "--no-progress",
            "--store-root", str(demo_store.path.parents[1])]
    if s.needs_lf_model("transductive"):
        readout = s.lf_readouts(parse_study({"name": "x", "tasks": ["aid1445"]}))[0] if s.lf_init else "sum"
        args += ["--lf-checkpoint", lf_models[("transductive", readout)]]
    if not s.lf_init:
        args += ["--hidden-dim", "16", "--latent-dim", "8"]
    assert main(args) == 0
    cli_lr = tomllib.loads((tmp_path / "config.toml").read_text())["train"]["lr"]
    study = parse_study({"name": "x", "tasks": ["aid1445"], "strategies": [name]})
    assert cli_lr == resolve_config(study, name, {})["train"]["lr"] == s.lr
