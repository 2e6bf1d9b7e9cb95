"""Aggregate the results table into paper tables and figures (Polars + SciPy; no torch, no ray).

Vocabulary:

- a *unit* is one (task, setting): what a column of a paper table is. Its label is the task name,
  with ``[setting]`` appended when a study has both settings.
- a *method* is one (strategy, model, readout): what a row is. Its label is the strategy name, with
  ``[model]`` when that strategy was run with several models and ``[readout]`` when the study has
  several readouts (``base[rf]``, ``label[st]``, ``base[gnn/st]``). A strategy whose readout was
  chosen per task (a study searched it) is one method: its readout is not part of its label.
- the *base* of a method in a unit is the ``base``-strategy method of the same unit with the same
  model and readout; else the same model; else the unit's only base method; else none.
- *change* is signed so that positive is better: ``method - base`` for higher-is-better metrics
  (r2, pearson, auroc, ...), ``base - method`` for lower-is-better ones (:data:`LOWER_IS_BETTER`).
  ``change_pct`` is ``100 * change / |base mean|`` (null where that exceeds 1000%: a base near zero).
- std is the sample standard deviation over split seeds (``ddof=1``; pass ``ddof=0`` for the
  population form that ``mfray baseline`` prints).

METHOD.md section 6: the ``lf_linear`` floor (a line fitted on the measured LF label only) is placed
directly before the label strategies in every table, and the change table counts in how many tasks
each label strategy beats it.

If the store holds several runs of the same (task, setting, method, split seed) with different
configs (a study re-run after a change), only the latest-finished run counts (:func:`latest_runs`).

Censored labels: runs trained under different censored-label policies (the ``censored`` column:
drop / as_value / censored) are never mixed; a study run under several policies gets one section per
policy. Where labels carry qualifiers, MAE/RMSE/R2/Pearson are on the fitted values only, and the
report adds ``censored_acc`` and ``active_auroc`` (see :mod:`mfray.train.metrics`) and a table of how
many test molecules each task has with a fitted value and with a bound.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import polars as pl

from mfray.results.record import ResultsError

if TYPE_CHECKING:
    from mfray.results.store import ResultsStore

LOWER_IS_BETTER = frozenset({"mae", "rmse", "mse", "loss", "nll", "logloss", "brier"})
DEFAULT_METRICS = ("r2", "mae", "censored_acc", "active_auroc")
#: counts stored as metrics (``n_fitted``, ``n_censored``): shown in the label table, never ranked
COUNT_METRICS = ("n_fitted", "n_censored")
POLICY_TEXT = {
    None: "labels without qualifiers (every value a measurement)",
    "drop": "drop: bounds are not training labels (fitted values only)",
    "as_value": "as_value: bounds used as if measured (MF-PCBA's default-pXC50 convention)",
    "censored": "censored: bounds kept as one-sided targets (a prediction on the right side of its bound costs nothing)",
}
FLOOR = "lf_linear"
#: where the floor goes among the strategies' own ``order`` (right before the label strategies)
FLOOR_ORDER = 15
UNIT_KEYS = ("task", "setting")
METHOD_KEYS = ("strategy", "model", "readout")
RUN_KEYS = ("study", *UNIT_KEYS, *METHOD_KEYS, "split_seed")
SEED_TESTS = {"ttest": "paired t-test", "wilcoxon": "Wilcoxon signed-rank"}
Format = Literal["md", "latex", "csv"]


def higher_is_better(metric: str) -> bool:
    return metric.lower() not in LOWER_IS_BETTER


# --------------------------------------------------------------------------- frames


def latest_runs(df: pl.DataFrame) -> pl.DataFrame:
    """Keep, per (study, task, setting, strategy, model, readout, split_seed), the latest-finished run."""
    if df.is_empty():
        return df
    runs = (df.group_by("run_key").agg(pl.col(k).first() for k in (*RUN_KEYS, "finished_at"))
            .sort(["finished_at", "run_key"], nulls_last=False)
            .unique(subset=list(RUN_KEYS), keep="last"))
    return df.filter(pl.col("run_key").is_in(runs["run_key"].implode()))


def _readout_per_task(df: pl.DataFrame) -> pl.DataFrame:
    """Null the readout of strategies whose readout is a per-task choice (a study searched it).

    When no (task, setting, strategy, model, split seed) was run with two readouts, a strategy whose
    readout still differs between tasks picked it per task: it is one method, not one per readout.
    Readouts run side by side on the same task stay separate methods.
    """
    if df.height == 0:
        return df
    cells = df.group_by("task", "setting", "strategy", "model", "split_seed").agg(pl.col("readout").n_unique().alias("_r"))
    if cells["_r"].max() > 1:
        return df
    varying = (df.group_by("strategy", "model").agg(pl.col("readout").n_unique().alias("_r"))
               .filter(pl.col("_r") > 1))
    if varying.height == 0:
        return df
    hit = pl.concat_str([pl.col("strategy"), pl.col("model")], separator="\x1f").is_in(
        [f"{a}\x1f{b}" for a, b in varying.select("strategy", "model").iter_rows()])
    return df.with_columns(readout=pl.when(hit).then(pl.lit(None, pl.String)).otherwise(pl.col("readout")))


def _seeds_phrase(df: pl.DataFrame) -> str:
    """``5 split seeds``, or ``3 split seeds per task`` when tasks have their own seeds (MF-PCBA)."""
    per_task = df.group_by("task").agg(pl.col("split_seed").n_unique().alias("n"))["n"]
    total = df["split_seed"].n_unique()
    if per_task.len() > 1 and total > per_task.max():
        lo, hi = per_task.min(), per_task.max()
        return f"{lo if lo == hi else f'{lo}-{hi}'} split seeds per task"
    return f"{total} split seeds"


def _label_frame(df: pl.DataFrame) -> pl.DataFrame:
    """Add ``unit`` and ``method`` label columns (see the module docstring)."""
    df = _readout_per_task(df)
    several_settings = df["setting"].n_unique() > 1
    several_readouts = df["readout"].drop_nulls().n_unique() > 1
    models_per_strategy = df.group_by("strategy").agg(pl.col("model").n_unique().alias("_nm"))
    df = df.join(models_per_strategy, on="strategy", how="left")
    extra = []
    model_part = pl.when((pl.col("_nm") > 1) & (pl.col("model") != pl.col("strategy"))).then(pl.col("model"))
    extra.append(model_part)
    if several_readouts:
        extra.append(pl.col("readout"))
    inner = pl.concat_str(extra, separator="/", ignore_nulls=True)
    method = (pl.when(inner.str.len_chars() > 0)
              .then(pl.concat_str([pl.col("strategy"), pl.lit("["), inner, pl.lit("]")]))
              .otherwise(pl.col("strategy")))
    unit = (pl.concat_str([pl.col("task"), pl.lit(" ["), pl.col("setting"), pl.lit("]")])
            if several_settings else pl.col("task"))
    return df.with_columns(method=method, unit=unit).drop("_nm")


def _strategy_order(strategy: str) -> int:
    """Row position of a method: the strategy's own ``order``, the floor right before the label
    strategies, other baselines and searched choices after every strategy."""
    from mfray.transfer import STRATEGIES, get_strategy

    if strategy == FLOOR:
        return FLOOR_ORDER
    return get_strategy(strategy).order if strategy in STRATEGIES else 1000


def _compares_to_floor(strategy: str) -> bool:
    """Whether tables compare the strategy with the lf_linear floor (it reads the LF label or its prediction)."""
    from mfray.transfer import STRATEGIES, get_strategy

    return strategy in STRATEGIES and get_strategy(strategy).floor


def _method_sort_key(strategy: str, model: str | None, readout: str | None) -> tuple:
    return (_strategy_order(strategy), strategy, model or "", readout or "")


def _ordered(frame: pl.DataFrame) -> pl.DataFrame:
    """Sort by unit, then method by :func:`_strategy_order`."""
    if frame.is_empty():
        return frame
    keys = {m: _method_sort_key(s, mo, r)
            for m, s, mo, r in frame.select("method", *METHOD_KEYS).unique().iter_rows()}
    order = {m: i for i, m in enumerate(sorted(keys, key=keys.__getitem__))}
    return (frame.with_columns(_o=pl.col("method").replace_strict(order, return_dtype=pl.Int64))
            .sort(["unit", "_o"]).drop("_o"))


def _metric_rows(df: pl.DataFrame, metric: str, fold: str) -> pl.DataFrame:
    rows = df.filter((pl.col("metric") == metric) & (pl.col("fold") == fold))
    if rows.is_empty():
        have = sorted(df.filter(pl.col("fold") == fold)["metric"].unique().to_list())
        folds = sorted(df["fold"].unique().to_list())
        raise ResultsError(f"no {fold!r} values of metric {metric!r}; metrics of fold {fold!r}: "
                           f"{', '.join(have) or 'none'} (folds: {', '.join(folds) or 'none'})")
    return _label_frame(latest_runs(rows))


def _values(df: pl.DataFrame, metric: str, fold: str) -> pl.DataFrame:
    """Per-seed values: unit, method, keys, split_seed, value (NaN -> null)."""
    rows = _metric_rows(df, metric, fold)
    return rows.select("unit", *UNIT_KEYS, "method", *METHOD_KEYS, "split_seed",
                       pl.col("value").fill_nan(None), pl.lit(metric).alias("metric"))


def seed_values(df: pl.DataFrame, metric: str, fold: str = "test") -> pl.DataFrame:
    """The values :func:`summarize` averages, one row per (unit, method, split seed): ``unit, task,
    setting, method, strategy, model, readout, split_seed, value, metric`` (NaN -> null)."""
    return _values(df, metric, fold)


def seed_changes(values: pl.DataFrame, changes: pl.DataFrame) -> pl.DataFrame:
    """The change over base per split seed, paired by seed: ``unit, method, split_seed, change``.

    ``values`` is :func:`seed_values` output, ``changes`` :func:`compare_to_base` output (it says which
    method is whose base). Signed like ``change`` (positive = better); seeds that only one side has
    are left out, so the mean over seeds equals ``change`` when both sides ran the same seeds.
    """
    sign = 1.0 if higher_is_better(values["metric"][0]) else -1.0
    pairs = changes.filter(pl.col("base_method").is_not_null() & (pl.col("method") != pl.col("base_method")))
    own = values.select("unit", "method", "split_seed", "value")
    base = own.rename({"method": "base_method", "value": "base_value"})
    return (pairs.select("unit", "method", "base_method")
            .join(own, on=["unit", "method"]).join(base, on=["unit", "base_method", "split_seed"])
            .filter(pl.col("value").is_not_null() & pl.col("base_value").is_not_null())
            .select("unit", "method", "split_seed", change=(pl.col("value") - pl.col("base_value")) * sign + 0.0)
            .sort("unit", "method", "split_seed"))


def method_order(frame: pl.DataFrame) -> list[str]:
    """The methods of ``frame`` in table order (the strategies' ``order``, the floor before the label
    strategies), whatever task they first appear in."""
    keys = {m: _method_sort_key(s, mo, r)
            for m, s, mo, r in frame.select("method", *METHOD_KEYS).unique().iter_rows()}
    return sorted(keys, key=keys.__getitem__)


def floor_methods(frame: pl.DataFrame) -> set[str]:
    """The ``lf_linear`` floor methods of ``frame``."""
    return {m for m, s, mo in frame.select("method", "strategy", "model").iter_rows() if FLOOR in (s, mo)}


def summarize(df: pl.DataFrame, metric: str, fold: str = "test", ddof: int = 1) -> pl.DataFrame:
    """Mean and std over split seeds per (task, setting, method).

    Returns columns ``metric, unit, task, setting, method, strategy, model, readout, n_seeds, mean,
    std`` (std null with one seed), ordered by unit then the strategies' ``order``. NaN values (an
    undefined R2 on a constant fold) are left out of the mean and not counted in ``n_seeds``.
    """
    vals = _values(df, metric, fold)
    out = (vals.group_by("unit", *UNIT_KEYS, "method", *METHOD_KEYS)
           .agg(n_seeds=pl.col("value").count(), mean=pl.col("value").mean(),
                std=pl.col("value").std(ddof=ddof))
           .with_columns(pl.lit(metric).alias("metric")))
    out = out.select("metric", "unit", *UNIT_KEYS, "method", *METHOD_KEYS, "n_seeds", "mean", "std")
    return _ordered(out)


def _base_map(methods: pl.DataFrame, base: str) -> dict[tuple[str, str], str | None]:
    """(unit, method) -> the base method of that unit (see the module docstring)."""
    by_unit: dict[str, list[dict]] = defaultdict(list)
    for r in methods.select("unit", "method", *METHOD_KEYS).unique().iter_rows(named=True):
        by_unit[r["unit"]].append(r)
    out: dict[tuple[str, str], str | None] = {}
    for unit, rows in by_unit.items():
        bases = [r for r in rows if r["strategy"] == base]
        for r in rows:
            if r["strategy"] == base:
                out[(unit, r["method"])] = r["method"]
                continue
            pick = ([b for b in bases if b["model"] == r["model"] and b["readout"] == r["readout"]]
                    or [b for b in bases if b["model"] == r["model"]])
            if len(pick) != 1:
                pick = bases if len(bases) == 1 else []
            out[(unit, r["method"])] = pick[0]["method"] if pick else None
    return out


def _floor_map(methods: pl.DataFrame) -> dict[str, str]:
    """unit -> the lf_linear method of that unit (when there is exactly one)."""
    floors: dict[str, list[str]] = defaultdict(list)
    for unit, method, strategy, model in methods.select("unit", "method", "strategy", "model").unique().iter_rows():
        if FLOOR in (strategy, model):
            floors[unit].append(method)
    return {u: ms[0] for u, ms in floors.items() if len(ms) == 1}


def compare_to_base(summary: pl.DataFrame, base: str = "base") -> pl.DataFrame:
    """Add the change of every method over its base in the same unit (positive = better).

    Adds ``base_method, base_mean, change, change_pct`` and, for label strategies where the unit has
    an ``lf_linear`` floor, ``floor_mean, change_vs_floor`` (positive = the strategy beats the floor).
    """
    if summary.is_empty():
        return summary.with_columns(base_method=pl.lit(None, pl.String), base_mean=pl.lit(None, pl.Float64),
                                    change=pl.lit(None, pl.Float64), change_pct=pl.lit(None, pl.Float64),
                                    floor_mean=pl.lit(None, pl.Float64), change_vs_floor=pl.lit(None, pl.Float64))
    sign = 1.0 if higher_is_better(summary["metric"][0]) else -1.0
    bmap = _base_map(summary, base)
    fmap = _floor_map(summary)
    means = {(u, m): v for u, m, v in summary.select("unit", "method", "mean").iter_rows()}
    base_method = [bmap.get((u, m)) for u, m in summary.select("unit", "method").iter_rows()]
    floor_method = [fmap.get(u) if _compares_to_floor(s) else None
                    for u, s in summary.select("unit", "strategy").iter_rows()]
    out = summary.with_columns(
        base_method=pl.Series(base_method, dtype=pl.String),
        base_mean=pl.Series([means.get((u, b)) if b else None
                             for u, b in zip(summary["unit"], base_method, strict=True)], dtype=pl.Float64),
        floor_mean=pl.Series([means.get((u, f)) if f else None
                              for u, f in zip(summary["unit"], floor_method, strict=True)], dtype=pl.Float64),
    )
    change = (pl.col("mean") - pl.col("base_mean")) * sign + 0.0  # + 0.0: no "-0.000" for a base itself
    return out.with_columns(
        change=change,
        # a percentage of a base near zero (an R2 of 0.003) is noise, not information: none above 1000%
        change_pct=pl.when((pl.col("base_mean").abs() > 0) & (10.0 * pl.col("base_mean").abs() >= change.abs()))
        .then(100.0 * change / pl.col("base_mean").abs()),
        change_vs_floor=(pl.col("mean") - pl.col("floor_mean")) * sign,
    ).select(*summary.columns, "base_method", "base_mean", "change", "change_pct", "floor_mean", "change_vs_floor")


def with_ranks(summary: pl.DataFrame) -> pl.DataFrame:
    """Add ``rank``: 1 = best mean within the unit, ties share the average rank; null mean -> null rank."""
    if summary.is_empty():
        return summary.with_columns(rank=pl.lit(None, pl.Float64))
    desc = higher_is_better(summary["metric"][0])
    return summary.with_columns(rank=pl.col("mean").fill_nan(None).rank("average", descending=desc)
                                .over("unit").cast(pl.Float64))


def rank(summary: pl.DataFrame) -> pl.DataFrame:
    """Average rank per method across units: ``method, mean_rank, n_tasks, n_best``.

    A method is ranked only among the methods present in a unit; ``n_tasks`` says over how many
    units its mean rank is taken (compare methods with the same ``n_tasks``).
    """
    ranked = with_ranks(summary).filter(pl.col("rank").is_not_null())
    out = (ranked.group_by("method", *METHOD_KEYS)
           .agg(mean_rank=pl.col("rank").mean(), n_tasks=pl.len().cast(pl.Int64),
                n_best=(pl.col("rank") <= 1.0).sum().cast(pl.Int64))
           .with_columns(unit=pl.lit("")))
    return _ordered(out).drop("unit")


def _paired(x: np.ndarray, y: np.ndarray, test: str) -> tuple[float | None, float | None, str | None]:
    """(statistic, two-sided p, note) of a paired test of x against y; identical pairs -> (0, 1)."""
    from scipy import stats

    d = x - y
    if np.all(d == 0):
        return 0.0, 1.0, None
    if test == "ttest" and np.ptp(d) <= 1e-12 * max(1.0, float(np.abs(d).max())):
        return None, None, "n/a: constant difference (zero variance), t undefined"
    with np.errstate(divide="ignore", invalid="ignore"):
        if test == "wilcoxon":
            res = stats.wilcoxon(x, y)
        else:
            res = stats.ttest_rel(x, y)
    stat, p = float(res.statistic), float(res.pvalue)
    return (None if math.isnan(stat) else stat), (None if math.isnan(p) else p), None


def _test_row(metric, scope, method, base_method, unit, test, x, y, sign, min_n=2) -> dict:
    n = len(x)
    d = (x - y) * sign
    row = {"metric": metric, "scope": scope, "method": method, "base_method": base_method, "unit": unit,
           "test": SEED_TESTS[test], "n": n, "mean_change": float(d.mean()) if n else None,
           "wins": int((d > 0).sum()), "ties": int((d == 0).sum()), "losses": int((d < 0).sum()),
           "statistic": None, "p_value": None, "note": None}
    if n < min_n:
        row["note"] = f"n/a: {n} paired {'task' if scope == 'tasks' else 'seed'}{'' if n == 1 else 's'} (< {min_n})"
        return row
    row["statistic"], row["p_value"], row["note"] = _paired(x, y, test)
    return row


_TEST_SCHEMA = {"metric": pl.String, "scope": pl.String, "method": pl.String, "base_method": pl.String,
                "unit": pl.String, "test": pl.String, "n": pl.Int64, "mean_change": pl.Float64, "wins": pl.Int64,
                "ties": pl.Int64, "losses": pl.Int64, "statistic": pl.Float64, "p_value": pl.Float64,
                "note": pl.String}


def paired_tests(df: pl.DataFrame, metric: str, fold: str = "test", base: str = "base",
                 seed_test: Literal["ttest", "wilcoxon"] = "ttest") -> pl.DataFrame:
    """Paired tests of every method against its base, two-sided.

    - ``scope="tasks"``: Wilcoxon signed-rank (``scipy.stats.wilcoxon(method_means, base_means)``)
      over the per-unit means of the units where both exist; fewer than 2 pairs -> ``p_value`` null
      and ``note`` "n/a: ...". With 5 or fewer tasks no difference can reach p < 0.05.
    - ``scope="seeds"``: per unit, paired over split seeds present for both: ``scipy.stats.ttest_rel``
      (``seed_test="ttest"``, default) or ``scipy.stats.wilcoxon``. The ``test`` column names it.

    ``mean_change``, ``wins/ties/losses`` are signed so that positive/win = better than base.
    """
    if seed_test not in SEED_TESTS:
        raise ResultsError(f"seed_test {seed_test!r} is not one of {', '.join(SEED_TESTS)}")
    vals = _values(df, metric, fold)
    summary = summarize(df, metric, fold)
    sign = 1.0 if higher_is_better(metric) else -1.0
    bmap = _base_map(summary, base)
    methods = summary["method"].unique(maintain_order=True).to_list()
    units = summary["unit"].unique(maintain_order=True).to_list()
    per_seed = {(u, m): dict(zip(g["split_seed"].to_list(), g["value"].to_list(), strict=True))
                for (u, m), g in vals.group_by("unit", "method")}
    means = {(u, m): v for u, m, v in summary.select("unit", "method", "mean").iter_rows()}
    rows = []
    for m in methods:
        pairs = [(means[(u, m)], means[(u, bmap[(u, m)])]) for u in units
                 if (u, m) in means and bmap.get((u, m)) not in (None, m)
                 and means[(u, m)] is not None and means.get((u, bmap[(u, m)])) is not None]
        bases = sorted({bmap[(u, m)] for u in units if bmap.get((u, m)) not in (None, m)})
        if not bases:
            continue
        x = np.array([p[0] for p in pairs], dtype=float)
        y = np.array([p[1] for p in pairs], dtype=float)
        rows.append(_test_row(metric, "tasks", m, ",".join(bases), None, "wilcoxon", x, y, sign))
    for u in units:
        for m in methods:
            b = bmap.get((u, m))
            if (u, m) not in per_seed or b in (None, m):
                continue
            xs, ys = per_seed[(u, m)], per_seed.get((u, b), {})
            seeds = sorted(s for s in xs if s in ys and xs[s] is not None and ys[s] is not None)
            x = np.array([xs[s] for s in seeds], dtype=float)
            y = np.array([ys[s] for s in seeds], dtype=float)
            rows.append(_test_row(metric, "seeds", m, b, u, seed_test, x, y, sign))
    return pl.DataFrame(rows, schema=_TEST_SCHEMA)


# --------------------------------------------------------------------------- predictions

#: where a study keeps a run's per-molecule predictions, under its storage (mfray.run.study.plan)
RUNS_DIR = "runs"
PREDICTIONS_FILE = "predictions.parquet"


def runs_beside(store: ResultsStore) -> str | None:
    """The ``runs/`` folder of the study storage that holds ``store`` as its ``results/`` (where a
    study writes ``runs/<run_key>/predictions.parquet``), or None when there is none."""
    import pyarrow.fs as pafs

    parent, _, name = store.root.rpartition("/")
    if name != "results" or store.fs.get_file_info(f"{parent}/{RUNS_DIR}").type != pafs.FileType.Directory:
        return None
    uri = store.uri.rstrip("/")
    return f"{uri.rpartition('/')[0]}/{RUNS_DIR}" if "://" in uri else f"{parent}/{RUNS_DIR}"


def load_predictions(df: pl.DataFrame, runs_dir: str | os.PathLike[str], fold: str = "test") -> pl.DataFrame:
    """Per-molecule predictions of the runs in ``df`` (one study section) that kept them.

    Reads ``<runs_dir>/<run_key>/predictions.parquet`` of each latest run (studies write it for every
    GNN refit; baselines such as ``lf_linear`` and ``rf`` and the ``selected`` copies keep none) and
    returns ``unit, method, split_seed, mol_id, target, y_true, y_pred, censor`` on ``fold``; empty
    when no run kept its predictions.
    """
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    from mfray.results.store import _resolve

    metric = df["metric"][0]
    runs = (_metric_rows(df, metric, fold).select("unit", "method", "split_seed", "run_key").unique()
            .sort("unit", "method", "split_seed"))
    fs, root = _resolve(runs_dir)
    frames = []
    for unit, method, seed, key in runs.iter_rows():
        path = f"{root}/{key}/{PREDICTIONS_FILE}"
        if fs.get_file_info(path).type != pafs.FileType.File:
            continue
        p = pl.from_arrow(pq.read_table(path, filesystem=fs))
        if "fold" in p.columns:
            p = p.filter(pl.col("fold") == fold)
        if "censor" not in p.columns:
            p = p.with_columns(censor=pl.lit(0, pl.Int8))
        target = pl.col("target") if "target" in p.columns else pl.lit(None, pl.String)
        frames.append(p.select(pl.lit(unit).alias("unit"), pl.lit(method).alias("method"),
                               pl.lit(seed, pl.Int64).alias("split_seed"), "mol_id", target.alias("target"),
                               pl.col("y_true").cast(pl.Float64), pl.col("y_pred").cast(pl.Float64),
                               pl.col("censor").cast(pl.Int8)))
    if not frames:
        return pl.DataFrame(schema={"unit": pl.String, "method": pl.String, "split_seed": pl.Int64,
                                    "mol_id": pl.Int64, "target": pl.String, "y_true": pl.Float64,
                                    "y_pred": pl.Float64, "censor": pl.Int8})
    return pl.concat(frames, how="vertical_relaxed")


# --------------------------------------------------------------------------- tables


@dataclass
class Table:
    """A rendered-to-be table: string cells, a title, notes and cells to set in bold."""

    frame: pl.DataFrame
    title: str = ""
    notes: list[str] = field(default_factory=list)
    bold: set[tuple[int, str]] = field(default_factory=set)  # (row index, column name)
    #: columns that summarise a row over the tasks (avg rank, mean change, ...): after the task columns
    summary: tuple[str, ...] = ()
    #: rows before which LaTeX draws a \midrule (a transposed table's summary rows)
    rules: set[int] = field(default_factory=set)


def transpose(table: Table, first: str = "task") -> Table:
    """Methods x tasks -> tasks x methods (for many tasks): the task columns become rows, the summary
    columns (avg rank, mean change, ...) rows under a rule, and the bold cells follow. Tables whose
    rows are not methods come back as they are."""
    frame = table.frame
    head, *cols = frame.columns
    if head != "method":
        return table
    methods = frame[head].to_list()
    if len(set(methods)) != len(methods):
        raise ResultsError(f"cannot transpose {table.title!r}: a method appears twice")
    data = {first: cols} | {m: [frame[c][i] for c in cols] for i, m in enumerate(methods)}
    out = pl.DataFrame(data, schema={k: pl.String for k in data})
    bold = {(cols.index(c), methods[i]) for i, c in table.bold}
    n_tasks = len([c for c in cols if c not in table.summary])
    rules = {n_tasks} if 0 < n_tasks < len(cols) else set()
    notes = [*table.notes, "Tasks are rows, methods columns."]
    return Table(out, table.title, notes, bold, (), rules)


def humanize(table: Table) -> Table:
    """Registry names -> human labels (:mod:`mfray.results.labels`) in the method cells, the headers
    and the title's leading metric, for tables bound for a paper (LaTeX)."""
    from mfray.results.labels import LABELS, METRIC_LABELS, label, method_label

    def word(w: str) -> str:
        return label(w) if w in METRIC_LABELS or w == FLOOR else w

    def header(c: str) -> str:
        return " ".join(word(w) for w in c.split(" "))

    frame = table.frame
    cols = {}
    for c in frame.columns:
        if c in ("method", "vs", "best in hindsight"):
            raw = frame[c].to_list()
            new = [None if v is None else method_label(v) for v in raw]
            # two methods with the same label would merge in a reader's eye: keep their registry names
            sources = defaultdict(set)
            for r, n in zip(raw, new, strict=True):
                sources[n].add(r)
            clash = {n for n, rs in sources.items() if n is not None and len(rs) > 1}
            cols[c] = [r if n in clash else n for r, n in zip(raw, new, strict=True)]
        elif c == "selected":
            cols[c] = [None if v is None else ", ".join(LABELS.get(x, x) for x in v.split(", ")) for v in frame[c]]
        else:
            cols[c] = frame[c].to_list()
    names = {c: header(c) for c in frame.columns}
    out = pl.DataFrame({names[c]: v for c, v in cols.items()}, schema={names[c]: pl.String for c in cols})
    metric, _, rest = table.title.partition(" ")
    title = f"{word(metric.rstrip(':'))}{':' if metric.endswith(':') else ''} {rest}".strip() if table.title else ""
    return Table(out, title, table.notes, {(i, names[c]) for i, c in table.bold},
                 tuple(names[c] for c in table.summary), table.rules)


