import json

import polars as pl
import pyarrow.parquet as pq
import pytest
import torch

from mfray.cli.main import main


def test_train_pretrain_embed(tmp_path, capsys):
    root = str(tmp_path / "stores")
    small = ["--hidden-dim", "16", "--latent-dim", "4", "--no-progress", "--store-root", root]
    out = tmp_path / "label"
    assert main(["train", "aid1445", "--strategy", "label", "--epochs", "3", "--out", str(out), *small]) == 0
    text = capsys.readouterr().out
    assert "label on aid1445:hf/DR (seed 946067)" in text and "test" in text and "r2" in text
    for f in ("config.toml", "best.ckpt", "predictions.parquet", "metrics.json", "history.json"):
        assert (out / f).exists(), f
    ckpt = torch.load(out / "best.ckpt", weights_only=True)
    assert ckpt["kind"] == "hf" and ckpt["model_spec"]["aux_dim"] == 1 and ckpt["meta"]["strategy"] == "label"
    preds = pl.read_parquet(out / "predictions.parquet")
    assert preds.filter(pl.col("fold") == "test").height == 66
    m = json.loads((out / "metrics.json").read_text())["metrics"]
    assert set(m["test"]) == {"mae", "rmse", "r2", "pearson"}

    lf = tmp_path / "lf"
    assert main(["pretrain", "aid1445", "--readout", "attention", "--epochs", "1", "--out", str(lf), *small]) == 0
    assert (lf / "lf.ckpt").exists() and "pretrained attention LF model" in capsys.readouterr().out

    emb = tmp_path / "emb.parquet"
    assert main(["embed", str(lf / "lf.ckpt"), "aid1445", "--out", str(emb), "--fidelity", "hf", "--store-root", root]) == 0
    t = pq.read_table(emb)
    assert t.num_rows == 655 and t.schema.field("embedding").type.list_size == 4

    tuned = tmp_path / "tuned"
    assert main(["train", "aid1445", "--strategy", "embeddings", "--lf-checkpoint", str(lf / "lf.ckpt"),
                 "--epochs", "2", "--out", str(tuned), *small]) == 0
    assert "LF checkpoint" in json.loads((tuned / "metrics.json").read_text())["lf_inputs"]["lf_embedding"]


def test_train_errors_exit_2(tmp_path, capsys):
    code = main(["train", "aid1445", "--strategy", "tune_readout", "--epochs", "1", "--out", str(tmp_path),
                 "--store-root", str(tmp_path / "s"), "--no-progress"])
    assert code == 2 and "give an LF checkpoint" in capsys.readouterr().err
    code = main(["embed", str(tmp_path / "missing.ckpt"), "aid1445", "--out", str(tmp_path / "x.parquet"),
                 "--store-root", str(tmp_path / "s")])
    assert code == 2 and "checkpoint does not exist" in capsys.readouterr().err


def test_bad_model_choices_exit_2(tmp_path, capsys):
    common = ["--epochs", "1", "--out", str(tmp_path), "--store-root", str(tmp_path / "s"), "--no-progress"]
    assert main(["train", "aid1445", "--strategy", "base", "--readout", "sumx", *common]) == 2
    assert "could not resolve readout 'sumx'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # refused as the flags are parsed
        main(["train", "aid1445", "--strategy", "base", "--hidden-dim", "0", *common])
    assert e.value.code == 2 and "argument --hidden-dim: 0: give at least 1" in capsys.readouterr().err


def test_pretrain_size_preset_and_flags(tmp_path):
    """--size cpu gives the narrow Set Transformer; an explicit encoder flag still wins."""
    import tomllib

    lf = tmp_path / "lf"
    assert main(["pretrain", "aid1445", "--size", "cpu", "--hidden-dim", "16", "--latent-dim", "4", "--epochs", "1",
                 "--max-steps", "1", "--out", str(lf), "--no-progress", "--store-root", str(tmp_path / "s")]) == 0
    model = tomllib.loads((lf / "config.toml").read_text())["model"]
    assert model["hidden_dim"] == 16
    assert model["readout_kwargs"] == {"hidden_dim": 256, "num_heads": 8, "num_seeds": 8, "out_dim": 256}
    spec = torch.load(lf / "lf.ckpt", weights_only=True)["model_spec"]
    assert spec["readout_kwargs"]["hidden_dim"] == 256 and spec["hidden_dim"] == 16


