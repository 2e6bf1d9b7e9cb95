"""``mfray study run|status|plan|trials|export STUDY.toml``: run a study on Ray (local or cluster), show its progress, list its trials."""

from __future__ import annotations

import argparse
import os
import sys
import time

DEFAULT_STORAGE = "mfray_results"


def add_parser(sub) -> None:
    p = sub.add_parser("study", help="run a study (tasks x strategies x search x seeds) on Ray, or show its status",
                       description="A study featurises its datasets, pretrains the LF models its strategies need "
                       "(Ray Train), searches each (task, setting, strategy) with Ray Tune + Optuna + ASHA, refits "
                       "the best configuration on every split seed and appends one row set per run to the results "
                       "store. Every step is keyed by content: re-running skips what is done, and a killed run "
                       "resumes where it stopped.")
    ss = p.add_subparsers(dest="study_verb", metavar="ACTION")
    ss.required = True
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("study", metavar="STUDY.toml", help="study spec (see studies/)")
    common.add_argument("--storage", metavar="PATH_OR_URI", default=None,
                        help=f"where results, LF models, searches and Ray experiments go (default ./{DEFAULT_STORAGE}; "
                        "a shared path or s3://... URI on a cluster)")
    common.add_argument("--smoke", action="store_true",
                        help="a minutes-long version (2 seeds, 2 trials, 3 epochs, small models) recorded as study <name>-smoke")
    common.add_argument("--store-root", metavar="DIR", help="graph store root (default: $MFRAY_CACHE/graphs)")
    common.add_argument("--censored", choices=("drop", "as_value", "censored"),
                        help="censored-label policy for every task whose HF values carry a qualifier (overrides the "
                        "study's censored key and the dataset specs): drop = fitted values only, as_value = bounds as "
                        "if measured, censored = bounds as one-sided targets")
    common.add_argument("--tasks", metavar="NAME[,NAME]",
                        help="only these of the study's tasks (their dataset names), e.g. one sitting of a long study: "
                        "results go to the same study, and a later run with other tasks (or none) adds to them")
    r = ss.add_parser("run", parents=[common], help="run (or resume) a study and print its report")
    r.add_argument("--format", dest="fmt", choices=("md", "latex", "csv"), default="md", help="report format")
    r.add_argument("--no-report", action="store_true", help="do not print the report at the end")
    r.add_argument("--plots", metavar="DIR", help="also write the report's PNG figures into DIR")
    r.add_argument("--ray-dashboard", action="store_true",
                   help="the local Ray serves the Ray dashboard (http://127.0.0.1:8265, or the next free port; printed "
                   "when Ray starts) while the study runs: jobs, actors, per-worker CPU and memory, logs "
                   "(also: MFRAY_RAY_DASHBOARD=1)")
    r.add_argument("--force-unlock", action="store_true",
                   help="take over the study's lease from a driver that is gone (another machine, killed) without "
                   "waiting for its heartbeat to go stale; a second live driver is refused without it")
    r.set_defaults(func=run)
    e = ss.add_parser("export", parents=[common], help="a study's models of one task and strategy as a folder mfray predict uses",
                      description="Write the refits of one (task, setting, strategy) of a finished study, one per split "
                      "seed, with the LF model they read, the resolved config and the study's test metrics, into a model "
                      "folder: `mfray predict DIR INPUT` scores new molecules with them as an ensemble (mean, and std "
                      "across members as an uncertainty).")
    e.add_argument("--task", required=True, metavar="NAME", help="the task (its dataset name, or the task name of the report)")
    pick = e.add_mutually_exclusive_group(required=True)
    pick.add_argument("--strategy", metavar="NAME", help="the strategy whose refits to export")
    pick.add_argument("--best", action="store_true", help="the strategy the study's selection chose for the task "
                      "(best mean validation score over the split seeds)")
    e.add_argument("--setting", choices=("transductive", "inductive"),
                   help="which setting's models (needed when the study ran both)")
    e.add_argument("--out", required=True, metavar="DIR", help="the model folder to write")
    e.set_defaults(func=export)
    s = ss.add_parser("status", parents=[common], help="what is done, running, failed, pending")
    s.add_argument("-v", "--verbose", action="store_true", help="list every step, not only the unfinished ones")
    s.set_defaults(func=status)
    pl_ = ss.add_parser("plan", parents=[common], help="the steps a study will run, counted; --estimate: what they cost here",
                        description="Print what `mfray study run` would do: per task its molecules, the LF models it "
                        "pretrains, and per step kind (featurise, pretrain, lf outputs, search, runs, baselines) how many "
                        "steps there are and how many are done in --storage. Starts no Ray and trains nothing. With "
                        "--estimate it first measures this machine (about a minute: featurisation and the training "
                        "speed of the plan's LF and HF models, one thread) and prints the CPU-hours and wall time of "
                        "the steps still to do.")
    pl_.add_argument("--estimate", action="store_true", help="measure this machine and estimate CPU-hours and wall time")
    pl_.add_argument("--cpus", type=_positive_int, metavar="N",
                     help="CPUs to spread the work over for the wall time (default: this machine's)")
    pl_.add_argument("--epochs-fraction", type=_fraction, metavar="F",
                     help="share of max_epochs an HF fit runs on average (default: from this storage's finished trials, "
                     "else 1: an upper bound)")
    pl_.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="device to measure (default cpu)")
    pl_.add_argument("--remeasure", action="store_true", help="measure again instead of reusing this machine's "
                     "cached measurement of the same models ($MFRAY_CACHE/rates/)")
    pl_.set_defaults(func=plan_cmd)
    t = ss.add_parser("trials", parents=[common], help="every search trial: parameters, state, attempts, valid loss",
                      description="Print the trials of each search of the study (what Ray Tune and Optuna tried: the "
                      "parameters, state, attempts, epochs and best validation loss of each trial; * marks the one "
                      "the search chose), read from the study's storage: the search records of finished searches, "
                      "Ray Tune's trial records of running or interrupted ones. Starts no Ray.")
    t.add_argument("--out", metavar="FILE", help="also write the table, one row per trial and a param_<name> column "
                   "per searched parameter, to FILE (.csv or .parquet)")
    t.set_defaults(func=trials)


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give 1 or more")
    return v