def _f(x: float | None, digits: int, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def _p(p: float | None) -> str:
    if p is None:
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _md_cell(s: str) -> str:
    return s.replace("|", "\\|")


_LATEX_ESC = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
              "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
              "±": r"$\pm$", "–": "--", "<": r"$<$", ">": r"$>$", "²": r"$^2$", "Δ": r"$\Delta$",
              "≥": r"$\geq$", "≤": r"$\leq$"}


def _tex(s: str) -> str:
    return "".join(_LATEX_ESC.get(c, c) for c in s)


def render(table: Table | pl.DataFrame, fmt: Format = "md") -> str:
    """Render a table as Markdown (pipe table), LaTeX (booktabs ``table``) or CSV (no title/notes)."""
    t = table if isinstance(table, Table) else Table(table)
    frame = t.frame
    if fmt == "csv":
        return frame.write_csv()
    cols = frame.columns
    cells = [["" if v is None else str(v) for v in row] for row in frame.iter_rows()]
    if fmt == "md":
        def cell(i: int, c: str, s: str) -> str:
            s = _md_cell(s)
            return f"**{s}**" if (i, c) in t.bold and s else s
        lines = [f"### {t.title}", ""] if t.title else []
        lines.append("| " + " | ".join(_md_cell(c) for c in cols) + " |")
        lines.append("|" + "|".join(":---" if j == 0 else "---:" for j in range(len(cols))) + "|")
        for i, row in enumerate(cells):
            lines.append("| " + " | ".join(cell(i, c, s) for c, s in zip(cols, row, strict=True)) + " |")
        if t.notes:
            lines.append("")
            lines.extend(f"- {n}" for n in t.notes)
        return "\n".join(lines) + "\n"
    if fmt == "latex":
        def cell(i: int, c: str, s: str) -> str:
            s = _tex(s)
            return rf"\textbf{{{s}}}" if (i, c) in t.bold and s else s
        lines = [r"\begin{table}[t]", r"\centering"]
        if t.title:
            lines.append(rf"\caption{{{_tex(t.title)}}}")
        lines += [r"\begin{tabular}{l" + "r" * (len(cols) - 1) + "}", r"\toprule",
                  " & ".join(_tex(c) for c in cols) + r" \\", r"\midrule"]
        for i, row in enumerate(cells):
            if i in t.rules:
                lines.append(r"\midrule")
            lines.append(" & ".join(cell(i, c, s) for c, s in zip(cols, row, strict=True)) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}"]
        if t.notes:
            lines.append(r"\par\smallskip{\footnotesize " + r" \\ ".join(_tex(n) for n in t.notes) + "}")
        lines.append(r"\end{table}")
        return "\n".join(lines) + "\n"
    raise ResultsError(f"unknown table format {fmt!r}: use md, latex or csv")