def test_embed_refuses_hf_models_and_empty_inputs(tmp_path, capsys):
    root = str(tmp_path / "stores")
    small = ["--hidden-dim", "16", "--latent-dim", "4", "--no-progress", "--store-root", root]
    out = tmp_path / "label"
    assert main(["train", "aid1445", "--strategy", "label", "--epochs", "1", "--out", str(out), *small]) == 0
    capsys.readouterr()
    code = main(["embed", str(out / "best.ckpt"), "aid1445", "--out", str(tmp_path / "e.parquet"), "--store-root", root])
    err = capsys.readouterr().err
    assert code == 2 and "mfray predict" in err and "--embeddings" in err and "Traceback" not in err

    lf = tmp_path / "lf"
    assert main(["pretrain", "aid1445", "--epochs", "1", "--max-steps", "1", "--out", str(lf), *small]) == 0
    (tmp_path / "bad.csv").write_text("smiles,SD,DR\nC1CC,1,2\nnot a smiles,3,4\n")
    (tmp_path / "bad.toml").write_text('name = "allbad"\n[source]\nkind = "local"\n[source.files.f]\npath = "bad.csv"\n'
                                       'smiles_column = "smiles"\n[[source.labels]]\nfidelity = "lf"\ntarget = "SD"\n'
                                       'file = "f"\ncolumn = "SD"\n[[source.labels]]\nfidelity = "hf"\ntarget = "DR"\n'
                                       'file = "f"\ncolumn = "DR"\n')
    capsys.readouterr()
    code = main(["embed", str(lf / "lf.ckpt"), str(tmp_path / "bad.toml"), "--out", str(tmp_path / "e.parquet"),
                 "--store-root", root])
    err = capsys.readouterr().err
    assert code == 2 and ("no molecules" in err or "quarantined" in err), err
    assert not (tmp_path / "e.parquet").exists()


def _parsed(argv):
    from mfray.cli.main import build_parser

    return build_parser().parse_args(argv)


def test_presets_are_chosen_by_the_training_device_and_flags_win(capsys):
    from mfray.cli.common import apply_preset
    from mfray.train.presets import resolve_preset

    assert resolve_preset("auto", "cpu")[0].name == "cpu" and resolve_preset("auto", "cuda:0")[0].name == "paper"
    assert resolve_preset("paper", "cpu")[0].name == "paper"
    from mfray.models.spec import LF_PRESETS
    from mfray.train.presets import PRESETS

    assert all(make().lf_size in LF_PRESETS for make in PRESETS.values())

    args = _parsed(["train", "aid1445", "--strategy", "base"])
    apply_preset(args, "train", "cpu")
    assert (args.epochs, args.patience) == (300, 30)
    assert "preset cpu (auto: training on the CPU): at most 300 epochs, early-stopping patience 30" in capsys.readouterr().err
    args = _parsed(["train", "aid1445", "--strategy", "base", "--preset", "paper"])
    apply_preset(args, "train", "cpu")
    assert (args.epochs, args.patience) == (1000, 100)  # the reference protocol
    args = _parsed(["train", "aid1445", "--strategy", "base", "--epochs", "5"])
    apply_preset(args, "train", "cpu")
    assert (args.epochs, args.patience) == (5, 30)

    args = _parsed(["pretrain", "aid1445"])
    apply_preset(args, "pretrain", "cpu")
    assert (args.size, args.epochs, args.patience) == ("cpu", 10, 0)
    args = _parsed(["pretrain", "aid1445", "--workers", "2", "--use-gpu"])
    apply_preset(args, "pretrain", "cuda")  # what run_pretrain passes for --use-gpu
    assert args.size == "paper" and "preset paper (auto: training on GPUs)" in capsys.readouterr().err
    args = _parsed(["pretrain", "aid1445", "--preset", "paper", "--size", "cpu"])
    apply_preset(args, "pretrain", "cpu")
    assert args.size == "cpu"


