"""Report figures, checked through their matplotlib artists (not pixels): the seed dots sit at the stored
values, the floor is a line at the floor's mean, the gain error bars are the std of the seed-paired
change, bounds are drawn apart from fitted values, 23 tasks keep their labels apart, files come out
in every format."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from results_synth import SEEDS, STRATEGIES, TASKS, many_task_records, r2_value

from mfray.results import ResultsError
from mfray.results import plots as P
from mfray.results import report as R
from mfray.results.labels import method_label


@pytest.fixture(scope="module")
def df(synth_store) -> pl.DataFrame:
    return synth_store.read("synth")


@pytest.fixture(scope="module")
def r2(df):
    summary = R.summarize(df, "r2")
    changes = R.compare_to_base(summary)
    values = R.seed_values(df, "r2")
    return summary, changes, values


def _by_gid(fig, gid: str) -> list:
    return [a for ax in fig.axes for a in ax.get_children() if a.get_gid() == gid]


def _bar_labels(fig) -> list[str]:
    return [c.get_label() for ax in fig.axes for c in ax.containers if hasattr(c, "patches")]


def test_seed_changes_pair_by_seed(r2):
    _, changes, values = r2
    sc = R.seed_changes(values, changes)
    ti, si = 1, list(STRATEGIES).index("label")
    got = sc.filter((pl.col("unit") == list(TASKS)[ti]) & (pl.col("method") == "label")).sort("split_seed")
    want = [r2_value(ti, si, s) - r2_value(ti, 0, s) for s in SEEDS]
    np.testing.assert_allclose(got["change"].to_numpy(), want, atol=1e-12)
    means = sc.group_by("unit", "method").agg(pl.col("change").mean())
    table = changes.join(means, on=["unit", "method"], suffix="_seeds")
    np.testing.assert_allclose(table["change_seeds"].to_numpy(), table["change"].to_numpy(), atol=1e-12)
    assert "base" not in set(sc["method"])


def test_metric_by_task_dots_floor_line_labels_and_palette(r2):
    summary, _, values = r2
    setup = R._figure_setup(summary, "base")
    fig = P.metric_by_task_figure(summary, values, **setup)
    # a dot per split seed, at the stored values
    for m in ("base", "label", "embeddings"):
        (dots,) = _by_gid(fig, f"seeds:{m}")
        want = sorted(values.filter(pl.col("method") == m)["value"].to_list())
        np.testing.assert_allclose(sorted(dots.get_offsets()[:, 1]), want, atol=1e-12)
    # the floor is a line per task at its mean, not a bar
    (floor,) = _by_gid(fig, "floor")
    ys = sorted(seg[0][1] for seg in floor.get_segments())
    want = sorted(summary.filter(pl.col("strategy") == "lf_linear")["mean"].to_list())
    np.testing.assert_allclose(ys, want, atol=1e-12)
    assert len(ys) == len(TASKS) and not _by_gid(fig, "seeds:lf_linear")
    assert _bar_labels(fig) == [method_label(m) for m in ("base", "label", "embeddings")]
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["Base (HF only)", "LF label", "LF embeddings", "LF-linear floor", "one split seed"]
    assert fig.axes[0].get_ylabel().startswith("R²")
    # Okabe-Ito colours, the base in grey
    colours = {c.get_label(): c.patches[0].get_facecolor() for c in fig.axes[0].containers}
    from matplotlib.colors import to_rgba

    assert colours["Base (HF only)"] == to_rgba(P.BASE_COLOR)
    assert {colours["LF label"], colours["LF embeddings"]} <= {to_rgba(c) for c in P.OKABE_ITO}


def test_gain_error_bars_are_the_std_of_the_seed_paired_change(r2):
    _, changes, values = r2
    sc = R.seed_changes(values, changes)
    fig = P.gain_figure(changes, sc, floor={"lf_linear"}, base={"base"})
    ax = fig.axes[0]
    (bars,) = [c for c in ax.containers if c.get_label() == "LF label"]
    heights = [p.get_height() for p in bars.patches]
    np.testing.assert_allclose(heights, changes.filter(pl.col("method") == "label")["change"].to_numpy(), atol=1e-12)
    segs = bars.errorbar.lines[2][0].get_segments()
    half = [abs(s[1][1] - s[0][1]) / 2 for s in segs]
    want = [np.std(g.sort("split_seed")["change"].to_numpy(), ddof=1)
            for _, g in sc.filter(pl.col("method") == "label").group_by("unit", maintain_order=True)]
    np.testing.assert_allclose(half, want, atol=1e-12)
    assert len(_by_gid(fig, "seeds:label")[0].get_offsets()) == len(TASKS) * len(SEEDS)
    # the floor's change over base is the line, not a bar
    (floor,) = _by_gid(fig, "floor")
    np.testing.assert_allclose(sorted(s[0][1] for s in floor.get_segments()),
                               sorted(changes.filter(pl.col("method") == "lf_linear")["change"].to_list()), atol=1e-12)
    assert "LF-linear floor" not in _bar_labels(fig)


def _many():
    frame = pl.concat([pl.from_arrow(r.to_arrow()) for r in many_task_records(23)], how="diagonal_relaxed")
    summary = R.summarize(frame, "r2")
    return frame, summary, R.compare_to_base(summary)


def _overlaps(labels) -> list[tuple[str, str]]:
    boxes = [(t.get_text(), t.get_window_extent()) for t in labels if t.get_text()]
    return [(a, b) for i, (a, x) in enumerate(boxes) for b, y in boxes[i + 1:] if x.overlaps(y)]


def _rotated_apart(ax) -> bool:
    """Rotated tick labels anchored at their ticks do not overlap when neighbouring ticks are further
    apart across the reading direction than a label is tall (a bounding box test would call any two
    slanted labels overlapping)."""
    labels = [t for t in ax.get_xticklabels() if t.get_text()]
    angle = np.deg2rad(labels[0].get_rotation())
    heights = []
    for t in labels:
        t.set_rotation(0)
        heights.append(t.get_window_extent().height)
        t.set_rotation(np.rad2deg(angle))
    ticks = ax.transData.transform([(x, 0) for x in ax.get_xticks()])[:, 0]
    return float(np.min(np.diff(ticks))) * np.sin(angle) >= max(heights)


def test_summary_figures_stay_readable_at_23_tasks():
    frame, summary, changes = _many()
    heat = P.gain_heatmap_figure(changes, methods=R.method_order(summary))
    heat.canvas.draw()
    ax = heat.axes[0]
    (img,) = _by_gid(heat, "heatmap")
    methods = [m for m in R.method_order(summary) if not m.startswith("base")]
    assert img.get_array().shape == (24, len(methods))  # 23 tasks + the mean row
    grid = img.get_array()
    cell = {(u, m): v for u, m, v in changes.select("unit", "method", "change").iter_rows()}
    units = changes["unit"].unique(maintain_order=True).to_list()
    assert grid[5, 2] == pytest.approx(cell[(units[5], methods[2])])
    assert grid[23, 0] == pytest.approx(np.mean([cell[(u, methods[0])] for u in units]))
    assert [t.get_text() for t in ax.get_yticklabels()][-1] == "mean over tasks"
    assert not _overlaps(ax.get_yticklabels()) and _rotated_apart(ax)
    fig_box = heat.bbox
    for t in [*ax.get_yticklabels(), *ax.get_xticklabels(), heat.axes[1].yaxis.label]:
        box = t.get_window_extent()
        assert box.x0 >= -1 and box.y0 >= -1 and box.x1 <= fig_box.x1 + 1 and box.y1 <= fig_box.y1 + 1, t.get_text()
    bars = P.metric_by_task_figure(summary, R.seed_values(frame, "r2"), **R._figure_setup(summary, "base"))
    bars.canvas.draw()
    assert len(bars.axes) >= 3  # the tasks wrap onto rows
    assert sum(len([t for t in a.get_xticklabels() if t.get_text()]) for a in bars.axes) == 23
    for a in bars.axes:
        assert not _overlaps(a.get_xticklabels())


def test_parity_marks_bounds_by_direction():
    preds = pl.DataFrame({"method": ["base"] * 5 + ["label"] * 5,
                          "y_true": [4.0, 5.0, 6.0, 3.4, 7.5] * 2, "y_pred": [4.2, 4.8, 5.5, 4.4, 7.9] * 2,
                          "censor": [0, 0, 0, -1, 1] * 2})
    fig = P.parity_figure(preds, notes={"base": "R² = 0.10"})
    for gid, c in (("fitted", 0), ("bound_upper", -1), ("bound_lower", 1)):
        (pts,) = _by_gid(fig, f"{gid}:label")
        want = preds.filter((pl.col("method") == "label") & (pl.col("censor") == c)).select("y_true", "y_pred")
        np.testing.assert_allclose(pts.get_offsets(), want.to_numpy())
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["fitted value", "bound: true value ≥ it", "bound: true value ≤ it", "predicted = measured"]
    assert [a.get_title() for a in fig.axes if a.get_visible()] == ["Base (HF only)", "LF label"]
    assert "R² = 0.10" in fig.axes[0].texts[0].get_text()


def test_save_formats_and_bad_format(tmp_path, r2):
    summary, _, _ = r2
    fig = P.metric_by_task_figure(summary)
    png, pdf, svg = (P.save(fig, tmp_path / f"f.{e}") for e in ("png", "pdf", "svg"))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    body = pdf.read_bytes()
    assert body[:5] == b"%PDF-" and b"/FontFile2" in body and b"/Type3" not in body  # TrueType, not Type 3
    assert P.save(fig, tmp_path / "g.pdf").read_bytes() == body  # no timestamp: same figure, same file
    text = svg.read_text()
    assert "<svg" in text and "R²" in text  # text kept as text (editable), not outlined to paths
    assert P.check_formats(["PNG", " pdf", "svg", "pdf"]) == ("png", "pdf", "svg")
    with pytest.raises(ResultsError, match="unknown plot format 'jpg'.*png, pdf, svg"):
        P.check_formats(["png", "jpg"])
    with pytest.raises(ResultsError, match="unknown plot format"):
        P.save(fig, tmp_path / "f.jpg")


def test_parity_panels_without_a_panel_below_keep_their_x_axis():
    """5 methods on a 4-wide grid: the top row's last three panels have nothing below them, so they
    must carry their own x tick labels and axis label (shared x axes hide them otherwise)."""
    methods = ["base", "label", "predicted_label", "embeddings", "tune_readout"]
    preds = pl.DataFrame({"method": [m for m in methods for _ in range(3)], "y_true": [4.0, 5.0, 6.0] * 5,
                          "y_pred": [4.2, 4.8, 5.5] * 5, "censor": [0, 0, 0] * 5})
    fig = P.parity_figure(preds, title="demo: fatty_acid_synthase_demo:hf/DR, test fold (3 split seeds pooled)",
                          notes={m: "R² = 0.07 ± 0.01" for m in methods},
                          caption="in each panel: the table's mean ± std over split seeds")
    fig.canvas.draw()
    visible = [a for a in fig.axes if a.get_visible() and a.get_title()]
    top = fig._suptitle.get_window_extent()
    for ax in visible:  # the figure's title clear of the panels' titles and of the tick labels above them
        assert not top.overlaps(ax.title.get_window_extent()), ax.get_title()
    assert len(visible) == 5
    below = [a for a in visible if a.get_title() != "Base (HF only)"]  # base has tune_readout under it
    assert len(below) == 4
    for ax in below:
        assert ax.get_xlabel() == "measured", ax.get_title()
        assert any(t.get_visible() and t.get_text() for t in ax.get_xticklabels()), ax.get_title()


def test_the_title_stays_clear_of_the_legend(r2):
    """A long title (the gain figure's) over a one-task figure must not run under the legend."""
    _, changes, values = r2
    one = changes.filter(pl.col("unit") == changes["unit"][0])
    fig = P.gain_figure(one, R.seed_changes(values, one), floor={"lf_linear"}, base={"base"},
                        title="demo: R² (test), change over base")
    fig.canvas.draw()
    title = fig._suptitle.get_window_extent()
    legend = fig.legends[0].get_window_extent()
    assert not title.overlaps(legend), (title, legend)
