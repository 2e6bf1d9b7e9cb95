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


def apply_preset(args, verb: str, device: str):
    """Resolve ``--preset`` for ``verb`` ("train" or "pretrain") training on ``device`` (auto: ``paper`` on
    GPUs, ``cpu`` otherwise; :mod:`mfray.train.presets`), fill the flags left unset (``--epochs``,
    ``--patience``, pretrain's ``--size``) from it, check them, and say on stderr what the run will do."""
    from mfray.models.spec import LF_PRESETS
    from mfray.train.presets import resolve_preset
    from mfray.utils.errors import MfrayError

    preset, why = resolve_preset(args.preset, device)
    values = preset.hf if verb == "train" else preset.lf
    if args.epochs is None:
        args.epochs = values["max_epochs"]
    if args.patience is None:
        args.patience = values["patience"]
    if args.epochs < 1:
        raise MfrayError(f"--epochs {args.epochs}: give at least 1")
    if args.patience < 0:
        raise MfrayError(f"--patience {args.patience}: give 0 (no early stopping) or more epochs")
    stopping = f"early-stopping patience {args.patience}" if args.patience else "no early stopping"
    what = f"at most {args.epochs} epoch{'s' if args.epochs != 1 else ''}, {stopping}"
    if verb == "pretrain":
        if args.size is None:
            args.size = preset.lf_size
        if args.size not in LF_PRESETS:
            raise MfrayError(f"--size {args.size!r}: expected one of {', '.join(LF_PRESETS)}")
        what = f"LF model size {args.size}, {what}"
    other = "cpu" if preset.name == "paper" else "paper"
    print(f"preset {preset.name} ({why}): {what}; --preset {other} for the "
          + ("paper's protocol" if other == "paper" else "CPU budget") + ", flags override", file=sys.stderr)
    return preset


def add_censored(p) -> None:
    p.add_argument("--censored", choices=("drop", "as_value", "censored"),
                   help="censored-label policy for HF values that carry a qualifier (default: the dataset spec's): "
                   "drop = fitted values only, as_value = bounds as if measured, censored = one-sided targets")


def add_store_root(p) -> None:
    p.add_argument("--store-root", metavar="DIR", help="graph store root (default: $MFRAY_CACHE/graphs)")


class FitProgress:
    """The progress of one fit on stderr: a bar over epochs (losses, learning rate) and a bar over the
    current epoch's optimiser steps (its running training loss), and once, above them, what the loss
    adds up (``loss = HF MSE + VGAE recon + 0.001 KL; valid: the same``; again if it changes, e.g. when
    frozen stages thaw). Pass the object as ``on_epoch`` and its :meth:`on_step` as ``on_step`` of
    :func:`mfray.train.loop.fit` (``train_hf``, ``pretrain_lf``). Without a terminal the bars are off
    and only the loss line is printed."""

    def __init__(self, progress, epochs: int, description: str, fidelity: str) -> None:
        self.progress, self.description, self.fidelity = progress, description, fidelity
        self.epochs = progress.add_task(description, total=epochs, info="")
        self.steps = progress.add_task("  steps", total=None, info="")
        self.objective = ""
        self.epoch = -1

    def __call__(self, log: Any) -> None:
        self.progress.update(self.epochs, advance=1,
                             info=f"train {log.train_loss:.4f} valid {log.valid_loss:.4f} lr {log.lr:.1e}")

    def on_step(self, s: Any) -> None:
        if s.objective != self.objective:
            self.objective = s.objective
            self.progress.console.print(f"{self.description}: loss = {self.fidelity} {s.objective}", markup=False,
                                        highlight=False)
        if s.epoch != self.epoch:
            self.epoch = s.epoch
            self.progress.reset(self.steps, total=s.steps, description=f"  epoch {s.epoch + 1} steps")
        self.progress.update(self.steps, completed=s.step, info=f"loss {s.loss:.4f}")


@contextmanager
def epoch_progress(total: int, description: str, enabled: bool, fidelity: str = "HF"):
    """A :class:`FitProgress` over ``total`` epochs (bars only when ``enabled``), drawn on stderr."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    prog = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                    TimeElapsedColumn(), disable=not enabled, transient=False, console=Console(stderr=True))
    with prog:
        yield FitProgress(prog, total, description, fidelity)


def format_metrics(metrics: dict[str, dict[str, float]]) -> str:
    names = list(next(iter(metrics.values())))
    width = max(10, *(len(n) + 2 for n in names))
    lines = [f"  {'fold':<6}" + "".join(f"{n:>{width}}" for n in names)]
    for fold, m in metrics.items():
        lines.append(f"  {fold:<6}" + "".join(f"{m[n]:>{width}.0f}" if n.startswith("n_") else f"{m[n]:>{width}.4f}"
                                              for n in names))
    return "\n".join(lines)


def at_least(low: float, kind: type = int, below: float | None = None):
    """An argparse ``type`` that parses ``kind`` and refuses values under ``low`` (or at/over ``below``):
    a bad flag value is a usage error naming the flag (exit 2), not a traceback later in training."""
    import argparse

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'a whole number' if kind is int else 'a number'}") from None
        if kind is float and value != value:  # NaN
            raise argparse.ArgumentTypeError(f"{text!r} is not a number")
        if value < low:
            raise argparse.ArgumentTypeError(f"{text}: give at least {low:g}")
        if below is not None and value >= below:
            raise argparse.ArgumentTypeError(f"{text}: give less than {below:,.0f}")
        return value

    return parse


def positive_float(text: str) -> float:
    """An argparse ``type``: a finite number above 0 (a learning rate)."""
    import argparse
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text}: give a number above 0")
    return value


def freeze_stages(text: str) -> str:
    """An argparse ``type``: comma-separated model stages (encoder, readout, head), each known."""
    import argparse

    from mfray.models.model import STAGES

    names = [s.strip() for s in text.split(",") if s.strip()]
    bad = [n for n in names if n not in STAGES]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown stage(s) {', '.join(bad)}; stages are {', '.join(STAGES)}")
    return ",".join(names)


def tell_skipped(store) -> None:
    """Name on stderr every results part a report could not use (the report covers the others)."""
    import sys

    if store.skipped:
        print(f"warning: {len(store.skipped)} results part(s) skipped, the report covers the others:", file=sys.stderr)
        for path, why in store.skipped:
            print(f"  {path}: {why}", file=sys.stderr)