def _grid(rows: list[str], cols: list[str], first: str, value) -> pl.DataFrame:
    data = {first: rows} | {c: [value(r, c) for r in rows] for c in cols}
    return pl.DataFrame(data, schema={k: pl.String for k in data})


def metric_table(summary: pl.DataFrame, ranks: pl.DataFrame, fold: str, digits: int = 3, ddof: int = 1) -> Table:
    """Methods x tasks, cells ``mean ± std``; best mean per task in bold; average rank column."""
    metric = summary["metric"][0]
    hib = higher_is_better(metric)
    units = summary["unit"].unique(maintain_order=True).to_list()
    methods = method_order(summary)  # the table order, whatever task a method first appears in
    cell = {(r["unit"], r["method"]): r for r in summary.iter_rows(named=True)}
    n_common = summary["n_seeds"].mode().sort()[-1] if summary.height else 0

    def fmt(m: str, u: str) -> str:
        r = cell.get((u, m))
        if r is None or r["mean"] is None:
            return ""
        s = _f(r["mean"], digits) + (f" ± {_f(r['std'], digits)}" if r["std"] is not None else "")
        return s + (f" (n={r['n_seeds']})" if r["n_seeds"] != n_common else "")

    frame = _grid(methods, units, "method", fmt)
    rk = {m: r for m, r in zip(ranks["method"], ranks.iter_rows(named=True), strict=True)}
    frame = frame.with_columns(pl.Series("avg rank", [
        _f(rk[m]["mean_rank"], 2) + ("" if rk[m]["n_tasks"] == len(units) else f" ({rk[m]['n_tasks']})")
        if m in rk else "" for m in methods]))
    bold = set()
    for u in units:
        vals = [(cell[(u, m)]["mean"], i) for i, m in enumerate(methods)
                if (u, m) in cell and cell[(u, m)]["mean"] is not None and not math.isnan(cell[(u, m)]["mean"])]
        if vals:
            best = max(v for v, _ in vals) if hib else min(v for v, _ in vals)
            bold |= {(i, u) for v, i in vals if v == best}
    notes = [f"{metric} on the {fold} fold, mean ± std over {n_common} split seeds "
             f"(std with ddof={ddof}); {'higher' if hib else 'lower'} is better; best per task in bold.",
             "avg rank: rank of the method's mean within each task (1 = best), averaged over tasks "
             "(in brackets: over how many tasks, when not all)."]
    if any(FLOOR in (s, mo) for s, mo in summary.select("strategy", "model").iter_rows()):
        notes.append(f"{FLOOR}: a straight line fitted on the measured LF label alone (no structure), the floor "
                     "a label strategy must beat to have learned anything from the molecules.")
    return Table(frame, f"{metric} ({fold}) by task", notes, bold, summary=("avg rank",))


