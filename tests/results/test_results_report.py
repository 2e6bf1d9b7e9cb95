"""Report numbers on a synthetic study with known effects, checked against numpy/scipy directly."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import polars as pl
import pytest
from results_synth import SEEDS, STRATEGIES, TASKS, VERSIONS, mae_value, r2_value, records
from scipy import stats

from mfray.results import ResultsError, ResultsStore, RunRecord
from mfray.results import report as R

TASK_NAMES = list(TASKS)
STRATS = list(STRATEGIES)


@pytest.fixture(scope="module")
def df(synth_store) -> pl.DataFrame:
    return synth_store.read("synth")


def _vals(fn, ti, si):
    return np.array([fn(ti, si, s) for s in SEEDS])


def test_summarize_means_and_stds(df):
    s = R.summarize(df, "r2")
    assert s.height == 12
    # row order: per task, base, lf_linear (floor) right before label, then the rest
    assert s.filter(pl.col("unit") == TASK_NAMES[0])["method"].to_list() == ["base", "lf_linear", "label", "embeddings"]
    for ti, task in enumerate(TASK_NAMES):
        for si, strat in enumerate(STRATS):
            row = s.filter((pl.col("task") == task) & (pl.col("strategy") == strat)).row(0, named=True)
            v = _vals(r2_value, ti, si)
            assert row["n_seeds"] == 5
            assert row["mean"] == pytest.approx(v.mean(), abs=1e-12)
            assert row["std"] == pytest.approx(v.std(ddof=1), abs=1e-12)
    s0 = R.summarize(df, "mae", ddof=0)
    assert s0["std"][0] == pytest.approx(_vals(mae_value, 0, 0).std(ddof=0), abs=1e-12)


def test_compare_to_base_signs(df):
    for metric, fn, sign in (("r2", r2_value, 1.0), ("mae", mae_value, -1.0)):
        c = R.compare_to_base(R.summarize(df, metric))
        for ti, task in enumerate(TASK_NAMES):
            base = _vals(fn, ti, 0).mean()
            for si, strat in enumerate(STRATS):
                row = c.filter((pl.col("task") == task) & (pl.col("strategy") == strat)).row(0, named=True)
                want = sign * (_vals(fn, ti, si).mean() - base)
                assert row["base_method"] == "base"
                assert row["change"] == pytest.approx(want, abs=1e-12)
                assert row["change_pct"] == pytest.approx(100 * want / abs(base), abs=1e-9)
            label = c.filter((pl.col("task") == task) & (pl.col("strategy") == "label")).row(0, named=True)
            floor = _vals(fn, ti, STRATS.index("lf_linear")).mean()
            assert label["floor_mean"] == pytest.approx(floor)
            label_mean = _vals(fn, ti, STRATS.index("label")).mean()
            assert label["change_vs_floor"] == pytest.approx(sign * (label_mean - floor))
            assert label["change_vs_floor"] > 0  # the synthetic label strategy beats the floor everywhere
        # the known effects: label +0.10/+0.15/+0.03 r2 over base (up to seed noise)
        if metric == "r2":
            got = c.filter(pl.col("strategy") == "label")["change"].to_numpy()
            np.testing.assert_allclose(got, STRATEGIES["label"][2], atol=0.02)


def test_ranks(df):
    for metric in ("r2", "mae"):
        r = R.rank(R.summarize(df, metric))
        got = dict(zip(r["method"], r["mean_rank"], strict=True))
        # expected from the effects: per task rank of each strategy by mean (same order for r2 and mae)
        means = np.array([[_vals(r2_value, ti, si).mean() for si in range(4)] for ti in range(3)])
        ranks = np.array([stats.rankdata(-m) for m in means])
        for si, strat in enumerate(STRATS):
            assert got[strat] == pytest.approx(ranks[:, si].mean())
        assert got["label"] == 1.0
        assert dict(zip(r["method"], r["n_best"], strict=True))["label"] == 3
        assert set(r["n_tasks"]) == {3}


def test_wilcoxon_across_tasks_matches_scipy(df):
    t = R.paired_tests(df, "r2")
    across = t.filter(pl.col("scope") == "tasks")
    assert across["method"].to_list() == ["lf_linear", "label", "embeddings"]
    for strat in ("lf_linear", "label", "embeddings"):
        si = STRATS.index(strat)
        x = np.array([_vals(r2_value, ti, si).mean() for ti in range(3)])
        y = np.array([_vals(r2_value, ti, 0).mean() for ti in range(3)])
        want = stats.wilcoxon(x, y)
        row = across.filter(pl.col("method") == strat).row(0, named=True)
        assert row["test"] == "Wilcoxon signed-rank" and row["n"] == 3
        assert row["p_value"] == pytest.approx(want.pvalue) and row["statistic"] == pytest.approx(want.statistic)
    assert across.filter(pl.col("method") == "label").row(0, named=True)["wins"] == 3


def test_paired_tests_across_seeds_match_scipy(df):
    for seed_test, fn in (("ttest", stats.ttest_rel), ("wilcoxon", stats.wilcoxon)):
        t = R.paired_tests(df, "mae", seed_test=seed_test).filter(pl.col("scope") == "seeds")
        assert t.height == 9 and set(t["test"]) == {R.SEED_TESTS[seed_test]}
        for ti, task in enumerate(TASK_NAMES):
            for si in (1, 2, 3):
                row = t.filter((pl.col("unit") == task) & (pl.col("method") == STRATS[si])).row(0, named=True)
                x, y = _vals(mae_value, ti, si), _vals(mae_value, ti, 0)
                assert row["p_value"] == pytest.approx(fn(x, y).pvalue)
                assert row["mean_change"] == pytest.approx((y - x).mean())  # mae: positive = lower than base


def test_fewer_than_two_tasks_is_na(df):
    one = df.filter(pl.col("task") == TASK_NAMES[0])
    t = R.paired_tests(one, "r2")
    across = t.filter(pl.col("scope") == "tasks")
    assert across["p_value"].null_count() == 3 and all(n.startswith("n/a") for n in across["note"])
    text = R.make_report(one, metrics=["r2"])
    assert "| 1/0/0 | n/a |" in text


def test_latest_run_supersedes_older_config(df):
    newer = RunRecord(study="synth", task=TASK_NAMES[0], dataset="aid1445", setting="transductive",
                      strategy="base", model="gnn", readout="st", split_seed=0, metrics={"test": {"r2": 0.99}},
                      params={"lr": 1e-2}, versions=VERSIONS, finished_at=datetime(2026, 1, 1, tzinfo=UTC))
    both = pl.concat([df, pl.from_arrow(newer.to_arrow())], how="diagonal_relaxed")
    s = R.summarize(both, "r2").filter((pl.col("unit") == TASK_NAMES[0]) & (pl.col("method") == "base"))
    v = _vals(r2_value, 0, 0)
    v[0] = 0.99
    assert s["n_seeds"][0] == 5 and s["mean"][0] == pytest.approx(v.mean())
    assert "1 superseded runs ignored" in R.make_report(both, metrics=["r2"])


def test_method_labels_and_base_matching():
    # base with two models: each method is compared with the base of its own model
    recs = []
    for model, readout, off in (("gnn", "st", 0.0), ("rf", None, -0.1)):
        for strat, eff in (("base", 0.0), ("label", 0.2)):
            for seed in range(3):
                for task in ("t1", "t2"):
                    recs.append(RunRecord(study="m", task=task, dataset=task, setting="transductive", strategy=strat,
                                          model=model, readout=readout, split_seed=seed, versions=VERSIONS,
                                          metrics={"test": {"r2": 0.5 + off + eff + 0.01 * seed}}))
    df = pl.concat([pl.from_arrow(r.to_arrow()) for r in recs], how="diagonal_relaxed")
    c = R.compare_to_base(R.summarize(df, "r2"))
    assert set(c["method"]) == {"base[gnn]", "base[rf]", "label[gnn]", "label[rf]"}
    pairs = dict(zip(c["method"], c["base_method"], strict=True))
    assert pairs == {"base[gnn]": "base[gnn]", "base[rf]": "base[rf]",
                     "label[gnn]": "base[gnn]", "label[rf]": "base[rf]"}
    np.testing.assert_allclose(c.filter(pl.col("strategy") == "label")["change"].to_numpy(), 0.2, atol=1e-12)


@pytest.mark.parametrize("fmt", ["md", "latex", "csv"])
def test_render_formats(df, fmt):
    text = R.make_report(df, fmt=fmt)
    if fmt == "md":
        assert "### r2 (test) by task" in text and "### mae: change over base" in text
        assert "| label | **0.401 ± 0.016** |" in text  # best per task in bold
        # lf_linear sits right before the label strategies
        lines = [ln.split("|")[1].strip() for ln in text.splitlines() if ln.startswith("| ")]
        i = lines.index("lf_linear")
        assert lines[i + 1] == "label"
        assert "beats lf_linear" in text and "| 3/3 |" in text
    elif fmt == "latex":
        assert text.count(r"\begin{tabular}") == 6 and r"\toprule" in text and r"lf\_linear" in text
        assert r"\textbf{0.401 $\pm$ 0.016}" in text and r"\%" in text
    else:
        out = pl.read_csv(text.encode())
        assert out.height == 24 and {"mean", "std", "change", "rank", "p_seeds", "p_tasks_wilcoxon"} <= set(out.columns)
        row = out.filter((pl.col("metric") == "r2") & (pl.col("method") == "label") & (pl.col("task") == TASK_NAMES[1]))
        assert row["mean"][0] == pytest.approx(_vals(r2_value, 1, 2).mean())
        assert row["rank"][0] == 1.0


def test_render_plain_frame_and_escaping():
    t = pl.DataFrame({"a_b": ["x|y", "50%"], "c": ["1", "2"]})
    assert "x\\|y" in R.render(t, "md")
    tex = R.render(R.Table(t, "A & B", ["note #1"], {(0, "c")}), "latex")
    assert r"a\_b" in tex and r"50\%" in tex and r"\caption{A \& B}" in tex and r"\textbf{1}" in tex
    assert R.render(t, "csv").splitlines()[0] == "a_b,c"
    with pytest.raises(ResultsError, match="format"):
        R.render(t, "html")


def test_plots_written(synth_store, tmp_path):
    R.make_report(synth_store, study="synth", metrics=["r2"], plots_dir=tmp_path)
    pngs = sorted(p.name for p in tmp_path.glob("*"))
    assert pngs == ["synth__r2_test_by_task.png", "synth__r2_test_gain.png", "synth__r2_test_gain_heatmap.png"]
    for p in tmp_path.glob("*.png"):
        assert p.stat().st_size > 5000 and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a study without a base strategy has no gain to draw: no empty gain figures
    no_base = pl.concat([pl.from_arrow(r.to_arrow()) for r in records(study="nb") if r.strategy != "base"],
                        how="diagonal_relaxed")
    R.make_report(no_base, metrics=["r2"], plots_dir=tmp_path / "nb")
    assert [p.name for p in (tmp_path / "nb").glob("*")] == ["nb__r2_test_by_task.png"]


def test_plots_in_every_format(synth_store, tmp_path):
    R.make_report(synth_store, study="synth", metrics=["r2"], plots_dir=tmp_path, plot_formats=["png", "pdf", "svg"])
    names = {p.name for p in tmp_path.glob("*")}
    kinds = ("by_task", "gain", "gain_heatmap")
    assert names == {f"synth__r2_test_{k}.{e}" for k in kinds for e in ("png", "pdf", "svg")}
    for k in kinds:
        assert (tmp_path / f"synth__r2_test_{k}.pdf").read_bytes()[:5] == b"%PDF-"
        assert "<svg" in (tmp_path / f"synth__r2_test_{k}.svg").read_text()
    with pytest.raises(ResultsError, match="unknown plot format 'eps'"):
        R.make_report(synth_store, metrics=["r2"], plots_dir=tmp_path, plot_formats=["eps"])


def test_transpose_puts_tasks_in_rows(df):
    summary = R.summarize(df, "r2")
    table = R.metric_table(summary, R.rank(summary), "test")
    t = R.transpose(table)
    assert t.frame.columns == ["task", "base", "lf_linear", "label", "embeddings"]
    assert t.frame["task"].to_list() == [*TASK_NAMES, "avg rank"]
    for i, u in enumerate(TASK_NAMES):
        assert t.frame["label"][i] == table.frame.filter(pl.col("method") == "label")[u][0]
    # the bold (best per task) cells follow the cells; the summary row sits under a rule
    assert t.bold == {(i, "label") for i in range(3)} == {(TASK_NAMES.index(c), "label") for _, c in table.bold}
    assert t.rules == {3}
    tex = R.render(t, "latex")
    assert tex.index(r"\midrule", tex.index(TASK_NAMES[-1].replace("_", r"\_"))) < tex.index("avg rank")
    text = R.make_report(df, metrics=["r2"], transpose_tables=True)
    assert "| task | base | lf_linear | label | embeddings |" in text
    assert "| method | aid1445:hf/DR |" not in text
    assert "| method | aid1445:hf/DR |" in R.make_report(df, metrics=["r2"])
    seeds = R.seed_test_table(R.paired_tests(df, "r2"))
    assert R.transpose(seeds) is seeds  # rows are not methods: left as it is


def test_latex_is_booktabs_with_human_labels(df):
    tex = R.make_report(df, metrics=["r2"], fmt="latex")
    for rule in (r"\toprule", r"\midrule", r"\bottomrule"):
        assert tex.count(rule) == tex.count(r"\begin{tabular}") >= 3
    assert r"\hline" not in tex and r"\usepackage{booktabs}" in tex
    assert r"\caption{R$^2$ (test) by task}" in tex and r"\caption{R$^2$: change over base}" in tex
    rows = [ln.split(" & ")[0] for ln in tex.splitlines() if " & " in ln]
    assert {"Base (HF only)", "LF-linear floor", "LF label", "LF embeddings"} <= set(rows)
    assert "label" not in rows and "beats LF-linear floor" in tex
    md = R.make_report(df, metrics=["r2"])
    assert "| label |" in md and "| LF label |" not in md  # Markdown keeps the registry names


def test_errors(synth_store, df):
    with pytest.raises(ResultsError, match="available: mae, r2"):
        R.make_report(df, metrics=["auroc"])
    with pytest.raises(ResultsError, match="studies: synth"):
        R.make_report(synth_store, study="nope")
    with pytest.raises(ResultsError, match="empty"):
        R.make_report(ResultsStore(synth_store.root + "-missing"))


def test_report_accepts_root_path(synth_store):
    assert "### r2 (test) by task" in R.make_report(synth_store.root, metrics=["r2"])


def test_default_metrics_fall_back_to_what_is_there():
    recs = [RunRecord(study="c", task="t", dataset="t", setting="inductive", strategy=s, model="gnn", split_seed=k,
                      metrics={"test": {"auroc": 0.7 + 0.1 * (s == "label") + 0.01 * k}}, versions=VERSIONS)
            for s in ("base", "label") for k in range(3)]
    df = pl.concat([pl.from_arrow(r.to_arrow()) for r in recs], how="diagonal_relaxed")
    text = R.make_report(df)
    assert "### auroc (test) by task" in text and "r2" not in text
    # the seed differences are all 0.1: a t-test is undefined (zero variance), said as n/a, no warning
    t = R.paired_tests(df, "auroc").filter(pl.col("scope") == "seeds").row(0, named=True)
    assert t["p_value"] is None and "zero variance" in t["note"] and t["wins"] == 3


def test_records_fixture_is_consistent():
    assert len(records()) == len(TASKS) * len(STRATEGIES) * len(SEEDS)


def test_a_readout_chosen_per_task_is_one_method():
    """A study that searched the readout picks it per task: one `label` row, not one per readout;
    readouts run side by side on the same task stay separate methods."""
    import polars as pl

    from mfray.results.record import RunRecord
    from mfray.results.report import make_report

    def run(task, strategy, readout, seed, r2):
        return pl.from_arrow(RunRecord(study="s", task=task, dataset=task, setting="transductive", strategy=strategy,
                                       model="gnn", split_seed=seed, readout=readout,
                                       metrics={"test": {"r2": r2}}).to_arrow())

    chosen = [run("a", "label", "sum", s, 0.5) for s in (0, 1)] + [run("b", "label", "attention", s, 0.4) for s in (0, 1)]
    text = make_report(pl.concat(chosen, how="diagonal_relaxed"), metrics=["r2"])
    assert "| label | **0.500 ± 0.000** | **0.400 ± 0.000** |" in text and "label[" not in text
    side_by_side = chosen + [run("a", "label", "attention", s, 0.3) for s in (0, 1)]
    text = make_report(pl.concat(side_by_side, how="diagonal_relaxed"), metrics=["r2"])
    assert "label[sum]" in text and "label[attention]" in text


def _policy_runs(study="cp"):
    """Two tasks x (base, label) x 3 seeds x 3 censored-label policies, with known values."""
    effect = {"drop": 0.1, "as_value": 0.3, "censored": 0.2}
    rows = []
    for policy, e in effect.items():
        for task in ("a:hf/DR", "b:hf/DR"):
            for s in ("base", "label"):
                for seed in range(3):
                    r2 = e + 0.1 * (s == "label") + 0.01 * seed
                    m = {"r2": r2, "mae": 1 - r2, "censored_acc": 0.5 + e, "active_auroc": 0.6 + e,
                         "n_fitted": 10.0 + seed, "n_censored": 40.0}
                    rows.append(pl.from_arrow(RunRecord(
                        study=study, task=task, dataset=task[0], setting="transductive", strategy=s, model="gnn",
                        split_seed=seed, censored=policy, config_hash=f"{policy}{s}",
                        metrics={"test": m, "train": {**m, "n_fitted": 80.0, "n_censored": 320.0}}).to_arrow()))
    return pl.concat(rows, how="diagonal_relaxed")


def test_one_section_per_censored_policy_with_label_counts():
    df = _policy_runs()
    text = R.make_report(df)
    sections = text.split("## Study ")[1:]
    assert [s.splitlines()[0] for s in sections] == ["cp [censored=as_value]", "cp [censored=censored]", "cp [censored=drop]"]
    for s, e in zip(sections, (0.3, 0.2, 0.1)):
        # policies never mix: each section's base mean is its own policy's
        assert f"| base | {e + 0.01:.3f} ± 0.010 | {e + 0.01:.3f} ± 0.010 |" in s
        assert "### censored_acc (test) by task" in s and "### active_auroc (test) by task" in s
        assert "n_fitted (test)" not in s and "n_censored" not in s.split("### r2")[1]
        assert "| a:hf/DR | 80 | 320 | 11 | 40 |" in s  # train fitted/censored, test (mean over seeds)
    assert "Censored-label policy: drop: bounds are not training labels" in sections[2]
    csv = pl.read_csv(__import__("io").StringIO(R.make_report(df, fmt="csv")))
    assert sorted(csv["censored"].unique().to_list()) == ["as_value", "censored", "drop"]
    # one policy: no "[censored=...]" in the name, but the policy line and the label table are there
    one = R.make_report(df.filter(pl.col("censored") == "censored"))
    assert "## Study cp\n" in one and "Censored-label policy: censored" in one and "train fitted" in one
    # without qualifiers (censored null) nothing changes: no policy line, no label table
    assert "Censored-label policy" not in R.make_report(df.with_columns(censored=pl.lit(None, pl.String))
                                                        .filter(pl.col("metric").is_in(["r2", "mae"])))


def test_censored_policy_is_a_checked_record_field():
    with pytest.raises(ResultsError, match="censored 'sometimes' is not one of drop, as_value, censored"):
        RunRecord(study="s", task="t", dataset="t", setting="transductive", strategy="base", model="gnn",
                  split_seed=0, metrics={"test": {"r2": 0.1}}, censored="sometimes")
    rec = RunRecord(study="s", task="t", dataset="t", setting="transductive", strategy="base", model="gnn",
                    split_seed=0, metrics={"test": {"r2": 0.1}}, censored="drop")
    assert rec.to_arrow().column("censored").to_pylist() == ["drop"]


def test_parity_plots_from_a_study_storage(tmp_path):
    """A study storage keeps runs/<run_key>/predictions.parquet beside results/: the report finds it,
    reads the test fold of the latest runs only, and writes one parity figure per task that has any."""
    store = ResultsStore(tmp_path / "results")
    store.append_runs(records(study="par"))
    df = store.read("par")
    runs = df.filter((pl.col("task") == TASK_NAMES[0]) & pl.col("strategy").is_in(["base", "label"])
                     & (pl.col("split_seed") < 2)).select("run_key", "strategy", "split_seed").unique()
    for key, strategy, seed in runs.iter_rows():
        folder = tmp_path / "runs" / key
        folder.mkdir(parents=True)
        pl.DataFrame({"fold": ["train", "test", "test", "test"], "mol_id": [1, 2, 3, 4], "target": "y",
                      "y_true": [1.0, 2.0, 3.0, 3.4], "y_pred": [1.1, 2.2, 2.9, 3.9 + seed],
                      "censor": pl.Series([0, 0, 0, -1], dtype=pl.Int8)}).write_parquet(folder / "predictions.parquet")
    assert R.runs_beside(store) == str(tmp_path / "runs")
    assert R.runs_beside(ResultsStore(tmp_path / "runs")) is None
    preds = R.load_predictions(df, tmp_path / "runs")
    assert preds.height == 2 * 2 * 3 and set(preds["method"]) == {"base", "label"}
    assert set(preds["mol_id"]) == {2, 3, 4} and preds.filter(pl.col("censor") == -1).height == 4
    figs = tmp_path / "figs"
    R.make_report(store, metrics=["r2"], plots_dir=figs, plot_formats=["png", "svg"])
    parity = sorted(p.name for p in figs.glob("*parity*"))
    assert parity == ["par__parity_aid1445_hf_DR_test.png", "par__parity_aid1445_hf_DR_test.svg"]
    # without a runs/ folder (a bare results store) there is nothing to draw: no parity figures, no error
    bare = tmp_path / "bare"
    R.make_report(df, metrics=["r2"], plots_dir=bare)
    assert not list(bare.glob("*parity*"))


def test_method_order_does_not_depend_on_the_first_task():
    """The first task (an inductive one, say) lacks the floor and label: they still take their place."""
    recs = [r for r in records(study="o") if not (r.task == TASK_NAMES[0] and r.strategy in ("lf_linear", "label"))]
    frame = pl.concat([pl.from_arrow(r.to_arrow()) for r in recs], how="diagonal_relaxed")
    summary = R.summarize(frame, "r2")
    assert R.method_order(summary) == ["base", "lf_linear", "label", "embeddings"]
    assert R.metric_table(summary, R.rank(summary), "test").frame["method"].to_list() == R.method_order(summary)
    changes = R.compare_to_base(summary)
    assert R.change_table(changes, R.paired_tests(frame, "r2")).frame["method"].to_list() == ["lf_linear", "label",
                                                                                              "embeddings"]
