"""Report figures (matplotlib, Agg canvas; no pyplot global state): metric by task, gain over base.

Both take the frames :mod:`mfray.results.report` builds, so a figure always shows the same numbers
as the table beside it.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

_FLOOR_HATCH = "//"


def _figure(n_units: int, n_methods: int):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    width = max(6.0, 1.5 + n_units * (0.22 * n_methods + 0.5))
    fig = Figure(figsize=(min(width, 40.0), 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _colors(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _grouped_bars(ax, units: list[str], methods: list[str], value, err=None, floor: set[str] = frozenset(),
                  palette: dict | None = None):
    import numpy as np

    x = np.arange(len(units))
    width = 0.8 / max(len(methods), 1)
    palette = palette or dict(zip(methods, _colors(len(methods)), strict=True))
    for j, m in enumerate(methods):
        c = palette[m]
        ys = [value(u, m) for u in units]
        es = [err(u, m) for u in units] if err is not None else None
        ok = [y is not None for y in ys]
        xs = x[ok] - 0.4 + width * (j + 0.5)
        ax.bar(xs, [y for y in ys if y is not None], width, label=m, color=c,
               yerr=[e or 0.0 for e, k in zip(es, ok, strict=True) if k] if es is not None else None,
               capsize=2 if es is not None else 0, edgecolor="black", linewidth=0.4,
               hatch=_FLOOR_HATCH if m in floor else None)
    ax.set_xticks(x, units, rotation=30 if len(units) > 3 else 0, ha="right" if len(units) > 3 else "center")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)


def _palette(frame: pl.DataFrame) -> dict:
    """method -> colour, from every method of the frame (base included) so a method keeps its colour
    across the figures of one report."""
    methods = frame["method"].unique(maintain_order=True).to_list()
    return dict(zip(methods, _colors(len(methods)), strict=True))


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    return path


def plot_metric_by_task(summary: pl.DataFrame, path: str | Path, *, title: str = "",
                        floor: set[str] = frozenset()) -> Path:
    """Grouped bars: one group per task, one bar per method, error bars = std over split seeds.

    ``summary`` is :func:`mfray.results.report.summarize` output (columns unit, method, mean, std, metric).
    """
    units = summary["unit"].unique(maintain_order=True).to_list()
    methods = summary["method"].unique(maintain_order=True).to_list()
    cell = {(r["unit"], r["method"]): r for r in summary.iter_rows(named=True)}
    fig, ax = _figure(len(units), len(methods))
    _grouped_bars(ax, units, methods, lambda u, m: _num(cell.get((u, m), {}).get("mean")),
                  lambda u, m: _num(cell.get((u, m), {}).get("std")), floor, _palette(summary))
    metric = summary["metric"][0] if summary.height else ""
    ax.set_ylabel(f"{metric} (mean ± std over split seeds)")
    ax.set_title(title or metric)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    return _save(fig, Path(path))


def plot_gain(changes: pl.DataFrame, path: str | Path, *, title: str = "", relative: bool = False,
              floor: set[str] = frozenset()) -> Path:
    """Grouped bars of the change over the base strategy per task and method (positive = better).

    ``changes`` is :func:`mfray.results.report.compare_to_base` output; base rows and methods without
    a base are left out.
    """
    col = "change_pct" if relative else "change"
    rows = changes.filter(pl.col(col).is_not_null() & (pl.col("method") != pl.col("base_method")))
    units = rows["unit"].unique(maintain_order=True).to_list()
    methods = rows["method"].unique(maintain_order=True).to_list()
    cell = {(r["unit"], r["method"]): r for r in rows.iter_rows(named=True)}
    fig, ax = _figure(len(units), len(methods))
    if rows.height:
        _grouped_bars(ax, units, methods, lambda u, m: _num(cell.get((u, m), {}).get(col)), None, floor,
                      _palette(changes))
    ax.axhline(0.0, color="black", linewidth=0.8)
    metric = changes["metric"][0] if changes.height else ""
    ax.set_ylabel(f"{'relative change (%)' if relative else 'change'} in {metric} vs base\n(positive = better)")
    ax.set_title(title or f"LF -> HF gain over base ({metric})")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    return _save(fig, Path(path))


def _num(x) -> float | None:
    if x is None:
        return None
    x = float(x)
    return None if x != x else x
