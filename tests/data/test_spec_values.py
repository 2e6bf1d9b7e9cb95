"""Issue 13, class 5: every spec value and CLI flag is checked up front, naming the key or flag.

These used to be accepted and fail later (numpy tracebacks, NaN metrics with exit 0, a store written
outside --out, a fidelity split at its colon, a Ray trial failing a minute in)."""

from __future__ import annotations

import pytest

from mfray.cli.main import main
from mfray.data.specs import load_spec
from mfray.run.study import parse_study
from mfray.utils.errors import SpecError

from test_bad_input import spec_text


@pytest.mark.parametrize("old, new, needle", [
    ("seeds = [1]", "seeds = [1]\nfractions = [nan, 0.5, 0.5]", "split.fractions"),
    ("seeds = [1]", "seeds = [1]\nfractions = [1.0, 0.0, 0.0]", "must each be > 0 and sum to 1"),
    ("seeds = [1]", "seeds = [-1]", "split.seeds: Value error, seeds: -1 is not in 0 .. 2**32 - 1"),
    ("seeds = [1]", "seeds = [18446744073709551616]", "split.seeds"),
    ("seeds = [1]", "seeds = [1, 1]", "seeds: [1] given more than once"),
    ("seeds = [1]", "seeds = []", "seeds: give at least one seed"),
    ('name = "bad"', 'name = ".."', "name: String should match pattern"),
    ('name = "bad"', 'name = "../escape"', "name: String should match pattern"),
    ('fidelity = "lf"', 'fidelity = "l:f"', "source.labels[0].fidelity: String should match pattern"),
])
def test_dataset_spec_values_are_checked_on_load(tmp_path, old, new, needle):
    p = tmp_path / "s.toml"
    p.write_text(spec_text().replace(old, new, 1))
    with pytest.raises(SpecError) as e:
        load_spec(p)
    assert str(p) in str(e.value) and needle in str(e.value)


@pytest.mark.parametrize("argv, needle", [
    (["featurize", "aid1445", "--batch-size", "0"], "argument --batch-size: 0: give at least 1"),
    (["featurize", "aid1445", "--workers", "-1"], "argument --workers: -1: give at least 1"),
    (["featurize", "aid1445", "--local-below", "-5"], "argument --local-below: -5: give at least 0"),
    (["train", "aid1445", "--strategy", "base", "--freeze", "bogus"], "argument --freeze: unknown stage(s) bogus"),
    (["train", "aid1445", "--strategy", "base", "--batch-size", "0"], "argument --batch-size: 0: give at least 1"),
    (["train", "aid1445", "--strategy", "base", "--lr", "-1"], "argument --lr: -1: give a number above 0"),
    (["predict", "m", "x.csv", "--batch-size", "0"], "argument --batch-size: 0: give at least 1"),
    (["predict", "m", "x.csv", "--chunk-rows", "0"], "argument --chunk-rows: 0: give at least 1"),
    (["baseline", "aid1445", "--jobs", "0"], "argument --jobs: 0: give at least 1"),
    (["baseline", "aid1445", "--seed", "-1"], "argument --seed: -1"),
])
def test_cli_flags_are_checked_before_any_work(capsys, argv, needle):
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and needle in err and "Traceback" not in err


def test_training_a_dataset_without_hf_labels_says_so(tmp_path, capsys):
    (tmp_path / "lf.csv").write_text("id,smiles,lf,hf\n" + "".join(f"{i},{'C' * i}O,{i},\n" for i in range(1, 12)))
    (tmp_path / "lf.toml").write_text(spec_text("lf.csv").replace('name = "bad"', 'name = "lfonly"'))
    code = main(["train", str(tmp_path / "lf.toml"), "--strategy", "base", "--epochs", "1", "--out",
                 str(tmp_path / "runs"), "--store-root", str(tmp_path / "stores")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "has no hf labels to train on" in err and "Traceback" not in err


STUDY = {"name": "t", "tasks": ["aid1445"], "strategies": ["base"], "model": {"hidden_dim": 64},
         "readout_kwargs": {"set_transformer": {"hidden_dim": 64, "num_heads": 4}},
         "search": {"space": {"readout": ["sum", "set_transformer"]}}}


def _with(**patch):
    out = {**STUDY}
    for key, value in patch.items():
        section, _, sub = key.partition("__")
        out[section] = {**out.get(section, {}), sub: value} if sub else value
    return out


@pytest.mark.parametrize("study, needle", [
    (_with(readout_kwargs={"set_transformer": {"hidden_dim": 64, "num_heads": 3}}),
     "readout 'set_transformer' and [readout_kwargs.set_transformer] cannot be built: MAB: num_heads (3) must divide"),
    (_with(readout_kwargs={"set_transformer": {"colour": 1}}), "unknown argument(s) ['colour'] for readout"),
    (_with(train__max_epochs="ten"), "train.max_epochs = 'ten'"),
    (_with(train__batch_size=0), "train.batch_size = 0: give a whole number >= 1"),
    (_with(train__lr_factor=2), "train.lr_factor = 2.0: give a number between 0 and 1"),
    (_with(model__encoder_kwargs={"nonsense": 1}), "got an unexpected keyword argument 'nonsense'"),
    (_with(model__head_kwargs={"dropout": "x"}), "(with head_kwargs = {'dropout': 'x'})"),
    (_with(search={"space": {"encoder": ["gcn", "gin"]}}),
     "search.space.encoder = 'gin' with readout 'set_transformer' cannot be built: the supervised VGAE encoder is GCN-based"),
])
def test_study_model_settings_are_built_before_ray(study, needle):
    with pytest.raises(SpecError) as e:
        parse_study(study, "s.toml")
    assert needle in str(e.value)


def test_a_good_study_still_loads():
    assert parse_study(STUDY, "s.toml").name == "t"