def _fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < v <= 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a share in (0, 1]")
    return v


def _plan(args: argparse.Namespace):
    from mfray.run.study import load_study, make_plan

    study = load_study(args.study)
    if args.censored:
        study = study.model_copy(update={"censored": args.censored})
    if args.tasks:
        study = _only_tasks(study, args.tasks, args.study)
    if args.smoke:
        study = study.smoke()
    storage = args.storage or os.environ.get("MFRAY_STUDY_STORAGE") or DEFAULT_STORAGE
    return make_plan(study, storage, store_root=args.store_root)


def _only_tasks(study, names: str, path: str):
    """The study restricted to the tasks named in ``names`` (a task's dataset or one of its alternatives)."""
    from mfray.utils.errors import MfrayError

    wanted = [n.strip() for n in names.split(",") if n.strip()]

    def names_of(t) -> list[str]:
        return [t] if isinstance(t, str) else [t.dataset, *t.alternatives]

    known = [n for t in study.tasks for n in names_of(t)]
    unknown = [n for n in wanted if n not in known]
    if not wanted or unknown:
        raise MfrayError(f"--tasks {names!r}: {', '.join(unknown) or 'no name'} not a task of {path}; its tasks: "
                         + ", ".join(names_of(t)[0] for t in study.tasks))
    return study.model_copy(update={"tasks": [t for t in study.tasks if set(names_of(t)) & set(wanted)]})