def test_pretrain_defaults_to_the_cpu_size_here(tmp_path, capsys):
    """Without --size, a run on the CPU pretrains the cpu-size Set Transformer, and says so."""
    import tomllib

    lf = tmp_path / "lf"
    assert main(["pretrain", "aid1445", "--hidden-dim", "16", "--latent-dim", "4", "--epochs", "1", "--max-steps", "1",
                 "--out", str(lf), "--no-progress", "--store-root", str(tmp_path / "s")]) == 0
    config = tomllib.loads((lf / "config.toml").read_text())
    assert config["size"] == "cpu" and config["model"]["readout_kwargs"]["hidden_dim"] == 256
    err = capsys.readouterr().err
    assert "preset cpu (auto: training on the CPU): LF model size cpu, at most 1 epoch" in err
    assert "pretrain set_transformer: loss = LF MSE + VGAE recon + 0.001 KL; valid: the same" in err


def test_bad_preset_flags_exit_2(tmp_path, capsys):
    import pytest

    common = ["--out", str(tmp_path), "--store-root", str(tmp_path / "s"), "--no-progress"]
    for args, flag in ((["train", "aid1445", "--strategy", "base", "--epochs", "0"], "argument --epochs: 0"),
                       (["train", "aid1445", "--strategy", "base", "--patience", "-1"], "argument --patience: -1"),
                       (["pretrain", "aid1445", "--epochs", "-2"], "argument --epochs: -2")):
        with pytest.raises(SystemExit) as e:  # refused as the flags are parsed
            main([*args, *common])
        assert e.value.code == 2 and flag in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["train", "aid1445", "--strategy", "base", "--preset", "gpu", *common])
    assert e.value.code == 2 and "--preset" in capsys.readouterr().err


def test_train_says_what_its_loss_adds_up(tmp_path, capsys):
    assert main(["train", "aid1445", "--strategy", "label", "--epochs", "1", "--hidden-dim", "16", "--latent-dim", "4",
                 "--out", str(tmp_path / "r"), "--no-progress", "--store-root", str(tmp_path / "s")]) == 0
    err = capsys.readouterr().err
    assert "train label: loss = HF MSE + VGAE recon + 0.001 KL; valid: the same" in err


def test_the_progress_counts_steps_within_an_epoch(capsys):
    from mfray.cli.common import epoch_progress
    from mfray.train.loop import EpochLog, StepLog

    with epoch_progress(3, "pretrain sum", enabled=False, fidelity="LF") as bar:
        for k in (1, 2):
            bar.on_step(StepLog(epoch=0, step=k, steps=4, loss=0.5 / k, objective="MSE; valid: the same"))
        epochs, steps = bar.progress.tasks
        assert (steps.completed, steps.total, steps.fields["info"]) == (2, 4, "loss 0.2500")
        bar(EpochLog(epoch=0, train_loss=0.3, valid_loss=0.4, lr=1e-3, seconds=1.0))
        bar.on_step(StepLog(epoch=1, step=1, steps=4, loss=0.2, objective="MSE; valid: the same"))
        assert epochs.completed == 1 and "valid 0.4000" in epochs.fields["info"]
        assert (steps.completed, steps.description) == (1, "  epoch 2 steps")
    assert capsys.readouterr().err.count("pretrain sum: loss = LF MSE; valid: the same") == 1  # once, not per step