def change_table(changes: pl.DataFrame, tests: pl.DataFrame, digits: int = 3) -> Table:
    """Methods x tasks, cells ``change (change %)`` over base; mean change, Wilcoxon p across tasks, floor wins."""
    metric = changes["metric"][0]
    units = changes["unit"].unique(maintain_order=True).to_list()
    rows = changes.filter(pl.col("base_method").is_not_null() & (pl.col("method") != pl.col("base_method")))
    methods = method_order(rows)
    cell = {(r["unit"], r["method"]): r for r in rows.iter_rows(named=True)}

    def fmt(m: str, u: str) -> str:
        r = cell.get((u, m))
        if r is None or r["change"] is None:
            return ""
        pct = f" ({_f(r['change_pct'], 1, signed=True)}%)" if r["change_pct"] is not None else ""
        return _f(r["change"], digits, signed=True) + pct

    frame = _grid(methods, units, "method", fmt)
    across = {r["method"]: r for r in tests.filter(pl.col("scope") == "tasks").iter_rows(named=True)}
    mean_change = {m: g["change"].mean() for (m,), g in rows.group_by("method")}
    # relative mean change: the mean change over the mean |base| (a mean of per-task percentages can
    # have the opposite sign of the mean change when one task's base is near zero)
    mean_pct = {}
    for (m,), g in rows.group_by("method"):
        g = g.filter(pl.col("change").is_not_null() & pl.col("base_mean").is_not_null())
        base_abs = g["base_mean"].abs().mean() if g.height else None
        ch = g["change"].mean() if g.height else None
        mean_pct[m] = (100.0 * ch / base_abs if base_abs and ch is not None and 10 * base_abs >= abs(ch) else None)
    floor_col = []
    for m in methods:
        fr = rows.filter((pl.col("method") == m) & pl.col("change_vs_floor").is_not_null())
        floor_col.append(f"{(fr['change_vs_floor'] > 0).sum()}/{fr.height}" if fr.height else "")
    frame = frame.with_columns(
        pl.Series("mean change", [_f(mean_change.get(m), digits, signed=True)
                                  + (f" ({_f(mean_pct[m], 1, signed=True)}%)" if mean_pct.get(m) is not None else "")
                                  for m in methods], dtype=pl.String),
        pl.Series("W/T/L", [f"{across[m]['wins']}/{across[m]['ties']}/{across[m]['losses']}" if m in across else ""
                            for m in methods], dtype=pl.String),
        pl.Series("p (Wilcoxon, tasks)", [_p(across[m]["p_value"]) if m in across else "n/a" for m in methods],
                  dtype=pl.String),
    )
    notes = [f"change of {metric} over the base strategy of the same task, signed so that positive = better "
             f"(relative change in brackets, % of |base|; omitted above 1000%, a base near zero; for the mean change, "
             f"% of the mean |base| over tasks). W/T/L: tasks better/equal/worse than base.",
             "p: two-sided Wilcoxon signed-rank test over per-task means (scipy.stats.wilcoxon); n/a with "
             "fewer than 2 tasks; with 5 or fewer tasks it cannot fall below 0.05."]
    if any(floor_col):
        frame = frame.with_columns(pl.Series(f"beats {FLOOR}", floor_col, dtype=pl.String))
        notes.append(f"beats {FLOOR}: tasks where the label strategy's mean is better than the {FLOOR} floor.")
    return Table(frame, f"{metric}: change over base", notes, summary=tuple(frame.columns[1 + len(units):]))


