"""LF pretraining on Ray Train: 2 gloo workers write a loadable lf.ckpt; the same run name resumes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mfray.models.checkpoint import load_model
from mfray.run.pretrain import PretrainError, pretrain_lf_distributed, run_name
from mfray.train.loop import TrainConfig
from mfray.train.task import LFRunConfig, pretrain_lf

pytestmark = pytest.mark.ray

SMALL = {"hidden_dim": 32, "latent_dim": 8, "head_hidden_dim": 32}


def _cfg(epochs: int) -> LFRunConfig:
    return LFRunConfig(readout="sum", model=SMALL, train=TrainConfig(lr=1e-3, batch_size=64, max_epochs=epochs, patience=0))


@pytest.fixture(scope="module")
def ray_local():
    import ray

    from mfray.run.runtime import ensure_ray

    if ray.is_initialized():
        ray.shutdown()
    os.environ.pop("RAY_ADDRESS", None)
    ensure_ray(num_cpus=2)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def first_run(ray_local, demo_store, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pretrain_ray")
    kw = {"storage_path": tmp / "ray", "name": "lf-test", "num_workers": 2, "log": lambda m: None}
    res = pretrain_lf_distributed(demo_store.path, _cfg(2), tmp / "out", **kw)
    return res, tmp, kw


def test_two_workers_write_a_loadable_checkpoint(first_run, demo_store):
    res, tmp, _ = first_run
    assert res.checkpoint == tmp / "out" / "lf.ckpt" and res.resumed_from_epoch is None
    assert res.epochs_run == 2 and res.num_workers == 2
    model, ckpt = load_model(res.checkpoint)
    assert ckpt["kind"] == "lf" and ckpt["meta"]["num_workers"] == 2 and ckpt["meta"]["best_epoch"] == res.best_epoch
    assert {"dataset", "fidelity", "targets", "n_train", "n_valid", "train_config", "load_seconds"} <= set(ckpt["meta"])
    assert set(ckpt["scalers"]) == {"y"} and model.spec.readout == "sum"
    raw = torch.load(res.checkpoint, weights_only=True)
    assert raw["state_dict"].keys() == model.state_dict().keys()
    hist = json.loads((tmp / "out" / "history.json").read_text())
    assert len(hist["history"]) == 2 and hist["world_size"] == 2
    assert len(res.peak_rss_mb) == 2 and all(m > 50 for m in res.peak_rss_mb) and len(res.data_mb) == 2
    assert res.graphs_per_s > 0 and len(res.graphs_per_s_per_epoch) == 2
    n_train = ckpt["meta"]["n_train"]
    assert res.history[0]["graphs"] == n_train  # the two shards together cover the training set once


def test_same_name_resumes_from_the_last_checkpoint(first_run, demo_store):
    first, tmp, kw = first_run
    res = pretrain_lf_distributed(demo_store.path, _cfg(4), tmp / "out", **kw)
    assert res.resumed_from_epoch == 2 and res.epochs_run == 4
    assert [h["epoch"] for h in res.history] == [0, 1, 2, 3]
    assert res.history[:2] == first.history  # epochs 0-1 come from the checkpoint, not re-run
    assert json.loads((tmp / "out" / "history.json").read_text())["epochs_run"] == 4


def test_run_name_is_deterministic_and_ignores_max_epochs(demo_store):
    a = run_name(demo_store, _cfg(2), 2)
    assert a == run_name(demo_store, _cfg(5), 2) and a.startswith("pretrain-aid1445-sum-")
    assert a != run_name(demo_store, _cfg(2), 1)
    with pytest.raises(PretrainError, match="num_workers"):
        pretrain_lf_distributed(demo_store.path, _cfg(1), "unused", storage_path="unused", name="x", num_workers=0)


def test_cli_flags_need_workers(tmp_path, capsys):
    from mfray.cli.main import main

    common = ["--epochs", "1", "--out", str(tmp_path), "--store-root", str(tmp_path / "s"), "--no-progress"]
    assert main(["pretrain", "aid1445", "--use-gpu", *common]) == 2
    assert "give --workers" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # refused as the flags are parsed
        main(["pretrain", "aid1445", "--workers", "0", *common])
    assert e.value.code == 2 and "argument --workers: 0: give at least 1" in capsys.readouterr().err


def test_workers_know_their_own_cluster(ray_local):
    """Every worker of a local Ray started by mfray has RAY_ADDRESS = its own cluster's (Ray's State API
    clients inside the cluster, such as Ray Train's placement-group cleaner, look there first)."""
    import ray

    @ray.remote(num_cpus=0)
    def address():
        return os.environ.get("RAY_ADDRESS")

    assert ray.get(address.remote()) == ray.get_runtime_context().gcs_address


