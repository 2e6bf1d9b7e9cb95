"""The ``mfray`` command line: thin verbs over specs; parameters live in spec files.

Errors in inputs (:class:`mfray.utils.errors.MfrayError`) print one clear message and exit 2;
nothing else is caught, so a real bug still shows its traceback.
"""

from __future__ import annotations

import argparse
import os
import sys

from mfray import __version__


def _threads() -> None:
    # one torch/BLAS thread per process unless the user says otherwise: on small shared machines
    # OpenMP spin-waiting collapses throughput when a core stalls
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def build_parser() -> argparse.ArgumentParser:
    from mfray.cli import baseline as baseline_cmd
    from mfray.cli import data as data_cmd
    from mfray.cli import featurize as featurize_cmd
    from mfray.cli import predict as predict_cmd
    from mfray.cli import report as report_cmd
    from mfray.cli import study as study_cmd
    from mfray.cli import train as train_cmd

    parser = argparse.ArgumentParser(
        prog="mfray",
        description="Multi-fidelity transfer learning on molecules with graph neural networks, on Ray.",
    )
    parser.add_argument("--version", action="version", version=f"mfray {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True
    featurize_cmd.add_parser(sub)
    data_cmd.add_parser(sub)
    train_cmd.add_parser(sub)
    predict_cmd.add_parser(sub)
    baseline_cmd.add_parser(sub)
    report_cmd.add_parser(sub)
    study_cmd.add_parser(sub)
    return parser


def _replayed(parser: argparse.ArgumentParser, argv: list[str] | None, config: str) -> argparse.Namespace:
    """``mfray train --config FILE``: parse again with the file's values as the train flags' defaults, so a
    flag given on the command line wins; the file's other settings ride along as ``args.replay``."""
    from mfray.cli.replay import load_replay
    from mfray.cli.train import PARSERS

    replay = load_replay(config)
    PARSERS["train"].set_defaults(**replay.flag_defaults())
    args = parser.parse_args(argv)
    args.replay = replay
    return args


def main(argv: list[str] | None = None) -> int:
    _threads()
    parser = build_parser()
    args = parser.parse_args(argv)
    from pydantic import ValidationError

    from mfray.utils.errors import MfrayError

    try:
        if getattr(args, "config", None) and args.verb == "train":
            args = _replayed(parser, argv, args.config)
        return int(args.func(args) or 0)
    except MfrayError as e:
        print(f"mfray {args.verb}: error: {e}", file=sys.stderr)
        return 2
    except ValidationError as e:  # settings from flags that a spec model refuses (e.g. --hidden-dim 0)
        print(f"mfray {args.verb}: error: invalid settings: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mfray {args.verb}: interrupted", file=sys.stderr)
        return 130
    except OSError as e:
        from mfray.utils.errors import storage_error

        err = storage_error(e)
        if err is None:
            raise
        print(f"mfray {args.verb}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