#: strategies that are a choice among the others, not a method of their own (left out of "best in hindsight")
CHOICES = ("selected", "auto")


def selection_table(summary: pl.DataFrame, df: pl.DataFrame, digits: int = 3) -> Table | None:
    """Per task: what the study's selection chose (by validation), its test mean, the best method in
    hindsight (by test), the regret (how much test score the choice lost), and whether it beats the best
    of the base GNN and RF. None when the study recorded no ``selected`` runs."""
    sel = summary.filter(pl.col("strategy") == "selected")
    if sel.is_empty():
        return None
    metric = summary["metric"][0]
    hib = higher_is_better(metric)
    chosen = {}
    if "params_selected" in df.columns:
        for t, st, c in (df.filter(pl.col("strategy") == "selected").select("task", "setting", "params_selected")
                         .unique().iter_rows()):
            chosen.setdefault((t, st), set()).add(c)
    rows = {"task": [], "selected": [], metric: [], "best in hindsight": [], "best " + metric: [], "regret": [],
            "vs best of base/rf": []}
    for r in sel.iter_rows(named=True):
        unit = summary.filter((pl.col("unit") == r["unit"]) & ~pl.col("strategy").is_in(CHOICES)
                              & pl.col("mean").is_not_null())
        if unit.is_empty() or r["mean"] is None:
            continue
        best = unit.sort("mean", descending=hib).row(0, named=True)
        regret = (best["mean"] - r["mean"]) * (1 if hib else -1)
        ref = unit.filter(pl.col("strategy").is_in(["base", "rf"]) | pl.col("model").is_in(["rf"]))
        if ref.height:
            ref_best = ref["mean"].max() if hib else ref["mean"].min()
            beats = "better" if (r["mean"] - ref_best) * (1 if hib else -1) > 0 else "not better"
        else:
            beats = ""
        rows["task"].append(r["unit"])
        rows["selected"].append(", ".join(sorted(chosen.get((r["task"], r["setting"]), set()))))
        rows[metric].append(_f(r["mean"], digits))
        rows["best in hindsight"].append(best["method"])
        rows["best " + metric].append(_f(best["mean"], digits))
        rows["regret"].append(_f(regret, digits))
        rows["vs best of base/rf"].append(beats)
    frame = pl.DataFrame(rows, schema={k: pl.String for k in rows})
    n = frame.height
    wins = sum(v == "better" for v in rows["vs best of base/rf"])
    regrets = [float(x) for x in rows["regret"]]
    notes = [f"selected: per task, the method with the best mean validation score over the split seeds (the "
             f"study's selection.metric), recorded again as strategy 'selected'; regret = best test mean in "
             f"hindsight - selected's ({'higher' if hib else 'lower'} is better for {metric}; 0 = it chose the best).",
             f"selected beats the best of the base GNN and RF on {wins} of {n} tasks; mean regret "
             f"{_f(sum(regrets) / n if n else None, digits)}."]
    return Table(frame, f"{metric}: strategy selection and its regret", notes)


