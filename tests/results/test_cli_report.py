"""``mfray report``: prints the tables, writes figures and files, and names the studies on a bad --study."""

from __future__ import annotations

import argparse

import pytest
from results_synth import records

from mfray.cli import report as report_cmd
from mfray.cli.main import main
from mfray.results import ResultsStore
from mfray.utils.errors import MfrayError


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="mfray")
    sub = parser.add_subparsers(dest="verb", required=True)
    report_cmd.add_parser(sub)
    args = parser.parse_args(argv)
    return args.func(args)


def test_report_prints_tables(synth_store, capsys):
    assert _run(["report", synth_store.root, "--metric", "r2"]) == 0
    out = capsys.readouterr().out
    assert "## Study synth" in out and "### r2 (test) by task" in out and "| label | **0.401 ± 0.016** |" in out
    assert "mae" not in out


def test_report_latex_out_file_and_plots(synth_store, tmp_path, capsys):
    out_file = tmp_path / "tables.tex"
    assert _run(["report", synth_store.root, "--study", "synth", "--format", "latex", "--metric", "r2,mae",
                 "--plots", str(tmp_path / "figs"), "--out", str(out_file), "--seed-test", "wilcoxon"]) == 0
    text = out_file.read_text()
    assert text.count(r"\begin{table}") == 6 and "Wilcoxon signed-rank over split seeds" in text
    assert len(list((tmp_path / "figs").glob("*.png"))) == 6  # by task, gain, gain heatmap per metric
    assert capsys.readouterr().out == ""


def test_report_csv(synth_store, capsys):
    _run(["report", synth_store.root, "--format", "csv"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("study,metric,fold,task") and len(lines) == 1 + 24


def test_unknown_study_lists_studies(synth_store):
    with pytest.raises(MfrayError, match=r"unknown study 'nope'.*studies: synth"):
        _run(["report", synth_store.root, "--study", "nope"])


def test_missing_or_empty_storage(tmp_path):
    with pytest.raises(MfrayError, match="does not exist"):
        _run(["report", str(tmp_path / "absent")])
    with pytest.raises(MfrayError, match="no finished runs"):
        _run(["report", str(tmp_path)])


def test_study_storage_root_with_results_folder(tmp_path, capsys):
    ResultsStore(tmp_path / "results").append_runs(records(study="nested")[:10])
    assert _run(["report", str(tmp_path), "--metric", "r2"]) == 0
    assert "## Study nested" in capsys.readouterr().out


def test_plot_formats_and_transpose(synth_store, tmp_path, capsys):
    figs = tmp_path / "figs"
    assert _run(["report", synth_store.root, "--metric", "r2", "--plots", str(figs), "--plot-format", "png,pdf,svg",
                 "--transpose"]) == 0
    assert sorted({p.suffix for p in figs.iterdir()}) == [".pdf", ".png", ".svg"] and len(list(figs.iterdir())) == 9
    out = capsys.readouterr().out
    assert "| task | base | lf_linear | label | embeddings |" in out and "| avg rank |" in out


@pytest.mark.parametrize(("flags", "message"), [
    (["--plots", "FIGS", "--plot-format", "png,jpg"], "unknown plot format 'jpg': use one or more of png, pdf, svg"),
    (["--plot-format", "pdf"], "--plot-format needs --plots DIR"),
])
def test_bad_plot_format_exits_2_with_one_line(synth_store, tmp_path, capsys, flags, message):
    flags = [str(tmp_path / "figs") if f == "FIGS" else f for f in flags]
    assert main(["report", synth_store.root, *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mfray report: error: ") and message in err and "Traceback" not in err
    assert not (tmp_path / "figs").exists()


def test_report_skips_and_names_parts_it_cannot_read(tmp_path, capsys):
    """One truncated, one empty and one foreign part do not take the report of the other runs down."""
    import polars as pl

    from mfray.cli.main import main
    from mfray.results import ResultsStore

    store = ResultsStore(tmp_path / "st")
    store.append_runs(records())
    folder = tmp_path / "st" / "study=synth"
    good = sorted(folder.glob("run-*.parquet"))
    n_good = len(good)
    data = good[0].read_bytes()
    (folder / "run-truncated.parquet").write_bytes(data[: len(data) // 2])
    (folder / "run-empty.parquet").write_bytes(b"")
    pl.DataFrame({"smiles": ["CCO"], "y": [1.0]}).write_parquet(folder / "run-foreign.parquet")
    assert main(["report", str(tmp_path / "st"), "--metric", "r2"]) == 0
    cap = capsys.readouterr()
    assert "## Study synth" in cap.out
    assert "3 results part(s) skipped" in cap.err
    for name, why in (("run-truncated", "unreadable"), ("run-empty", "unreadable"), ("run-foreign", "not a results part")):
        line = next(x for x in cap.err.splitlines() if name in x)
        assert why in line, line
    df = store.read("synth")
    assert df["run_key"].n_unique() == n_good and len(store.skipped) == 3