def run(args: argparse.Namespace) -> int:
    from mfray.results.report import make_report
    from mfray.results.store import ResultsStore
    from mfray.run.study.runner import run_study

    t0 = time.perf_counter()
    plan = _plan(args)
    print(f"study {plan.study.name}: {len(plan.tasks)} task(s), {len(plan.searches)} search(es), "
          f"{len(plan.lf)} LF model(s); storage {plan.storage}", file=sys.stderr)

    def log(msg: str) -> None:
        m, sec = divmod(int(time.perf_counter() - t0), 60)
        print(f"[{m:02d}:{sec:02d}] {msg}", file=sys.stderr, flush=True)

    from mfray.run.study.runner import StudyInterrupted

    try:
        outcome = run_study(plan, log=log, ray_dashboard=args.ray_dashboard, force_unlock=args.force_unlock)
    except StudyInterrupted as e:
        print(f"study {plan.study.name} stopped by {e} after {time.perf_counter() - t0:.0f} s: finished work is kept "
              f"and nothing was marked failed; resume with the same command", file=sys.stderr)
        return e.exit_code
    print(f"study {plan.study.name} done in {time.perf_counter() - t0:.0f} s: {outcome.summary()}", file=sys.stderr)
    if outcome.failures:
        print(f"{len(outcome.failures)} failure(s) (also in {plan.study_dir.child('failures.json')}):", file=sys.stderr)
        for f in outcome.failures:
            print(f"  {f['step']} {f.get('search') or f.get('run')}: {f['error']}", file=sys.stderr)
    store = ResultsStore(plan.results.uri)
    if not args.no_report and plan.study.name in store.studies():
        from mfray.cli.common import tell_skipped

        try:
            sys.stdout.write(make_report(store, study=plan.study.name, fmt=args.fmt, plots_dir=args.plots))
        finally:
            tell_skipped(store)
        print(f"results: {plan.results}  (mfray report {plan.storage} --study {plan.study.name})", file=sys.stderr)
    return 1 if any(f["step"] == "search" for f in outcome.failures) else 0


def status(args: argparse.Namespace) -> int:
    from mfray.run.study.status import study_status

    plan = _plan(args)
    sys.stdout.write(study_status(plan).render(verbose=args.verbose))
    return 0


def plan_cmd(args: argparse.Namespace) -> int:
    from mfray.run.study.estimate import estimate, load_or_calibrate, outline
    from mfray.utils.errors import MfrayError

    plan = _plan(args)
    out = outline(plan)
    if not args.estimate:
        sys.stdout.write(out.render())
        return 0
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise MfrayError("--device cuda: this machine's torch sees no CUDA GPU")
    cpus = args.cpus or os.cpu_count() or 1
    rates, cached = load_or_calibrate(plan, args.device, args.remeasure,
                                      log=lambda m: print(f"  {m}", file=sys.stderr, flush=True))
    if cached:
        print(f"rates measured here before: {cached} (--remeasure to measure again)", file=sys.stderr)
    frac = args.epochs_fraction or (out.history[0] if out.history else 1.0)
    if args.epochs_fraction:
        out.history = None
    from mfray.run.study.estimate import TYPICAL_FRACTION

    lines = estimate(plan, rates, cpus, out.counts, out.done, epochs_fraction=frac)
    typical = (estimate(plan, rates, cpus, out.counts, out.done, epochs_fraction=TYPICAL_FRACTION)
               if frac == 1.0 and not args.epochs_fraction else None)
    sys.stdout.write(out.render(lines, rates, cpus, typical))
    return 0


def trials(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mfray.run.study.status import driver_live, read_driver
    from mfray.run.study.trials import render, trials_table
    from mfray.utils.errors import MfrayError

    out = Path(args.out) if args.out else None
    if out is not None and out.suffix.lower() not in (".csv", ".parquet"):
        raise MfrayError(f"--out {args.out}: give a file ending in .csv or .parquet")
    plan = _plan(args)
    live = driver_live(read_driver(plan))
    sys.stdout.write(render(plan, live))
    if out is not None:
        table = trials_table(plan, live)
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix.lower() == ".csv":
            table.write_csv(out)
        else:
            table.write_parquet(out)
        print(f"wrote {table.height} trial(s) to {out}", file=sys.stderr)
    if plan.optuna_url:
        print(f"Optuna's record of these searches: optuna-dashboard {plan.optuna_url}", file=sys.stderr)
    return 0


def export(args: argparse.Namespace) -> int:
    from mfray.run.study.export import export_model

    plan = _plan(args)
    res = export_model(plan, args.task, args.out, strategy=args.strategy, best=args.best, setting=args.setting)
    if res.chosen_by:
        print(res.chosen_by, file=sys.stderr)
    seeds = ", ".join(str(m["split_seed"]) for m in res.members)
    r2 = [m["test_metrics"].get("r2") for m in res.members]
    shown = ", ".join(f"{x:.3f}" for x in r2 if x is not None)
    print(f"exported {res.strategy} ({res.setting}) on {res.task}: {len(res.members)} model(s), split seeds {seeds}"
          + (f" (test R2 {shown})" if shown else "") + (f", with LF model {res.lf_checkpoint}" if res.lf_checkpoint else "")
          + f" -> {res.out}")
    print(f"score new molecules: mfray predict {res.out} molecules.csv --out predictions.csv")
    return 0