def seed_test_table(tests: pl.DataFrame, digits: int = 3) -> Table:
    """One row per (task, method): paired test over split seeds against base."""
    t = tests.filter(pl.col("scope") == "seeds")
    test_name = t["test"][0] if t.height else SEED_TESTS["ttest"]
    frame = pl.DataFrame({
        "task": t["unit"].to_list(),
        "method": t["method"].to_list(),
        "vs": t["base_method"].to_list(),
        "seeds": [str(n) for n in t["n"].to_list()],
        "mean change": [_f(x, digits, signed=True) for x in t["mean_change"].to_list()],
        "W/T/L": [f"{w}/{ti}/{lo}" for w, ti, lo in t.select("wins", "ties", "losses").iter_rows()],
        "p": [_p(p) for p in t["p_value"].to_list()],
    }, schema={c: pl.String for c in ("task", "method", "vs", "seeds", "mean change", "W/T/L", "p")})
    metric = tests["metric"][0] if tests.height else ""
    notes = [f"two-sided {test_name} over split seeds paired by seed, per task; positive change / W = better "
             "than base; n/a with fewer than 2 paired seeds."]
    return Table(frame, f"{metric}: paired tests across split seeds", notes)


def long_table(summary: pl.DataFrame, changes: pl.DataFrame, tests: pl.DataFrame, study: str | None,
               fold: str) -> pl.DataFrame:
    """One row per (metric, task, method) with every number (the CSV form of a report)."""
    ranked = with_ranks(changes)
    seeds = (tests.filter(pl.col("scope") == "seeds")
             .select("unit", "method", pl.col("test").alias("seed_test"), pl.col("p_value").alias("p_seeds")))
    across = tests.filter(pl.col("scope") == "tasks").select("method", pl.col("p_value").alias("p_tasks_wilcoxon"))
    return (ranked.join(seeds, on=["unit", "method"], how="left")
            .join(across, on="method", how="left")
            .with_columns(study=pl.lit(study, pl.String), fold=pl.lit(fold))
            .select("study", "metric", "fold", "task", "setting", "method", *METHOD_KEYS, "n_seeds", "mean", "std",
                    "rank", "base_method", "base_mean", "change", "change_pct", "floor_mean", "change_vs_floor",
                    "seed_test", "p_seeds", "p_tasks_wilcoxon"))