def test_cli_worker_logs_are_plain_text(ray_local, demo_store, tmp_path):
    """`mfray pretrain --workers 2` writing into pipes while another local Ray runs on this machine (this
    module's): rank 0's epoch lines reach the driver without ANSI colour codes, and no Ray-internal
    traceback (Ray Train's placement-group cleaner) appears on a run that succeeds."""
    cmd = [sys.executable, "-m", "mfray", "pretrain", "aid1445", "--hidden-dim", "16", "--latent-dim", "4",
           "--epochs", "1", "--max-steps", "2", "--workers", "2", "--out", str(tmp_path / "lf"),
           "--store-root", str(Path(demo_store.path).parents[1]), "--no-progress"]
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_COLOR_PREFIX", "NO_COLOR")}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    text = done.stdout + done.stderr
    assert done.returncode == 0, text
    assert "epoch 0: train" in text and "pretrained set_transformer LF model" in text, text
    # Ray Train's State API needs the dashboard: it runs, and the driver says where
    assert "Ray dashboard: http://127.0.0.1:" in text, text
    assert "loss = LF MSE + VGAE recon + 0.001 KL" in text, text  # rank 0 says what the loss adds up
    assert "\x1b[" not in text, text
    assert "Traceback" not in text and "PlacementGroupCleaner" not in text, text


@pytest.mark.slow
def test_killed_driver_resumes(tmp_path, demo_store):
    """``mfray pretrain --workers 1`` killed after its first checkpoint; the same command resumes it."""
    out = tmp_path / "lf"
    cmd = [sys.executable, "-m", "mfray", "pretrain", "aid1445", "--workers", "1", "--readout", "sum",
           "--hidden-dim", "32", "--latent-dim", "8", "--batch-size", "16", "--lr", "1e-3", "--epochs", "400",
           "--out", str(out), "--store-root", str(Path(demo_store.path).parents[1]), "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        deadline = time.time() + 180
        while time.time() < deadline and not list((out / "ray").glob("*/checkpoint_*")):
            time.sleep(1)
        assert list((out / "ray").glob("*/checkpoint_*")), "no checkpoint before the deadline"
        time.sleep(3)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray it started
        proc.wait()
    assert not (out / "lf.ckpt").exists()
    done = subprocess.run([*cmd[:cmd.index("400")], "2", *cmd[cmd.index("400") + 1:]], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "resumed with" in done.stdout, done.stdout
    assert "graphs/s" in done.stdout and "peak RSS per worker" in done.stdout
    model, ckpt = load_model(out / "lf.ckpt")
    assert ckpt["meta"]["num_workers"] == 1
    # one worker trains exactly as one process: the killed-and-resumed run equals an uninterrupted pretrain_lf
    epochs = json.loads((out / "history.json").read_text())["epochs_run"]
    cfg = LFRunConfig(readout="sum", model={"hidden_dim": 32, "latent_dim": 8},
                      train=TrainConfig(lr=1e-3, batch_size=16, max_epochs=epochs, patience=0,
                                        precision="auto", bucket_by_size=True))  # mfray pretrain's defaults
    ref, _ = pretrain_lf(demo_store, cfg, tmp_path / "ref")
    ref_model, _ = load_model(ref)
    a, b = model.state_dict(), ref_model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
