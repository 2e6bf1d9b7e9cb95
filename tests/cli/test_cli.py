import subprocess
import sys

import pytest

from mfray.cli.main import main


def test_data_list_shows_the_known_specs(capsys):
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("aid1445", "serine", "mfpcba_1431-873", "qmugs", "az_template"):
        assert name in out
    assert main(["data", "list", "--tag", "paper23"]) == 0
    out = capsys.readouterr().out
    assert "dataset specs (" in out and "qmugs " not in out


def test_data_show(capsys):
    assert main(["data", "show", "aid1445"]) == 0
    out = capsys.readouterr().out
    assert "label hf/DR <- dr['DR']" in out and "seeds [946067" in out and "artifact STEmbeddings (embedding)" in out
    assert main(["data", "show", "aid1445", "--json"]) == 0
    assert '"name": "aid1445"' in capsys.readouterr().out


def test_featurize_prints_counts_and_then_hits_the_cache(tmp_path, capsys):
    args = ["featurize", "aid1445", "--out", str(tmp_path), "--local", "--no-progress"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "featurised aid1445" in out
    assert "rows read                655" in out and "rows quarantined           0" in out
    assert "quarantine.parquet" in out and "bytes/molecule" in out
    assert main(args) == 0
    assert "cache hit: aid1445 is already featurised" in capsys.readouterr().out


def test_console_script_and_help():
    out = subprocess.run([sys.executable, "-m", "mfray.cli.main", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "featurize" in out.stdout and "data" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "mfray.cli.main", "featurize"], capture_output=True, text=True)
    assert bad.returncode == 2 and "DATA_SPEC" in bad.stderr


def test_python_dash_m_mfray():
    out = subprocess.run([sys.executable, "-m", "mfray", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("mfray ")


def test_study_export_errors_exit_2(tmp_path, capsys):
    study = tmp_path / "s.toml"
    study.write_text('name = "s"\ntasks = ["aid1445"]\nstrategies = ["base"]\n')
    common = ["study", "export", str(study), "--storage", str(tmp_path / "st"), "--store-root", str(tmp_path / "g"),
              "--out", str(tmp_path / "m")]
    assert main([*common, "--task", "aid1445", "--strategy", "base"]) == 2
    assert "has no finished runs" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # --strategy or --best is required (argparse: exit 2)
        main([*common, "--task", "aid1445"])
    assert e.value.code == 2


def test_a_dataset_argument_that_cannot_be_a_path_exits_2(capsys):
    """A name too long for a file name is not a traceback (OSError) but a clear usage error."""
    assert main(["featurize", "x" * 5000]) == 2
    err = capsys.readouterr().err
    assert "not a spec file or a dataset name" in err and "File name too long" in err and len(err) < 400