# --------------------------------------------------------------------------- report


def _load(store_or_df: ResultsStore | pl.DataFrame | str | os.PathLike[str], study: str | None) -> pl.DataFrame:
    from mfray.results.store import ResultsStore

    if isinstance(store_or_df, pl.DataFrame):
        df = store_or_df
    else:
        store = store_or_df if isinstance(store_or_df, ResultsStore) else ResultsStore(store_or_df)
        if study is not None and study not in store.studies():
            raise ResultsError(f"no study {study!r} in {store.uri}; studies: {', '.join(store.studies()) or 'none'}")
        df = store.read(study)
    if df.is_empty():
        raise ResultsError("the results table is empty: no finished runs to report")
    if study is not None:
        have = sorted(df["study"].unique().to_list())
        if study not in have:
            raise ResultsError(f"no study {study!r}; studies: {', '.join(have)}")
        df = df.filter(pl.col("study") == study)
    return df


def _pick_metrics(df: pl.DataFrame, metrics: Sequence[str] | None, fold: str) -> list[str]:
    have = sorted(df.filter(pl.col("fold") == fold)["metric"].unique().to_list())
    if metrics is None:
        picked = [m for m in DEFAULT_METRICS if m in have] or [m for m in have if m not in COUNT_METRICS]
    else:
        picked = list(metrics)
        missing = [m for m in picked if m not in have]
        if missing:
            raise ResultsError(f"metric {', '.join(missing)} not in the {fold!r} fold; "
                               f"available: {', '.join(have) or 'none'}")
    if not picked:
        raise ResultsError(f"no metrics in the {fold!r} fold")
    return picked


def label_table(df: pl.DataFrame, digits: int = 1) -> Table | None:
    """Per task: molecules with a fitted value / with a bound, in the train and test folds (mean over
    split seeds; the same for every method). None when no run recorded these counts."""
    rows = latest_runs(df.filter(pl.col("metric").is_in(COUNT_METRICS) & pl.col("fold").is_in(["train", "test"])))
    if rows.is_empty():
        return None
    per_seed = rows.group_by("task", "setting", "fold", "metric", "split_seed").agg(pl.col("value").first())
    mean = per_seed.group_by("task", "fold", "metric").agg(pl.col("value").mean())
    cells = {(t, f, m): v for t, f, m, v in mean.iter_rows()}
    tasks = sorted(mean["task"].unique().to_list())

    def n(t: str, f: str, m: str) -> str:
        v = cells.get((t, f, m))
        return "" if v is None else (f"{v:,.0f}" if float(v).is_integer() else f"{v:,.{digits}f}")

    cols = {"task": tasks}
    for f in ("train", "test"):
        cols[f"{f} fitted"] = [n(t, f, "n_fitted") for t in tasks]
        cols[f"{f} censored"] = [n(t, f, "n_censored") for t in tasks]
    notes = ["molecules per fold with a fitted HF value and with a bound (censored), mean over split seeds. "
             "r2/mae are on the fitted test values; censored_acc: fraction of censored test molecules predicted on "
             "the right side of their bound; active_auroc: AUROC of the predicted value for fitted (active) vs "
             "censored-below (inactive) test molecules (which compounds deserve a dose-response)."]
    return Table(pl.DataFrame(cols, schema={k: pl.String for k in cols}), "labels: fitted and censored molecules", notes)


def _policy_line(policy: str | None, fmt: Format) -> str:
    text = f"Censored-label policy: {POLICY_TEXT.get(policy, policy)}."
    return f"% {text}\n" if fmt == "latex" else f"{text}\n"


def _header(df: pl.DataFrame, study: str, fmt: Format) -> str:
    runs = df.select("run_key").n_unique()
    superseded = runs - latest_runs(df).select("run_key").n_unique()
    shas = sorted({s for s in df["git_sha"].unique().to_list() if s})
    vers = sorted({v for v in df["mfray_version"].unique().to_list() if v})
    parts = [f"{runs} runs", f"{df['task'].n_unique()} tasks", f"{df['strategy'].n_unique()} strategies",
             _seeds_phrase(df), f"settings: {', '.join(sorted(df['setting'].unique()))}",
             f"mfray {', '.join(vers) or '?'}", f"git {', '.join(s[:12] for s in shas) or 'unknown'}"]
    if superseded:
        parts.append(f"{superseded} superseded runs ignored (an older config of the same run)")
    if fmt == "latex":
        return f"% study {study}: " + "; ".join(parts) + "\n"
    return f"## Study {study}\n\n" + "; ".join(parts) + ".\n"


