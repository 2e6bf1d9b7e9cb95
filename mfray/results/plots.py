"""Report figures (matplotlib, Agg canvas; no pyplot global state).

- :func:`metric_by_task_figure`: bars of the mean per task and method, a dot per split seed, the
  ``lf_linear`` floor as a dashed line across its task's group (a reference, not a competitor);
- :func:`gain_figure`: bars of the change over base per task and method (positive = better), error
  bars = std over seeds of the seed-paired change, a dot per seed, the floor's change as a line;
- :func:`gain_heatmap_figure`: the multi-task summary, tasks x methods coloured by the change over
  base (readable at tens of tasks), with a bottom row of the mean over tasks;
- :func:`parity_figure`: predicted vs measured test values per method, bounds (censored labels) drawn
  as arrow heads pointing to where the true value lies.

They take the frames :mod:`mfray.results.report` builds, so a figure shows the same numbers as the
table beside it; methods are labelled through :mod:`mfray.results.labels`. Every figure is returned
as a :class:`matplotlib.figure.Figure` (tests inspect its artists); :func:`save` writes PNG, PDF or
SVG by the file's suffix (fonts embedded as TrueType in PDF, text kept as text in SVG, no
timestamps, so the same figure gives the same file).

Colours: the Okabe-Ito palette (distinguishable under the common colour-vision deficiencies), the
base strategy in grey, the floor in black; past seven methods the colours repeat with a hatch.
The heatmap uses ColorBrewer's diverging RdBu (blue = better than base), also colour-blind safe.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from mfray.results.labels import method_label, metric_label
from mfray.results.record import ResultsError

PLOT_FORMATS = ("png", "pdf", "svg")
#: Okabe & Ito (2008), "Color Universal Design": orange, sky blue, bluish green, yellow, blue,
#: vermillion, reddish purple (their black is kept for the floor)
OKABE_ITO = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7")
BASE_COLOR = "#999999"
FLOOR_COLOR = "#000000"
HATCHES = ("", "//", "..", "xx", "\\\\")
_MAX_ROW_IN = 15.0  # widest row of bar groups (inches) before the tasks wrap onto another row
_LEGEND_IN = 2.4


@dataclass(frozen=True)
class Style:
    color: str
    hatch: str = ""


def check_formats(formats: Iterable[str]) -> tuple[str, ...]:
    """``formats`` lower-cased, deduplicated, in order; an unknown one is a :class:`ResultsError`."""
    out = tuple(dict.fromkeys(f.strip().lower().lstrip(".") for f in formats if f.strip()))
    bad = [f for f in out if f not in PLOT_FORMATS]
    if bad or not out:
        raise ResultsError(f"unknown plot format {', '.join(map(repr, bad)) or '(none)'}: "
                           f"use one or more of {', '.join(PLOT_FORMATS)}, comma-separated")
    return out


def method_styles(methods: Sequence[str], base: Iterable[str] = (), floor: Iterable[str] = ()) -> dict[str, Style]:
    """method -> colour and hatch. Pass every method of a report (base and floor included) so that a
    method keeps its look across the report's figures."""
    base, floor = set(base), set(floor)
    out, k = {}, 0
    for m in methods:
        if m in base:
            out[m] = Style(BASE_COLOR)
        elif m in floor:
            out[m] = Style(FLOOR_COLOR)
        else:
            out[m] = Style(OKABE_ITO[k % len(OKABE_ITO)], HATCHES[(k // len(OKABE_ITO)) % len(HATCHES)])
            k += 1
    return out


# --------------------------------------------------------------------------- helpers


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save(fig, path: str | Path) -> Path:
    """Write ``fig`` to ``path``; the suffix (``.png``, ``.pdf``, ``.svg``) picks the format."""
    from matplotlib import rc_context

    path = Path(path)
    fmt = check_formats([path.suffix])[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"pdf": {"Creator": "mfray", "CreationDate": None}, "svg": {"Date": None},
                "png": {"Software": "mfray"}}[fmt]
    # TrueType (not Type 3) fonts in PDF: journals ask for it and editors can change the text
    with rc_context({"pdf.fonttype": 42, "svg.fonttype": "none", "svg.hashsalt": "mfray"}):
        fig.savefig(path, dpi=200, metadata=metadata)
    return path


def _num(x) -> float | None:
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) else x


def _wrap(unit: str, limit: int) -> str:
    """A task label on lines of at most ``limit`` characters: ``[setting]`` on its own line, long task
    names broken after the ``:`` or an ``_`` (never inside a word)."""
    lines = []
    for part in unit.replace(" [", "\n[").split("\n"):
        while len(part) > limit:
            # the task:fidelity/target seam first, then between words
            cut = part.rfind(":", 0, limit)
            if cut <= 0:
                cut = max(part.rfind(c, 0, limit) for c in "_ ")
            if cut <= 0:
                break
            lines.append(part[:cut + 1])
            part = part[cut + 1:]
        lines.append(part)
    return "\n".join(lines)


def _seed_points(frame: pl.DataFrame | None, col: str) -> dict[tuple[str, str], list[float]]:
    if frame is None or frame.is_empty():
        return {}
    out: dict[tuple[str, str], list[float]] = defaultdict(list)
    for u, m, v in frame.select("unit", "method", col).iter_rows():
        if _num(v) is not None:
            out[(u, m)].append(float(v))
    return out


def _bar_rows(units: list[str], n_methods: int) -> tuple[list[list[str]], float]:
    group_in = 0.2 * n_methods + 0.6
    per_row = max(1, min(len(units), int(_MAX_ROW_IN // group_in)))
    # spread the tasks evenly over the rows (23 tasks at 6 a row: 6, 6, 6, 5)
    n_rows = math.ceil(len(units) / per_row) if units else 1
    per_row = math.ceil(len(units) / n_rows) if units else 1
    return [units[i:i + per_row] for i in range(0, len(units), per_row)] or [[]], group_in


def _bars_figure(units: list[str], methods: list[str], styles: Mapping[str, Style], value, *, err=None,
                 seeds: Mapping[tuple[str, str], list[float]] | None = None,
                 floor_value=None, ylabel: str = "", title: str = "", zero_line: bool = False, err_label: str = ""):
    """Grouped bars, one group per unit (rows of groups when there are many), one bar per method.

    ``value(u, m)`` / ``err(u, m)`` give a bar's height and error (None: no bar), ``seeds[(u, m)]``
    the dots drawn over it, ``floor_value(u)`` the height of the unit's floor line (None: none).
    """
    from matplotlib.lines import Line2D

    rows, group_in = _bar_rows(units, len(methods))
    per_row = max(len(r) for r in rows) or 1
    width_in = 1.3 + per_row * group_in + _LEGEND_IN
    fig = _new_figure(width_in, 0.6 + 2.9 * len(rows))
    axes = fig.subplots(len(rows), 1, squeeze=False)[:, 0]
    width = 0.8 / max(len(methods), 1)
    rng = np.random.default_rng(0)  # jitter of the seed dots: fixed, so a figure is reproducible
    handles: dict[str, object] = {}
    limit = max(12, int(group_in * 13))
    for ax, row in zip(axes, rows, strict=True):
        x = np.arange(len(row))
        for j, m in enumerate(methods):
            st = styles[m]
            pos = x - 0.4 + width * (j + 0.5)
            ys = [value(u, m) for u in row]
            ok = np.array([y is not None for y in ys], dtype=bool)
            if not ok.any():
                continue
            es = [err(u, m) for u in row] if err is not None else None
            bars = ax.bar(pos[ok], [y for y in ys if y is not None], width, color=st.color, hatch=st.hatch or None,
                          edgecolor="black", linewidth=0.4, label=method_label(m), zorder=2,
                          yerr=[e or 0.0 for e, k in zip(es, ok, strict=True) if k] if es is not None else None,
                          error_kw={"elinewidth": 0.8, "capsize": 2, "capthick": 0.8, "zorder": 4})
            handles.setdefault(m, bars)
            if seeds:
                px, py = [], []
                for i, u in enumerate(row):
                    pts = seeds.get((u, m), []) if ok[i] else []
                    px += list(pos[i] + rng.uniform(-0.22, 0.22, len(pts)) * width)
                    py += pts
                if px:
                    ax.scatter(px, py, s=9, facecolor="white", edgecolor="black", linewidth=0.6, zorder=5,
                               gid=f"seeds:{m}")
        if floor_value is not None:
            fl = [(i, floor_value(u)) for i, u in enumerate(row)]
            fl = [(i, v) for i, v in fl if v is not None]
            if fl:
                ax.hlines([v for _, v in fl], [i - 0.45 for i, _ in fl], [i + 0.45 for i, _ in fl],
                          colors=FLOOR_COLOR, linestyles=(0, (4, 2)), linewidth=1.4, zorder=6, gid="floor")
        if zero_line:
            ax.axhline(0.0, color="black", linewidth=0.8, zorder=1)
        ax.set_xticks(x, [_wrap(u, limit) for u in row], fontsize=8)
        ax.set_xlim(-0.55, per_row - 0.45)
        ax.tick_params(axis="y", labelsize=8)
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
        ax.set_ylabel(ylabel, fontsize=9)
    labels = [method_label(m) for m in handles]
    hs = list(handles.values())
    if floor_value is not None and any(floor_value(u) is not None for u in units):
        hs.append(Line2D([], [], color=FLOOR_COLOR, linestyle=(0, (4, 2)), linewidth=1.4))
        labels.append(method_label("lf_linear"))
    if seeds:
        hs.append(Line2D([], [], linestyle="", marker="o", markersize=3.5, markerfacecolor="white",
                         markeredgecolor="black", markeredgewidth=0.6))
        labels.append("one split seed")
    if err_label:
        hs.append(Line2D([], [], linestyle="", marker="|", markersize=9, markeredgewidth=0.9, color="black"))
        labels.append(err_label)
    fig.legend(hs, labels, loc="outside right center", fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def _seeds_text(n: Sequence[int]) -> str:
    n = sorted(set(int(v) for v in n if v))
    if not n:
        return "split seeds"
    return f"{n[0]} split seed{'s' if n[-1] > 1 else ''}" if len(n) == 1 else f"{n[0]}-{n[-1]} split seeds"


def _ordered_methods(frame: pl.DataFrame, methods: Sequence[str] | None) -> list[str]:
    have = set(frame["method"].to_list())
    if methods is None:
        return frame["method"].unique(maintain_order=True).to_list()
    return [m for m in methods if m in have]


# --------------------------------------------------------------------------- figures


def metric_by_task_figure(summary: pl.DataFrame, seeds: pl.DataFrame | None = None, *, title: str = "",
                          floor: Iterable[str] = (), base: Iterable[str] = (), methods: Sequence[str] | None = None,
                          styles: Mapping[str, Style] | None = None):
    """Bars of the mean over split seeds per task and method, a dot per seed, the floor as a line.

    Args:
        summary: :func:`mfray.results.report.summarize` output (unit, method, mean, n_seeds, metric).
        seeds: per-seed values (unit, method, value), e.g. :func:`mfray.results.report.seed_values`.
        floor: the floor methods (drawn as a dashed line across their task's group, not as a bar).
        base: the base methods (grey).
        methods: the order of the bars (default: the frame's order).
    """
    floor = set(floor)
    units = summary["unit"].unique(maintain_order=True).to_list()
    methods = _ordered_methods(summary, methods)
    styles = styles or method_styles(methods, base, floor)
    cell = {(u, m): _num(v) for u, m, v in summary.select("unit", "method", "mean").iter_rows()}
    floors = {u: cell.get((u, f)) for u in units for f in floor if cell.get((u, f)) is not None}
    metric = summary["metric"][0] if summary.height else ""
    ylabel = f"{metric_label(metric)}\n(bars: mean of {_seeds_text(summary['n_seeds'].to_list())})"
    return _bars_figure(units, [m for m in methods if m not in floor], styles, lambda u, m: cell.get((u, m)),
                        seeds=_seed_points(seeds, "value"), floor_value=floors.get if floors else None,
                        ylabel=ylabel, title=title or metric_label(metric))


def gain_figure(changes: pl.DataFrame, seed_changes: pl.DataFrame | None = None, *, title: str = "",
                floor: Iterable[str] = (), base: Iterable[str] = (), methods: Sequence[str] | None = None,
                styles: Mapping[str, Style] | None = None, relative: bool = False):
    """Bars of the change over base per task and method (positive = better).

    Args:
        changes: :func:`mfray.results.report.compare_to_base` output; base rows and methods without a
            base are left out.
        seed_changes: per-seed changes over base paired by split seed (unit, method, change), e.g.
            :func:`mfray.results.report.seed_changes`: a dot each, and the error bars (their std, ddof=1).
        floor: the floor methods: the floor's change over base is a dashed line across the group.
        relative: plot ``change_pct`` (no dots or error bars then: they are in metric units).
    """
    floor = set(floor)
    col = "change_pct" if relative else "change"
    rows = changes.filter(pl.col(col).is_not_null() & (pl.col("method") != pl.col("base_method")))
    units = rows["unit"].unique(maintain_order=True).to_list()
    methods = _ordered_methods(rows, methods)
    styles = styles or method_styles(methods, base, floor)
    cell = {(u, m): _num(v) for u, m, v in rows.select("unit", "method", col).iter_rows()}
    floors = {u: cell.get((u, f)) for u in units for f in floor if cell.get((u, f)) is not None}
    pts = {} if relative else _seed_points(seed_changes, "change")
    sd = {k: float(np.std(v, ddof=1)) for k, v in pts.items() if len(v) > 1}
    metric = changes["metric"][0] if changes.height else ""
    what = "relative change (%)" if relative else "change"
    bars = [m for m in methods if m not in floor]
    ylabel = f"{what} in {metric_label(metric)} over base\n(positive = better)"
    return _bars_figure(units, bars, styles, lambda u, m: cell.get((u, m)),
                        err=(lambda u, m: sd.get((u, m))) if sd else None, seeds=pts,
                        err_label="std of the seed-paired\nchange over base" if sd else "",
                        floor_value=floors.get if floors else None, ylabel=ylabel, zero_line=True,
                        title=title or f"LF -> HF gain over base ({metric_label(metric)})")


def gain_heatmap_figure(changes: pl.DataFrame, *, title: str = "", methods: Sequence[str] | None = None,
                        digits: int = 2):
    """Tasks (rows) x methods (columns) coloured by the change over base, the value written in each cell,
    and a last row with the mean over the tasks a method was run on (``(n)`` when not all).

    Stays readable at tens of tasks: a row per task, the task names horizontal. ``changes`` is
    :func:`mfray.results.report.compare_to_base` output.
    """
    from matplotlib import colormaps
    from matplotlib.colors import TwoSlopeNorm

    rows = changes.filter(pl.col("change").is_not_null() & (pl.col("method") != pl.col("base_method")))
    units = rows["unit"].unique(maintain_order=True).to_list()
    methods = _ordered_methods(rows, methods)
    cell = {(u, m): _num(v) for u, m, v in rows.select("unit", "method", "change").iter_rows()}
    grid = np.full((len(units) + 1, len(methods)), np.nan)
    for i, u in enumerate(units):
        for j, m in enumerate(methods):
            v = cell.get((u, m))
            grid[i, j] = np.nan if v is None else v
    counts = np.sum(~np.isnan(grid[:-1]), axis=0)
    with np.errstate(invalid="ignore"):
        grid[-1] = np.where(counts > 0, np.nansum(grid[:-1], axis=0) / np.maximum(counts, 1), np.nan)
    vmax = float(np.nanmax(np.abs(grid))) if np.isfinite(grid).any() else 1.0
    vmax = vmax or 1.0
    longest = max((len(u) for u in units), default=8)
    width = 0.9 + 0.075 * longest + 0.66 * max(len(methods), 1) + 1.0
    # a row per task, and never so few rows that the colour bar cannot hold its label
    fig = _new_figure(width, 1.9 + max(1.8, 0.27 * (len(units) + 1)))
    ax = fig.add_subplot()
    cmap = colormaps["RdBu"].with_extremes(bad="#eeeeee")
    img = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, norm=TwoSlopeNorm(0.0, -vmax, vmax), aspect="auto",
                    interpolation="nearest")
    img.set_gid("heatmap")
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            v = grid[i, j]
            if np.isnan(v):
                continue
            text = f"{v:+.{digits}f}"
            if i == len(units) and counts[j] != len(units):
                text += f"\n({counts[j]})"
            ax.text(j, i, text, ha="center", va="center", fontsize=6.5 if i < len(units) else 6,
                    color="white" if abs(v) > 0.6 * vmax else "black")
    ax.axhline(len(units) - 0.5, color="black", linewidth=1.2)
    metric = changes["metric"][0] if changes.height else ""
    ax.set_yticks(range(len(units) + 1), [*units, "mean over tasks"], fontsize=8)
    ax.set_xticks(range(len(methods)), [method_label(m).replace(" (", "\n(") for m in methods], fontsize=8,
                  rotation=35, ha="right", rotation_mode="anchor")
    ax.tick_params(length=0)
    for s in ax.spines.values():
        s.set_visible(False)
    bar = fig.colorbar(img, ax=ax, shrink=min(1.0, 6.0 / (0.27 * (len(units) + 1) + 0.1)), pad=0.02)
    bar.set_label(f"change in {metric_label(metric)} over base\n(positive = better)", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    ax.set_title(title or f"{metric_label(metric)}: change over base", fontsize=10)
    return fig


def parity_figure(predictions: pl.DataFrame, *, title: str = "", methods: Sequence[str] | None = None,
                  notes: Mapping[str, str] | None = None, caption: str = "", max_cols: int = 4):
    """Predicted vs measured values, one panel per method (same axes in every panel).

    Args:
        predictions: one row per (method, split seed, molecule): ``method, y_true, y_pred, censor``
            (0 fitted; +1 the measured value is a lower bound of the true one; -1 an upper bound), and
            optionally ``split_seed``. Rows of several seeds are pooled.
        notes: method -> text written in the panel's corner (e.g. the table's R² mean ± std).
        caption: a line under the panels, above the legend (what the notes are).

    A fitted value is a dot; a bound is an arrow head at (bound, prediction) pointing the way the true
    value lies (right: at least the bound, left: at most), so a prediction on the right side of its bound
    is visibly not an error.
    """
    from matplotlib.lines import Line2D

    methods = _ordered_methods(predictions, methods)
    n = max(len(methods), 1)
    ncols = min(max_cols, n)
    nrows = math.ceil(n / ncols)
    # wide enough for the title on one line (constrained layout keeps one suptitle line clear of the panels)
    # each row carries its own x axis where no panel is below it: room for it on every row
    fig = _new_figure(max(0.6 + 2.55 * ncols, 0.075 * len(title) + 0.8), 1.3 + 2.9 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True, sharey=True)
    data = predictions.filter(pl.col("y_true").is_not_nan() & pl.col("y_pred").is_not_nan())
    if "censor" not in data.columns:
        data = data.with_columns(censor=pl.lit(0, pl.Int8))
    both = np.concatenate([data["y_true"].to_numpy(), data["y_pred"].to_numpy()]) if data.height else np.zeros(1)
    lo, hi = float(both.min()), float(both.max())
    pad = 0.06 * (hi - lo or 1.0)  # room for the arrow heads of bounds at the edge
    lo, hi = lo - pad, hi + pad
    kinds = {0: ("fitted", "o", "#0072B2", 10, 0.45), 1: ("bound_lower", ">", "#D55E00", 16, 0.8),
             -1: ("bound_upper", "<", "#D55E00", 16, 0.8)}
    for k, ax in enumerate(axes.flat):
        if k >= len(methods):
            ax.set_visible(False)
            continue
        m = methods[k]
        d = data.filter(pl.col("method") == m)
        ax.plot([lo, hi], [lo, hi], color="black", linewidth=0.8, linestyle=(0, (4, 2)), zorder=1)
        for c, (gid, marker, color, size, alpha) in kinds.items():
            part = d.filter(pl.col("censor") == c)
            if part.height:
                ax.scatter(part["y_true"].to_numpy(), part["y_pred"].to_numpy(), s=size, marker=marker, color=color,
                           alpha=alpha, linewidths=0, zorder=2 + (c != 0), gid=f"{gid}:{m}")
        n_fit, n_bound = int((d["censor"] == 0).sum()), int((d["censor"] != 0).sum())
        text = (f"{notes[m]}\n" if notes and m in notes else "") + f"n = {n_fit} fitted" + (
            f", {n_bound} bounds" if n_bound else "")
        ax.text(0.03, 0.97, text, transform=ax.transAxes, ha="left", va="top", fontsize=7,
                bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none", "pad": 1.5})
        ax.set_title(method_label(m), fontsize=9)
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_box_aspect(1)  # square panels with the same limits on both axes: the diagonal at 45°
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.25)
    for k, ax in enumerate(axes.flat):
        # the lowest visible panel of each column carries the x axis (shared axes hide it on the others)
        if k < len(methods) and k + ncols >= len(methods):
            ax.xaxis.set_tick_params(labelbottom=True)
            ax.set_xlabel("measured", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("predicted", fontsize=8)
    legend = [(Line2D([], [], linestyle="", marker="o", color="#0072B2", alpha=0.6), "fitted value"),
              (Line2D([], [], linestyle="", marker=">", color="#D55E00"), "bound: true value ≥ it"),
              (Line2D([], [], linestyle="", marker="<", color="#D55E00"), "bound: true value ≤ it"),
              (Line2D([], [], color="black", linewidth=0.8, linestyle=(0, (4, 2))), "predicted = measured")]
    present = set(data["censor"].unique().to_list()) if data.height else set()
    legend = [h for h, c in zip(legend, (0, 1, -1, None), strict=True) if c is None or c in present]
    # under the panels, in one row: a long title above cannot run into it
    fig.legend(*zip(*legend, strict=True), loc="outside lower center", ncols=len(legend), fontsize=8, frameon=False,
               title=caption or None, title_fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


# --------------------------------------------------------------------------- file writers


def plot_metric_by_task(summary: pl.DataFrame, path: str | Path, **kwargs) -> Path:
    """:func:`metric_by_task_figure` written to ``path``."""
    return save(metric_by_task_figure(summary, **kwargs), path)


def plot_gain(changes: pl.DataFrame, path: str | Path, **kwargs) -> Path:
    """:func:`gain_figure` written to ``path``."""
    return save(gain_figure(changes, **kwargs), path)
