"""Helpers shared by the CLI verbs: open (featurising if needed) a dataset's store, progress bars."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Any


def open_store(name_or_path: str, store_root: str | None, quiet: bool = False):
    """Resolve a dataset spec and return ``(spec, store)``, featurising it in-process if not cached."""
    from mfray.data.catalog import resolve_spec
    from mfray.run.featurize import featurize_dataset

    spec = resolve_spec(name_or_path)
    res = featurize_dataset(spec, store_root, executor="local", progress=False, log=lambda m: None)
    if not res.cache_hit and not quiet:
        c = res.store.manifest["counts"]
        print(f"featurised {spec.name}: {c['molecules']:,} molecules ({c['rows_quarantined']:,} rows quarantined) "
              f"-> {res.store.path}", file=sys.stderr)
    return spec, res.store


def add_censored(p) -> None:
    p.add_argument("--censored", choices=("drop", "as_value", "censored"),
                   help="censored-label policy for HF values that carry a qualifier (default: the dataset spec's): "
                   "drop = fitted values only, as_value = bounds as if measured, censored = one-sided targets")


def add_store_root(p) -> None:
    p.add_argument("--store-root", metavar="DIR", help="graph store root (default: $MFRAY_CACHE/graphs)")


@contextmanager
def epoch_progress(total: int, description: str, enabled: bool):
    """A per-epoch progress bar; yields a callback for ``fit(on_epoch=...)``."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    prog = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                    TimeElapsedColumn(), disable=not enabled, transient=False, console=None)
    with prog:
        task = prog.add_task(description, total=total, info="")

        def on_epoch(log: Any) -> None:
            prog.update(task, advance=1, info=f"train {log.train_loss:.4f} valid {log.valid_loss:.4f} lr {log.lr:.1e}")

        yield on_epoch


def format_metrics(metrics: dict[str, dict[str, float]]) -> str:
    names = list(next(iter(metrics.values())))
    width = max(10, *(len(n) + 2 for n in names))
    lines = [f"  {'fold':<6}" + "".join(f"{n:>{width}}" for n in names)]
    for fold, m in metrics.items():
        lines.append(f"  {fold:<6}" + "".join(f"{m[n]:>{width}.0f}" if n.startswith("n_") else f"{m[n]:>{width}.4f}"
                                              for n in names))
    return "\n".join(lines)