def make_report(
    store_or_df: ResultsStore | pl.DataFrame | str | os.PathLike[str],
    study: str | None = None,
    metrics: Sequence[str] | None = None,
    fmt: Format = "md",
    plots_dir: str | os.PathLike[str] | None = None,
    *,
    base: str = "base",
    fold: str = "test",
    seed_test: Literal["ttest", "wilcoxon"] = "ttest",
    ddof: int = 1,
    digits: int = 3,
    plot_formats: Sequence[str] = ("png",),
    transpose_tables: bool = False,
    runs_dir: str | os.PathLike[str] | None = None,
) -> str:
    """Tables (and figures) of one study or of every study in ``store_or_df``.

    Args:
        store_or_df: a :class:`ResultsStore`, its root, or a frame read from one.
        study: the study to report; None reports every study, one section each.
        metrics: metrics to report; default ``("r2", "mae")`` where present, else every metric of ``fold``.
        fmt: ``"md"``, ``"latex"`` or ``"csv"`` (CSV: one long table, every number, no formatting).
            LaTeX tables (booktabs) use the human labels of :mod:`mfray.results.labels`; Markdown and
            CSV keep the registry names.
        plots_dir: when given, writes per metric ``<study>__<metric>_<fold>_by_task.<ext>``,
            ``..._gain.<ext>`` and ``..._gain_heatmap.<ext>`` for each ``ext`` in ``plot_formats``
            (png, pdf, svg), and per task ``<study>__parity_<task>_<fold>.<ext>`` where the runs kept
            their predictions (see ``runs_dir``).
        transpose_tables: the wide tables (metric by task, change over base) with tasks as rows and
            methods as columns, for studies with many tasks (no effect on CSV).
        runs_dir: the folder of ``<run_key>/predictions.parquet`` for the parity figures; default: the
            ``runs/`` beside the store when it is a study storage's ``results/`` (:func:`runs_beside`).

    Returns:
        the rendered report.
    """
    from mfray.results.store import ResultsStore

    if fmt not in ("md", "latex", "csv"):
        raise ResultsError(f"unknown report format {fmt!r}: use md, latex or csv")
    if plots_dir is not None:
        from mfray.results.plots import check_formats

        plot_formats = check_formats(plot_formats)
        if runs_dir is None and not isinstance(store_or_df, pl.DataFrame):
            store = store_or_df if isinstance(store_or_df, ResultsStore) else ResultsStore(store_or_df)
            runs_dir = runs_beside(store)
    df = _load(store_or_df, study)

    def show(table: Table) -> str:
        if fmt == "latex":
            table = humanize(table)
        if transpose_tables:
            table = transpose(table)
        return render(table, fmt)

    out: list[str] = [r"% tables need \usepackage{booktabs}" + "\n"] if fmt == "latex" else []
    longs: list[pl.DataFrame] = []
    for st in sorted(df["study"].unique().to_list()):
        study_df = df.filter(pl.col("study") == st)
        # one section per censored-label policy: runs trained under different policies never mix
        policies = study_df["censored"].unique().sort(nulls_last=True).to_list()
        for policy in policies:
            sdf = study_df.filter(pl.col("censored").is_null() if policy is None else pl.col("censored") == policy)
            picked = _pick_metrics(sdf, metrics, fold)
            name = st if len(policies) == 1 else f"{st} [censored={policy}]"
            stem = name.replace(" [censored=", "__").rstrip("]")
            if fmt != "csv":
                out.append(_header(sdf, name, fmt))
                if policy is not None or len(policies) > 1:
                    out.append(_policy_line(policy, fmt))
                    labels = label_table(sdf)
                    if labels is not None:
                        out.append(show(labels))
            summaries = {}
            for metric in picked:
                summary = summarize(sdf, metric, fold, ddof=ddof)
                summaries[metric] = summary
                changes = compare_to_base(summary, base)
                ranks = rank(summary)
                tests = paired_tests(sdf, metric, fold, base, seed_test)
                if fmt == "csv":
                    longs.append(long_table(summary, changes, tests, st, fold).with_columns(
                        censored=pl.lit(policy, pl.String)))
                else:
                    out.append(show(metric_table(summary, ranks, fold, digits, ddof)))
                    selection = selection_table(summary, sdf, digits)
                    if selection is not None:
                        out.append(show(selection))
                    if changes["base_method"].is_not_null().any() and (changes["method"] != changes["base_method"]).any():
                        out.append(show(change_table(changes, tests, digits)))
                        out.append(show(seed_test_table(tests, digits)))
                    else:
                        out.append(f"(no {base!r} strategy to compare against for {metric})\n")
                if plots_dir is not None:
                    write_plots(summary, changes, plots_dir, stem, fold, plot_formats,
                                values=seed_values(sdf, metric, fold), base=base)
            if plots_dir is not None and runs_dir is not None:
                write_parity_plots(sdf, runs_dir, plots_dir, stem, summaries, fold, plot_formats)
    if fmt == "csv":
        return pl.concat(longs, how="diagonal_relaxed").write_csv()
    return "\n".join(out)


def _figure_setup(summary: pl.DataFrame, base: str) -> dict:
    """What every figure of one metric shares: the method order, who is base and floor, the colours."""
    from mfray.results.plots import method_styles

    methods = method_order(summary)
    bases = {m for m, s in summary.select("method", "strategy").iter_rows() if s == base}
    floor = floor_methods(summary)
    return {"methods": methods, "floor": floor, "base": bases, "styles": method_styles(methods, bases, floor)}


def write_plots(summary: pl.DataFrame, changes: pl.DataFrame, plots_dir: str | os.PathLike[str], study: str,
                fold: str = "test", formats: Sequence[str] = ("png",), *, values: pl.DataFrame | None = None,
                base: str = "base") -> list[Path]:
    """Write the metric-by-task, gain-over-base and gain heatmap figures of one metric (the last two
    only where some method has a base to compare with); returns their paths.

    ``values`` (:func:`seed_values`) adds a dot per split seed and the gain figure's error bars.
    """
    from mfray.results.plots import check_formats, gain_figure, gain_heatmap_figure, metric_by_task_figure, save

    formats = check_formats(formats)
    metric = summary["metric"][0]
    setup = _figure_setup(summary, base)
    label = _metric_title(metric, fold)
    figures = {"by_task": metric_by_task_figure(summary, values, title=f"{study}: {label}", **setup)}
    # a study without a base strategy (a rerun of some strategies) has no gain to draw
    if changes["change"].is_not_null().any() and (changes["method"] != changes["base_method"]).any():
        figures["gain"] = gain_figure(changes, seed_changes(values, changes) if values is not None else None,
                                      title=f"{study}: {label}, change over base", **setup)
        figures["gain_heatmap"] = gain_heatmap_figure(changes, title=f"{study}: {label}, change over base",
                                                      methods=setup["methods"])
    folder = Path(plots_dir)
    return [save(fig, folder / f"{study}__{metric}_{fold}_{kind}.{ext}")
            for kind, fig in figures.items() for ext in formats]


def _metric_title(metric: str, fold: str) -> str:
    from mfray.results.labels import metric_label

    return f"{metric_label(metric)} ({fold})"


def _slug(s: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9.-]+", "_", s).strip("_")


def write_parity_plots(df: pl.DataFrame, runs_dir: str | os.PathLike[str], plots_dir: str | os.PathLike[str],
                       study: str, summaries: dict[str, pl.DataFrame] | None = None, fold: str = "test",
                       formats: Sequence[str] = ("png",)) -> list[Path]:
    """One parity figure per task of ``df`` (one study section): predicted vs measured on ``fold``, a
    panel per method that kept its predictions, the split seeds pooled; each panel notes the table's
    mean ± std of the report's first two metrics. Returns the paths (none when no run kept predictions)."""
    from mfray.results.plots import check_formats, parity_figure, save

    formats = check_formats(formats)
    preds = load_predictions(df, runs_dir, fold)
    if preds.is_empty():
        return []
    summaries = summaries or {}
    first = next(iter(summaries.values()), None)
    order = method_order(first) if first is not None else preds["method"].unique(maintain_order=True).to_list()
    paths = []
    for unit in preds["unit"].unique(maintain_order=True).sort().to_list():
        p = preds.filter(pl.col("unit") == unit)
        notes: dict[str, list[str]] = defaultdict(list)
        for metric, summary in list(summaries.items())[:2]:
            for m, mean, sd, n in summary.filter(pl.col("unit") == unit).select("method", "mean", "std",
                                                                                 "n_seeds").iter_rows():
                if mean is not None:
                    notes[m].append(f"{_metric_title(metric, fold).split(' (')[0]} = {_f(mean, 2)}"
                                    + (f" ± {_f(sd, 2)}" if sd is not None else ""))
        n_seeds = p["split_seed"].n_unique()
        pooled = f"{n_seeds} split seed{'s' if n_seeds > 1 else ''} pooled"
        # one title line: constrained layout makes room for one line of suptitle above panel titles
        fig = parity_figure(p, title=f"{study}: {unit}, {fold} fold ({pooled})",
                            caption="in each panel: the table's mean ± std over split seeds" if notes else "",
                            methods=[m for m in order if m in set(p["method"])] or None,
                            notes={m: "\n".join(v) for m, v in notes.items()})
        paths += [save(fig, Path(plots_dir) / f"{study}__parity_{_slug(unit)}_{fold}.{ext}") for ext in formats]
    return paths