def test_building_the_command_line_imports_no_torch():
    """Every verb builds the whole parser first: it must not pay for torch (seconds) or Ray."""
    import subprocess
    import sys

    code = "import sys; from mfray.cli.main import build_parser; build_parser(); print(sorted({'torch', 'ray'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_train_replays_a_config(tmp_path, capsys):
    """--config FILE trains again what a run resolved (same metrics); flags given win; a search's
    best.json gives strategy, model and optimisation; bad files exit 2."""
    root = str(tmp_path / "stores")
    first = tmp_path / "first"
    assert main(["train", "aid1445", "--strategy", "label", "--epochs", "3", "--hidden-dim", "16", "--latent-dim", "4",
                 "--lr", "2e-3", "--out", str(first), "--no-progress", "--store-root", root]) == 0
    again = tmp_path / "again"
    assert main(["train", "--config", str(first / "config.toml"), "--out", str(again), "--no-progress",
                 "--store-root", root]) == 0
    m1 = json.loads((first / "metrics.json").read_text())["metrics"]["test"]
    m2 = json.loads((again / "metrics.json").read_text())["metrics"]["test"]
    assert m1 == m2
    ckpt = torch.load(again / "best.ckpt", weights_only=True)
    assert ckpt["model_spec"]["hidden_dim"] == 16 and ckpt["meta"]["train_config"]["lr"] == 2e-3
    flag = tmp_path / "flag"
    assert main(["train", "--config", str(first / "config.toml"), "--epochs", "1", "--out", str(flag), "--no-progress",
                 "--store-root", root]) == 0
    assert json.loads((flag / "metrics.json").read_text())["epochs_run"] == 1  # the flag won

    best = tmp_path / "best.json"
    best.write_text(json.dumps({"config": {"strategy": "base", "readout": "mean", "lf_readout": None, "freeze": None,
                                           "model": {"hidden_dim": 8, "latent_dim": 4},
                                           "train": {"lr": 1e-3, "max_epochs": 2, "patience": 0, "batch_size": 64}}}))
    out = tmp_path / "fromsearch"
    assert main(["train", "aid1445", "--config", str(best), "--out", str(out), "--no-progress", "--store-root", root]) == 0
    spec = torch.load(out / "best.ckpt", weights_only=True)["model_spec"]
    assert (spec["readout"], spec["hidden_dim"]) == ("mean", 8)
    capsys.readouterr()
    assert main(["train", "--config", str(best), "--store-root", root, "--no-progress"]) == 2
    assert "give DATA_SPEC" in capsys.readouterr().err
    for body, name, needle in (("{", "x.json", "not valid JSON"), ("a = 1", "x.toml", "not an mfray run configuration"),
                               ("", "x.yaml", "give a config.toml")):
        (tmp_path / name).write_text(body)
        assert main(["train", "aid1445", "--config", str(tmp_path / name), "--store-root", root]) == 2
        assert needle in capsys.readouterr().err
    assert main(["train", "aid1445", "--config", str(tmp_path / "none.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err



@pytest.mark.parametrize("verb, flag, value", [
    ("train", "--batch-size", "0"), ("train", "--lr", "-1"), ("train", "--lr", "nan"), ("train", "--epochs", "0"),
    ("train", "--patience", "-2"), ("train", "--hidden-dim", "0"), ("train", "--threads", "0"),
    ("train", "--seed", "-1"), ("train", "--seed", str(2**64)), ("train", "--freeze", "bogus"),
    ("train", "--unfreeze-epoch", "-1"), ("train", "--layers", "x"),
    ("pretrain", "--workers", "0"), ("pretrain", "--max-steps", "0"), ("pretrain", "--max-molecules", "3"),
    ("pretrain", "--seed", "-5"), ("pretrain", "--lr", "0"),
])
def test_bad_flag_values_are_usage_errors_naming_the_flag(verb, flag, value, tmp_path, capsys):
    args = [verb, "aid1445", flag, value, "--out", str(tmp_path / "out")]
    if verb == "train":
        args += ["--strategy", "base"]
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # refused before any work


def test_freezing_every_trainable_stage_is_a_clear_error(tmp_path, capsys):
    rc = main(["train", "aid1445", "--strategy", "label", "--freeze", "encoder,head", "--readout", "sum_mean_max",
               "--epochs", "1", "--hidden-dim", "8", "--latent-dim", "4", "--no-progress",
               "--store-root", str(tmp_path / "stores"), "--out", str(tmp_path / "out")])
    assert rc == 2
    assert "nothing to train" in capsys.readouterr().err
