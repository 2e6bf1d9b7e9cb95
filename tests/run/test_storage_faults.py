"""Issue 13, class 8: storage faults give one message naming the path, and never leave a state that
blocks the next run: a storage path that is a file, a read-only storage, an Optuna database in a folder
that does not exist, a full disk (a small tmpfs, where this machine lets the test mount one), a
truncated Tune state (the 0-byte tuner.pkl a full disk leaves), and the work folder of a killed
featurise."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mfray.cli.main import main
from mfray.run.featurize import _HOST, featurize_dataset
from mfray.run.study import make_plan, parse_study
from mfray.run.study.runner import _optuna_storage

pytestmark = pytest.mark.faults

STUDY = """
name = "tiny"
tasks = ["aid1445"]
strategies = ["base"]
max_seeds = 1
[train]
max_epochs = 2
patience = 0
batch_size = 64
[model]
hidden_dim = 16
latent_dim = 8
head_hidden_dim = 16
[search]
num_samples = 1
"""


@pytest.fixture
def study(tmp_path):
    p = tmp_path / "tiny.toml"
    p.write_text(STUDY)
    return p


def _mount_tmpfs(path: Path, options: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True).returncode == 0


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_a_storage_path_that_is_a_file(study, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    assert main(["study", "run", str(study), "--storage", str(tmp_path / "afile"), "--no-report"]) == 2
    err = capsys.readouterr().err
    assert f"--storage {tmp_path / 'afile'}: this is a file; give a folder" in err and "Traceback" not in err


def test_a_read_only_storage(study, tmp_path, capsys):
    ro = tmp_path / "ro"
    if os.geteuid() == 0:  # root writes through permission bits: a read-only mount, where allowed
        if not _mount_tmpfs(ro, "size=1m,ro"):
            pytest.skip("running as root and cannot mount a read-only tmpfs here")
    else:
        ro.mkdir()
        ro.chmod(0o555)
    try:
        assert main(["study", "run", str(study), "--storage", str(ro), "--no-report"]) == 2
        err = capsys.readouterr().err
        assert f"--storage {ro}: cannot write there" in err and "Traceback" not in err
    finally:
        if os.geteuid() == 0:
            _umount(ro)
        else:
            ro.chmod(0o755)


def test_an_optuna_database_in_a_missing_folder_is_made(tmp_path):
    spec = parse_study({**__import__("tomllib").loads(STUDY), "search": {"num_samples": 1, "storage": "deep/er/optuna.db"}},
                       "s.toml")
    plan = make_plan(spec, str(tmp_path / "st"))
    storage = _optuna_storage(plan)
    assert storage is not None and (tmp_path / "st" / "deep" / "er").is_dir()


def test_a_full_disk_names_the_path_and_leaves_nothing_behind(demo_spec, tmp_path, capsys):
    full = tmp_path / "full"
    if not _mount_tmpfs(full, "size=48k"):
        pytest.skip("cannot mount a small tmpfs here")
    try:
        code = main(["featurize", "aid1445", "--out", str(full), "--local", "--no-progress"])
        err = capsys.readouterr().err
        assert code == 2, err
        assert "no space left on the device" in err and str(full) in err and "Traceback" not in err
        assert "Finished work is kept" in err
        assert not [p for p in full.rglob("*") if p.is_file()]  # no half store, no work folder
    finally:
        _umount(full)


def test_a_killed_featurise_leaves_no_work_folder_for_long(demo_spec, tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    left = tmp_path / f".aid1445-0123abcd.{_HOST}.{gone.pid}.k1ll3d"
    (left / "raw").mkdir(parents=True)
    (left / "raw" / "raw-00000.parquet").write_bytes(b"x" * 1000)
    alive = tmp_path / f".aid1445-0123abcd.{_HOST}.{os.getpid()}.runnin"  # a run still going is left alone
    alive.mkdir()
    said: list[str] = []
    featurize_dataset(demo_spec, tmp_path, executor="local", progress=False, log=said.append)
    assert not left.exists() and alive.exists()
    assert any("removed 1 work folder(s)" in m for m in said)


@pytest.mark.ray
def test_a_truncated_tune_state_restarts_the_search(study, tmp_path):
    storage = tmp_path / "st"
    from mfray.run.study import load_study

    plan = make_plan(load_study(study), str(storage))
    exp = storage / "ray" / f"search-{plan.searches[0].key}"
    exp.mkdir(parents=True)
    (exp / "tuner.pkl").write_bytes(b"")  # what a full disk left behind
    env = {**os.environ, "MFRAY_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1", "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    res = subprocess.run([sys.executable, "-m", "mfray", "study", "run", str(study), "--storage", str(storage),
                          "--no-report"], env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "its saved state cannot be read (EOFError" in res.stderr and "starting the search over" in res.stderr
    assert list((storage / "ray").glob(f"search-{plan.searches[0].key}.unreadable-*/tuner.pkl"))
    assert (storage / "search").exists() and list((storage / "results" / "study=tiny").glob("run-*.parquet"))


def test_kill_9_during_featurise_then_the_same_command(tmp_path):
    """A featurise killed mid-run leaves no store (the manifest is written last) and its work folder is
    removed by the next run, which builds the store from scratch."""
    import signal
    import time

    out = tmp_path / "stores"
    cmd = [sys.executable, "-m", "mfray", "featurize", "fatty_acid_synthase_demo", "--out", str(out), "--local",
           "--no-progress", "--batch-size", "256"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 600
    while not list(out.glob(".fatty_acid_synthase_demo-*/featurized/*.parquet")):  # featurising has begun
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.time() < deadline, "featurise did not start"
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    left = list(out.glob(".fatty_acid_synthase_demo-*"))
    assert len(left) == 1 and not list(out.glob("fatty_acid_synthase_demo/*/manifest.json"))
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "removed 1 work folder(s)" in res.stderr + res.stdout
    assert not left[0].exists() and len(list(out.glob("fatty_acid_synthase_demo/*/manifest.json"))) == 1
