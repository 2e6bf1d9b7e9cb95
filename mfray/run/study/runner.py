"""``run_study``: the study plan of DESIGN.md on Ray, every step idempotent and keyed by content.

1. featurise every dataset (graph store cache; in this process when small, else Ray Data map_batches)
2. pretrain each LF model the strategies need (Ray Train, DDP; resumes from its last checkpoint)
3. export LF predictions/embeddings for every molecule (Ray task)
4. search each (task, setting, strategy): Tuner(function trainable) + OptunaSearch (seeded TPE,
   define-by-run space) + ASHA fed per epoch; max_concurrent_trials and per-trial resources
5. refit the best configuration on every split seed (Ray tasks), evaluate the best-validation model
6. append one results part per finished run as it finishes (written once, by run key)

Ray starts on the first step with work to do (:class:`_RayOnDemand`): a finished study re-runs without
it. A step whose output exists is skipped, so re-running a finished study trains nothing, and killing
the driver at any point then re-running resumes: an interrupted search is restored from Ray Tune's
experiment state (finished trials are not re-run), an interrupted pretraining continues from its
last checkpoint, and a run whose results part exists is never run again.
"""

from __future__ import annotations

import functools
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Callable

from mfray.data.store import default_root
from mfray.results.record import RunRecord
from mfray.results.store import ResultsStore
from mfray.run.study.lease import DriverLease
from mfray.run.study.plan import LFPlan, SearchPlan, StudyPlan, TaskPlan, run_key
from mfray.run.study.space import resolve_config, suggest
from mfray.run.study.spec import AUTO
from mfray.run.study.steps import Step, study_steps
from mfray.run.study.trial import TrialContext, baseline, export_lf_outputs, hf_trial, refit
from mfray.utils.errors import MfrayError, storage_errors
from mfray.utils.hashing import hash_obj


@dataclass
class StudyOutcome:
    """What a run of the study did: counts per step (``done`` = found finished, ``ran`` = ran now)."""

    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    failures: list[dict[str, Any]] = field(default_factory=list)
    #: work that failed and succeeded when run again (a lost node, a worker crash): step, what, error
    retries: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, step: str, what: str, n: int = 1) -> None:
        self.counts.setdefault(step, {}).setdefault(what, 0)
        self.counts[step][what] += n

    def summary(self) -> str:
        parts = []
        for step, c in self.counts.items():
            parts.append(f"{step}: " + ", ".join(f"{v} {k}" for k, v in c.items()))
        return "; ".join(parts)


class StudyInterrupted(KeyboardInterrupt):
    """The study was asked to stop (Ctrl-C / SIGINT or SIGTERM): what finished is kept, nothing is
    recorded as failed, and running the same command again resumes it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # 130 for SIGINT, 143 for SIGTERM, as a shell reports them


class _StopSignals:
    """SIGINT and SIGTERM while a study runs. The first one stops the study cleanly: during a search Ray Tune
    is told to end it (it saves the experiment state and the trials' checkpoints; the search is not
    recorded, so it resumes), elsewhere :class:`StudyInterrupted` is raised at once (finished runs are
    already in the results store, LF pretraining resumes from its last epoch checkpoint). A second one
    ends the process at once."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self.log = log
        self.received: int | None = None
        self.in_search = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def install(self) -> None:
        """Take SIGINT and SIGTERM back after Ray has started in this process: its core worker installs a
        fatal-signal handler that turns SIGTERM into an abort (signal 6) with a stack dump."""
        if self._old and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, self._handle)

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def _handle(self, signum: int, frame) -> None:
        if self.received is not None:
            self.log(f"{signal.Signals(signum).name} again: stopping at once")
            os._exit(128 + signum)
        self.received = signum
        self.log(f"{signal.Signals(signum).name}: stopping the study cleanly (finished work is kept; run the same "
                 "command again to resume; send it again to stop at once)")
        if self.in_search and hasattr(signal, "SIGUSR1"):
            os.kill(os.getpid(), signal.SIGUSR1)  # Ray Tune's graceful stop: it saves the experiment state
            return
        raise StudyInterrupted(signum)

    def check(self) -> None:
        if self.received is not None:
            raise StudyInterrupted(self.received)


_STOP: _StopSignals | None = None


class _Heartbeat:
    """``studies/<name>/driver.json``: who runs the study, which phase, last sign of life."""

    def __init__(self, plan: StudyPlan, lease: DriverLease, log: Callable[[str], None], every: float = 10.0) -> None:
        self.loc = plan.study_dir.child("driver.json")
        self.lease = lease
        self.log = log
        self.state: dict[str, Any] = {"pid": os.getpid(), "host": socket.gethostname(), "argv": sys.argv,
                                      "started_at": datetime.now(UTC).isoformat(), "phase": "starting",
                                      "state": "running", "token": lease.token}
        self.every = every
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="mfray-heartbeat")

    def _write(self) -> None:
        self.state["updated_at"] = datetime.now(UTC).isoformat()
        try:
            self.loc.write_json(self.state)
        except OSError:
            pass

    def _lost(self) -> bool:
        """Whether another driver has taken the lease (``--force-unlock``, or a race on object storage).
        The first time it is seen, say so and stop this driver cleanly, as SIGTERM does; from then on its
        record is the new holder's, never overwritten."""
        with self._lock:
            if self.state["state"] == "lost lease":
                return True
            if self.lease.still_ours():
                return False
            self.log("another driver has taken this study's lease (mfray study run --force-unlock); stopping")
            self.state["state"] = "lost lease"
        os.kill(os.getpid(), signal.SIGTERM)
        return True

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            if self._lost():
                return
            self._write()

    def __enter__(self) -> _Heartbeat:
        self._write()
        self.lease.confirm()
        self._thread.start()
        return self

    def phase(self, phase: str) -> None:
        self.state["phase"] = phase
        if not self._lost():  # checked at each phase too, not only on the beat
            self._write()

    def finish(self, state: str, **extra: Any) -> None:
        self.state.update(state=state, **extra)

    def __exit__(self, exc_type, exc, tb) -> None:
        self._stop.set()
        if self.state["state"] == "running":
            stopped = exc_type is not None and issubclass(exc_type, (KeyboardInterrupt, SystemExit))
            self.state["state"] = "interrupted" if stopped else "failed"
            if exc is not None:
                self.state["error"] = f"{type(exc).__name__}: {exc}"
        if self.state["state"] != "lost lease":  # the new holder's record is not ours to overwrite
            self._write()
        self.lease.release()


def _context(plan: StudyPlan, task: TaskPlan, search: SearchPlan | None = None) -> TrialContext:
    """What a trial, refit or baseline of ``task`` needs; LF inputs and setting from ``search`` (baselines
    have none: they read the measured LF label, transductively)."""
    return TrialContext(
        study=plan.study, store_path=task.store_path, targets=task.ref.targets, lf_target=task.ref.lf_target,
        setting=search.setting if search else "transductive", strategy=search.strategy if search else "base",
        search_seed=task.seeds[plan.study.search.seed_index],
        lf_checkpoints={r: p.checkpoint.uri for r, p in search.lf.items()} if search else {},
        outputs=search.outputs_lf.outputs.uri if search and search.outputs_lf else None,
        outputs_checkpoint=search.outputs_lf.checkpoint.uri if search and search.outputs_lf else None,
        dataset_spec=_dataset_spec(task), driver_cache=str(default_root()), censored=task.censored)


def _dataset_spec(task: TaskPlan) -> dict[str, Any]:
    """The task's dataset spec as a worker node rebuilds its store from it."""
    return {**task.spec.model_dump(mode="json"), "spec_path": task.spec.spec_path}


def _optuna_storage(plan: StudyPlan):
    """Optuna RDB storage from ``search.storage`` (:attr:`StudyPlan.optuna_url`), or None (in memory)."""
    url = plan.optuna_url
    if not url:
        return None
    import optuna

    if url.startswith("sqlite:///"):  # SQLite does not make the folder of its file
        db = url[len("sqlite:///"):]
        try:
            os.makedirs(os.path.dirname(db) or ".", exist_ok=True)
        except OSError as e:
            raise MfrayError(f"search.storage: cannot make the folder of the Optuna database {db}: {e.strerror}") from None
    return optuna.storages.RDBStorage(url)


def _set_aside(path: str) -> str:
    """Rename a Tune experiment folder that cannot be restored, so the search starts afresh under its name."""
    aside = f"{path}.unreadable-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}"
    if "://" in path:
        import pyarrow.fs as pafs

        fs, p = pafs.FileSystem.from_uri(path)
        fs.move(p, pafs.FileSystem.from_uri(aside)[1])
    else:
        os.replace(path, aside)
    return aside


def check_storage(plan: StudyPlan) -> None:
    """Fail before any work when the study's storage cannot be written, naming the path: a file where
    the folder goes, a read-only folder, no permission (object storage is found out on first write)."""
    if not plan.storage.is_local:
        return
    root = plan.storage.path
    if root.exists() and not root.is_dir():
        raise MfrayError(f"--storage {root}: this is a file; give a folder (it is made when missing)")
    probe = plan.study_dir.path / f".write-test-{os.getpid()}"
    try:
        plan.study_dir.path.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        where = e.filename or plan.study_dir.path
        raise MfrayError(f"--storage {root}: cannot write there ({where}: {e.strerror})") from None


# ------------------------------------------------------------------------------------- steps
def study_steps_of(plan: StudyPlan, kind: str) -> list[Step]:
    """The plan's steps of one kind that need no results-store look-up."""
    return study_steps(plan, kinds=(kind,))


def featurize_step(plan: StudyPlan, outcome: StudyOutcome, log: Callable[[str], None],
                   ray_init: Callable[[], Any] | None = None) -> None:
    """Featurise each task's dataset that has no store yet: in this process below the size threshold
    (:func:`mfray.run.featurize.local_below`, ``$MFRAY_LOCAL_BELOW``), else with Ray Data (``ray_init``
    starts Ray then)."""
    from mfray.run.featurize import featurize_dataset

    for step in study_steps_of(plan, "featurise"):
        task = step.target
        if step.done:
            outcome.add("featurise", "cached")
            continue
        log(f"featurise {task.dataset}")
        res = featurize_dataset(task.spec, plan.store_root, executor="auto", ray_init=ray_init, progress=False,
                                log=lambda m: log(f"  {m}"))
        if res.store.path.as_posix() != task.store_path:
            raise MfrayError(f"{task.dataset}: store built at {res.store.path}, planned {task.store_path} "
                             "(did the data change while the study started?)")
        c = res.store.manifest["counts"]
        log(f"  {c['rows_read']:,} rows: {c['molecules']:,} molecules ({c['rows_merged']:,} rows repeat a stored "
            f"molecule), {c['rows_quarantined']:,} rows quarantined ({res.store.path / 'quarantine.parquet'}); "
            f"{res.seconds:.0f} s")
        outcome.add("featurise", "ran")


def pretrain_step(plan: StudyPlan, outcome: StudyOutcome, log: Callable[[str], None],
                  ray_init: Callable[[], Any]) -> None:
    import tempfile

    from mfray.run.pretrain import pretrain_lf_distributed
    from mfray.train.loop import TrainConfig
    from mfray.train.task import LF_MOLECULES, LFRunConfig

    import ray

    steps = []
    for step in study_steps_of(plan, "pretrain"):
        if step.done:
            outcome.add("pretrain", "cached")
        else:
            steps.append(step)
    if not steps:
        return
    ray_init()
    p = plan.study.pretrain
    task_spec = {t.store_key: t.spec for t in plan.tasks}
    num_workers = p.num_workers
    if not os.environ.get("RAY_ADDRESS"):  # a local Ray cannot grow: do not wait forever for workers
        cpus = ray.cluster_resources().get("CPU", 0)
        if num_workers * p.cpus_per_worker > cpus:
            num_workers = max(1, int(cpus // p.cpus_per_worker))
            log(f"pretrain: this machine has {cpus:g} CPUs for Ray, using {num_workers} Ray Train worker(s) "
                f"instead of {p.num_workers}")
        if p.use_gpu and ray.cluster_resources().get("GPU", 0) < 1:
            raise MfrayError("pretrain.use_gpu = true, but this machine's Ray has no GPU (set use_gpu = false, or "
                             "submit the study to a cluster with `ray job submit`)")
    for step in steps:
        lf = step.target
        # pretrain.batch_size is the global batch (the paper's 512 whatever the worker count); Ray Train
        # workers each take their share, with as many torch threads as CPUs they reserve
        per_worker = max(1, -(-p.batch_size // num_workers))
        cfg = LFRunConfig(readout=lf.readout, model=lf.config["model"],
                          train=TrainConfig(lr=p.lr, batch_size=per_worker, max_epochs=p.max_epochs, patience=0,
                                            seed=p.seed, num_threads=max(1, int(p.cpus_per_worker)),
                                            precision=p.precision, bucket_by_size=p.bucket_by_size,
                                            activation_checkpointing=p.activation_checkpointing),
                          max_molecules=p.max_molecules, valid_fraction=p.valid_fraction,
                          censored=lf.config.get("censored"), holdout_seeds=lf.config.get("holdout", {}).get("seeds"))
        log(f"pretrain LF model {lf.dataset}/{lf.readout} on Ray Train ({num_workers} worker(s), "
            f"{p.max_epochs} epoch(s)) [{lf.key}]")
        with tempfile.TemporaryDirectory() as tmp:
            out = lf.location.path if lf.location.is_local else tmp
            res = pretrain_lf_distributed(
                lf.store_path, cfg, out, storage_path=plan.ray_storage.uri, name=f"lf-{lf.key}",
                num_workers=num_workers, use_gpu=p.use_gpu,
                resources_per_worker={"CPU": p.cpus_per_worker, **({"GPU": 1} if p.use_gpu else {})},
                max_failures=p.max_failures, log=log,
                dataset_spec={**task_spec[lf.store_key].model_dump(mode="json"), "spec_path": task_spec[lf.store_key].spec_path},
                driver_cache=str(default_root()))
            if not lf.location.is_local:
                lf.checkpoint.put(res.checkpoint)
                lf.location.child(LF_MOLECULES).put(res.checkpoint.parent / LF_MOLECULES)
        resumed = f", resumed from epoch {res.resumed_from_epoch}" if res.resumed_from_epoch is not None else ""
        log(f"  {res.epochs_run} epoch(s){resumed}, {res.graphs_per_s:,.0f} graphs/s")
        outcome.add("pretrain", "ran")


def outputs_step(plan: StudyPlan, outcome: StudyOutcome, log: Callable[[str], None],
                 ray_init: Callable[[], Any]) -> None:
    import ray

    todo: list[LFPlan] = []
    for step in study_steps_of(plan, "lf outputs"):
        if step.done:
            outcome.add("lf outputs", "cached")
        else:
            todo.append(step.target)
    if not todo:
        return
    ray_init()
    task = ray.remote(num_cpus=1)(export_lf_outputs)
    specs = {t.store_key: _dataset_spec(t) for t in plan.tasks}
    refs = {task.remote(lf.checkpoint.uri, lf.store_path, lf.outputs.uri, specs[lf.store_key], str(default_root())): lf
            for lf in todo}
    for ref, lf in refs.items():
        n = ray.get(ref)
        log(f"LF outputs {lf.dataset}/{lf.readout}: {n:,} molecules")
        outcome.add("lf outputs", "ran")


def search_step(plan: StudyPlan, search: SearchPlan, outcome: StudyOutcome, log: Callable[[str], None],
                ray_init: Callable[[], Any]) -> None:
    """Run (or resume) one search; write ``trials.json`` and, when a trial finished, ``best.json``."""
    if search.best.exists():
        outcome.add("search", "cached")
        return
    ray_init()
    import optuna

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # one line per search from mfray, not Tune's tables
    # save Tune's experiment state every 2 s (default: at least 10 s): a trial that finished before the
    # last save is not run again after a killed driver
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
    # ... which Tune then warns about on every trial checkpoint: a choice made here, not a user's problem
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    study = plan.study
    previous = search.trials.read_json() if search.trials.exists() else None
    retry = int(previous.get("retry", 0)) + 1 if previous else 0
    name = f"search-{search.key}" + (f"-r{retry}" if retry else "")
    ctx = _context(plan, search.task, search)
    trainable = tune.with_resources(tune.with_parameters(hf_trial, ctx=ctx),
                                    {"cpu": study.resources.cpus_per_trial, "gpu": study.resources.gpus_per_trial})
    path = f"{plan.ray_storage.uri}/{name}"
    max_t = int(study.train.get("max_epochs", 1000))
    run_config = tune.RunConfig(name=name, storage_path=plan.ray_storage.uri, verbose=0,
                                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                                failure_config=tune.FailureConfig(max_failures=study.failure.trial_retries))
    tuner = None
    if tune.Tuner.can_restore(path):
        try:
            tuner = tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=False,
                                       restart_errored=False)
        except Exception as e:  # noqa: BLE001 - a state Tune cannot read: truncated (full disk), foreign, corrupt
            aside = _set_aside(path)
            log(f"search {search.label}: its saved state cannot be read ({type(e).__name__}: "
                f"{str(e)[:200] or 'empty file'}; a full disk or a killed write?): starting the search over "
                f"[{search.key}]; the unreadable state is kept in {aside}")
            outcome.add("search", "restarted")
        else:
            log(f"search {search.label}: resuming an interrupted search [{search.key}]")
            outcome.add("search", "resumed")
    if tuner is None:
        log(f"search {search.label}: {study.search.num_samples} trial(s), at most "
            f"{study.search.max_concurrent_trials} at once [{search.key}]")
        sampler = optuna.samplers.TPESampler(seed=study.search.seed, n_startup_trials=study.search.n_startup_trials)
        # metric/mode go to the searcher and the scheduler themselves: a define-by-run OptunaSearch
        # does not pick them up from TuneConfig
        searcher = OptunaSearch(space=functools.partial(suggest, study=study, strategy=search.strategy,
                                                        setting=search.setting),
                                metric="valid_loss", mode="min", sampler=sampler,
                                storage=_optuna_storage(plan),
                                study_name=f"{study.name}.{search.task.dataset}.{search.setting}.{search.strategy}.{search.key[:8]}")
        scheduler = ASHAScheduler(metric="valid_loss", mode="min", time_attr="training_iteration", max_t=max_t, grace_period=min(study.search.grace_period, max_t),
                                  reduction_factor=study.search.reduction_factor)
        tuner = tune.Tuner(trainable, tune_config=tune.TuneConfig(
            search_alg=searcher, scheduler=scheduler,
            num_samples=study.search.num_samples, max_concurrent_trials=study.search.max_concurrent_trials),
            run_config=run_config)
        outcome.add("search", "ran")
    stop = _STOP
    if stop is not None:
        stop.in_search = True
    try:
        grid = tuner.fit()
    finally:
        if stop is not None:
            stop.in_search = False
    if stop is not None:
        stop.check()  # asked to stop: the search is not recorded (nor failed); it resumes from Tune's state
    # Tune's own count of a trial's failures (a lost node, a crashed worker): the trial's attempt counter
    # lives in its folder, which a retry on another node of a cluster without shared storage does not see
    analysis = getattr(grid, "_experiment_analysis", None)
    tune_failures = {getattr(t, "trial_id", None): int(getattr(t, "num_failures", 0) or 0)
                     for t in (getattr(analysis, "trials", None) or [])}
    trials = []
    for r in grid:
        m = r.metrics or {}
        params = {k: v for k, v in (r.config or {}).items()}
        trials.append({
            "trial_id": m.get("trial_id") or os.path.basename(str(r.path or "")), "params": params,
            "status": "error" if r.error else "finished", "valid_loss": m.get("valid_loss"),
            "epochs": m.get("training_iteration"),
            "attempts": max(int(m.get("attempt", 1) or 1), tune_failures.get(m.get("trial_id"), 0) + 1),
            "t_start": m.get("t_start"), "t_end": m.get("t"),
            "error": None if r.error is None else f"{type(r.error).__name__}: {str(r.error).strip().splitlines()[-1][:500]}",
        })
    ok = [t for t in trials if t["status"] == "finished" and t["valid_loss"] is not None]
    n_err = sum(t["status"] == "error" for t in trials)
    retried = sum((t["attempts"] or 1) > 1 for t in trials)
    search.trials.write_json({"search": search.key, "label": search.label, "experiment": path, "retry": retry,
                              "trials": trials})
    if n_err or retried:
        log(f"  {n_err} trial(s) failed after {study.failure.trial_retries} retr(y/ies); {retried} recovered by a retry")
        for t in trials:
            if t["status"] == "error":
                outcome.failures.append({"step": "trial", "search": search.label, "trial": t["trial_id"], "error": t["error"]})
    if not ok:
        outcome.failures.append({"step": "search", "search": search.label, "error": "no trial finished"})
        log(f"  search {search.label} failed: no trial finished")
        return
    best = min(ok, key=lambda t: t["valid_loss"])
    config = resolve_config(study, search.strategy, best["params"])
    search.best.write_json({"search": search.key, "label": search.label, "trial_id": best["trial_id"],
                            "valid_loss": best["valid_loss"], "params": best["params"], "config": config,
                            "n_trials": len(trials), "n_failed": n_err})
    shown = {k: v for k, v in best["params"].items() if not (k == "strategy" and v == search.strategy)}
    log(f"  best {best['trial_id']}: valid loss {best['valid_loss']:.4f} {_short(shown)}")


def _short(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


@dataclass
class _Job:
    kind: str  # "refit" | "baseline"
    identity: dict[str, Any]
    key: str
    ctx: TrialContext
    params: dict[str, Any]
    seed: int
    trial_id: str | None = None
    attempts: int = 0
    name: str = ""
    #: runs of other settings that are the same fit (a search serving both settings, same config and
    #: seed): trained once, recorded under each
    twins: list[_Job] = field(default_factory=list)


def runs_step(plan: StudyPlan, outcome: StudyOutcome, log: Callable[[str], None], task_names: dict[str, str],
              ray_init: Callable[[], Any], hb: _Heartbeat | None = None) -> None:
    """Refit every best configuration on every split seed, and run the baselines; append as they finish.
    ``ray_init`` starts Ray when there is something to fit (as for the other steps)."""
    import ray

    study = plan.study
    store = ResultsStore(plan.results.uri)
    steps = [s for s in study_steps(plan, set(store.run_keys(study.name)), task_names, ("runs", "baselines"))
             if s.target is not None]
    todo: list[_Job] = []
    fits: dict[str, _Job] = {}
    for step in steps:
        if step.done:
            outcome.add("runs", "cached")
        elif step.kind == "runs":
            search, config, seed, trial_id = step.target
            job = _Job("refit", step.identity, step.key, _context(plan, search.task, search), config, seed, trial_id,
                       name=step.name)
            fit = hash_obj({"search": search.key, "config": config, "seed": seed})
            if fit in fits:
                fits[fit].twins.append(job)
                continue
            fits[fit] = job
            todo.append(job)
        else:
            task, name, seed = step.target
            todo.append(_Job("baseline", step.identity, step.key, _context(plan, task),
                             {"baseline": name, "grid": study.baseline_grid}, seed, name=step.name))
    if not todo:
        return
    ray_init()
    n_runs = len(todo) + sum(len(j.twins) for j in todo)
    shared = n_runs - len(todo)
    log(f"runs: {n_runs} to record, {len(todo)} fit(s)" + (f" ({shared} serve both settings)" if shared else "")
        + f"; {len(steps) - n_runs} already in the results store")
    res = {"num_cpus": study.resources.cpus_per_trial, "num_gpus": study.resources.gpus_per_trial}
    refit_remote = ray.remote(refit).options(**res)
    baseline_remote = ray.remote(baseline).options(num_cpus=1)

    def submit(job: _Job):
        job.attempts += 1
        if job.kind == "refit":
            return refit_remote.remote(job.ctx, job.params, job.seed,
                                       [plan.run_dir(j.key).uri for j in (job, *job.twins)])
        return baseline_remote.remote(job.ctx, job.params["baseline"], job.seed, job.params["grid"])

    pending = {submit(j): j for j in todo}
    done = 0
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        ref = ready[0]
        job = pending.pop(ref)
        try:
            out = ray.get(ref)
        except Exception as e:  # a failed run is retried per the failure policy, then recorded
            msg = f"{type(e).__name__}: {str(e).strip().splitlines()[-1][:500] if str(e).strip() else ''}"
            if job.attempts <= study.failure.trial_retries:
                log(f"  {job.name}: failed ({msg}); retrying")
                outcome.retries.append({"step": job.kind, "run": job.name, "error": msg})
                pending[submit(job)] = job
            else:
                log(f"  {job.name}: failed after {job.attempts} attempt(s): {msg}")
                outcome.failures.append({"step": job.kind, "run": job.name, "error": msg})
                if study.failure.on_error == "stop":
                    raise MfrayError(f"{job.name} failed: {msg}") from None
            continue
        for j in (job, *job.twins):  # a fit that serves both settings is recorded under each
            if j.kind == "refit":
                # the record says what was built and trained: its readout must be the one the run key names
                if out["readout"] != j.identity["readout"]:
                    raise MfrayError(f"internal: {j.name} built readout {out['readout']!r}, its run key says "
                                     f"{j.identity['readout']!r}")
                params = {**j.params, "freeze": out["freeze"], "train": {**j.params["train"], "lr": out["lr"]}}
            else:
                params = {**j.params, "fit_on": out.get("fit_on"), **{f"best_{k}": v for k, v in out["params"].items()}}
            rec = RunRecord(study=study.name, task=out["task"], dataset=out["dataset"], setting=j.identity["setting"],
                            censored=out.get("censored"),
                            strategy=j.identity["strategy"], model=j.identity["model"], split_seed=j.seed,
                            metrics=out["metrics"], params=params, n_train_hf=out["n_train_hf"],
                            readout=j.identity["readout"], config_hash=j.identity["config_hash"],
                            trial_id=j.trial_id, best_epoch=out["best_epoch"], started_at=out["started_at"],
                            finished_at=out["finished_at"])
            if rec.run_key != j.key or rec.task != j.identity["task"]:
                raise MfrayError(f"internal: run key of {j.name} changed between plan and record")
            store.append_run(rec)
            done += 1
            outcome.add("runs", "ran")
            r2 = out["metrics"].get("test", {}).get("r2")
            log(f"  [{done}/{n_runs}] {j.name}: test " + (f"R2 {r2:.3f}" if r2 is not None else
                                                            str(out["metrics"].get("test")))
                + (" (the same fit as the other setting's)" if j is not job else ""))
        if hb:
            hb.state["runs_done"] = done


#: the strategy name of the runs a study's per-task selection records
SELECTED = "selected"


def selection_step(plan: StudyPlan, outcome: StudyOutcome, log: Callable[[str], None], task_names: dict[str, str]) -> None:
    """Per (task, setting): among the methods this plan ran (each per-strategy search's refits and, in
    the transductive setting, the baselines), the one with the best mean validation metric over the
    split seeds is recorded again as strategy ``selected``, one run per seed (its test scores are the
    chosen method's: the choice never looks at test). Skipped for a (task, setting) with fewer than two
    candidates, or until every candidate has all its seeds."""
    import numpy as np

    from mfray.results.report import higher_is_better

    sel = plan.study.selection
    if not sel.enabled:
        return
    store = ResultsStore(plan.results.uri)
    df = store.read(plan.study.name)
    if df.is_empty():
        return
    import polars as pl

    steps = study_steps(plan, set(store.run_keys(plan.study.name)), task_names, ("runs", "baselines"))
    for task in plan.tasks:
        tname = task_names.get(task.id)
        if tname is None:
            continue
        for setting in plan.study.settings:
            cand: dict[str, dict[int, str]] = {}  # method -> seed -> run key
            for step in steps:
                if step.target is None:
                    continue
                if step.kind == "runs":
                    search, _, seed, _ = step.target
                    if search.task.id != task.id or search.setting != setting or search.strategy == AUTO:
                        continue
                    cand.setdefault(search.strategy, {})[seed] = step.key
                elif setting == "transductive" and sel.include_baselines and step.target[0].id == task.id:
                    _, b, seed = step.target
                    cand.setdefault(b, {})[seed] = step.key
            keys = {k for per in cand.values() for k in per.values()}
            rows = df.filter(pl.col("run_key").is_in(list(keys)))
            have = set(rows["run_key"].unique().to_list())
            complete = {m: per for m, per in cand.items() if set(per.values()) <= have}
            if len(complete) < 2:
                continue
            valid = rows.filter((pl.col("fold") == "valid") & (pl.col("metric") == sel.metric))
            scores = {}
            for m, per in complete.items():
                v = valid.filter(pl.col("run_key").is_in(list(per.values())))["value"].to_numpy()
                v = v[np.isfinite(v)]
                if len(v):
                    scores[m] = float(v.mean())
            if len(scores) < 2:
                continue
            best = (max if higher_is_better(sel.metric) else min)(scores, key=scores.get)
            config_hash = hash_obj({"chosen": best, "metric": sel.metric,
                                    "candidates": {m: sorted(per.values()) for m, per in complete.items()}})
            for seed, key in complete[best].items():
                runs = rows.filter(pl.col("run_key") == key)
                first = runs.row(0, named=True)
                # one method in every table, whatever it chose (the choice is in params_selected)
                ident = {"study": plan.study.name, "task": tname, "setting": setting, "strategy": SELECTED,
                         "readout": None, "model": SELECTED, "split_seed": int(seed), "config_hash": config_hash}
                sel_key = run_key(ident)
                if store.has_run(sel_key, plan.study.name):
                    outcome.add("selection", "cached")
                    continue
                metrics: dict[str, dict[str, float]] = {}
                for f, m, v in runs.select("fold", "metric", "value").iter_rows():
                    metrics.setdefault(f, {})[m] = v
                rec = RunRecord(study=plan.study.name, task=tname, dataset=task.dataset, setting=setting,
                                censored=first["censored"], strategy=SELECTED, model=SELECTED,
                                readout=None, split_seed=int(seed), metrics=metrics,
                                params={"selected": best, "selected_run": key, "selection_metric": sel.metric,
                                        "valid_scores": scores},
                                n_train_hf=first["n_train_hf"], config_hash=config_hash, best_epoch=first["best_epoch"],
                                trial_id=first["trial_id"], started_at=first["started_at"], finished_at=first["finished_at"])
                store.append_run(rec)
                outcome.add("selection", "ran")
            log(f"selection {task.dataset} {setting}: {best} (valid {sel.metric} "
                + ", ".join(f"{m} {v:.3f}" for m, v in sorted(scores.items(), key=lambda x: x[1])) + ")")


def task_names(plan: StudyPlan) -> dict[str, str]:
    """Result-row task names per planned task (needs the featurised stores)."""
    import polars as pl

    from mfray.data.store import MANIFEST

    out = {}
    for t in plan.tasks:
        targets = t.ref.targets
        if not targets:
            if not os.path.exists(os.path.join(t.store_path, MANIFEST)):
                continue  # not featurised yet: its runs cannot have happened
            store = t.store()
            fid = t.spec.split.fidelity or t.spec.fidelities[-1]
            targets = store.table("task_labels").filter(pl.col("fidelity") == fid)["target"].unique().sort().to_list()
        from mfray.run.study.plan import task_name

        out[t.id] = task_name(t, targets)
    return out


def _check_local_resources(study) -> None:
    """A local Ray cannot grow: a trial asking for more than it has would wait forever."""
    import ray

    if os.environ.get("RAY_ADDRESS"):
        return  # a cluster may autoscale to fit
    have = ray.cluster_resources()
    r = study.resources
    if r.cpus_per_trial > have.get("CPU", 0) or r.gpus_per_trial > have.get("GPU", 0):
        raise MfrayError(f"[resources] asks {r.cpus_per_trial:g} CPU / {r.gpus_per_trial:g} GPU per trial; this "
                         f"machine's Ray has {have.get('CPU', 0):g} CPU / {have.get('GPU', 0):g} GPU")


class _RayOnDemand:
    """Starts (or connects to) Ray the first time a step has work for it, once: a study with nothing
    left to do, or whose only pending work runs in this process, never starts Ray (10-20 s on a
    laptop). The local Ray serves the dashboard when asked, or when LF models are to be pretrained
    (Ray Train V2 watches its controller through the State API the dashboard serves)."""

    def __init__(self, plan: StudyPlan, log: Callable[[str], None], dashboard: bool = False) -> None:
        self.plan, self.log = plan, log
        self.dashboard = dashboard or any(not s.done for s in study_steps_of(plan, "pretrain"))
        self.started = False

    def __call__(self) -> None:
        if self.started:
            return
        from mfray.run.runtime import ensure_ray

        t = time.perf_counter()
        try:
            url = ensure_ray(log_to_driver=False, dashboard=self.dashboard)
            if _STOP is not None:
                _STOP.install()
        except SystemExit as e:
            # ray.init sets its own SIGTERM handler (sys.exit(15)) until `install` takes it back: a SIGTERM in
            # that window (a process manager, or this driver's heartbeat on losing its lease) goes to the
            # study's own handler, the same clean stop as anywhere else
            if e.code != signal.SIGTERM or _STOP is None:
                raise
            _STOP._handle(signal.SIGTERM, None)  # says so and raises StudyInterrupted (no search runs yet)
            raise
        self.started = True
        self.log(f"Ray ready in {time.perf_counter() - t:.0f} s" + (f"; Ray dashboard: {url}" if url else ""))
        _check_local_resources(self.plan.study)


def run_study(plan: StudyPlan, log: Callable[[str], None] = print, ray_dashboard: bool = False,
              force_unlock: bool = False) -> StudyOutcome:
    """Run every step of ``plan`` that is not done yet (see module docstring). Ray starts on the first
    step that needs it (never, when every step is done); ``ray_dashboard``: its local Ray serves the
    Ray dashboard (:func:`mfray.run.runtime.ensure_ray`). One driver per study and storage: another live
    driver's lease is :class:`~mfray.run.study.lease.StudyLocked` (``force_unlock`` takes a lease
    whose driver is gone without waiting for its heartbeat to go stale)."""
    t0 = time.perf_counter()
    outcome = StudyOutcome()
    study = plan.study
    for ds, why in plan.missing:
        log(f"skipping {ds}: {why}")
    for note in plan.notes:
        log(f"note: {note}")
    if not plan.tasks:
        raise MfrayError(f"study {study.name}: none of its tasks has data here")
    check_storage(plan)
    lease = DriverLease(plan.study_dir, study.name, force=force_unlock)
    lease.acquire(log)
    try:
        plan.study_dir.child("spec.json").write_json(study.model_dump(mode="json"))
    except BaseException:
        lease.release()
        raise
    global _STOP
    # Ray Tune's own SIGINT handler would end a search as "no trial finished" and let the study go on to
    # the next; mfray's decides (it ends the search through Tune's SIGUSR1 handler, which saves its state)
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    with _StopSignals(log) as stop, _Heartbeat(plan, lease, log) as hb, storage_errors(plan.storage.uri):
        _STOP = stop
        try:
            need_ray = _RayOnDemand(plan, log, dashboard=ray_dashboard)
            hb.phase("featurise")
            featurize_step(plan, outcome, log, need_ray)
            names = task_names(plan)
            if plan.lf:
                hb.phase("pretrain")
                pretrain_step(plan, outcome, log, need_ray)
                hb.phase("lf outputs")
                outputs_step(plan, outcome, log, need_ray)
            hb.phase("search")
            for search in (step.target for step in study_steps_of(plan, "search")):
                try:
                    search_step(plan, search, outcome, log, need_ray)
                except MfrayError:
                    raise
                except Exception as e:
                    if study.failure.on_error == "stop" or not need_ray.started:  # Ray itself did not start
                        raise
                    outcome.failures.append({"step": "search", "search": search.label, "error": f"{type(e).__name__}: {e}"})
                    log(f"search {search.label} failed: {type(e).__name__}: {e}")
            hb.phase("runs")
            runs_step(plan, outcome, log, names, need_ray, hb)
            hb.phase("selection")
            selection_step(plan, outcome, log, names)
            outcome.seconds = time.perf_counter() - t0
            hb.finish("finished" if not outcome.failures else "finished with failures",
                      counts=outcome.counts, failures=outcome.failures, retries=outcome.retries, seconds=outcome.seconds)
            plan.study_dir.child("failures.json").write_json(outcome.failures)
        except KeyboardInterrupt as e:
            # raised from the signal handler, it may come out of Ray's C++ code as a plain KeyboardInterrupt
            if stop.received is not None and not isinstance(e, StudyInterrupted):
                raise StudyInterrupted(stop.received) from None
            raise
        finally:
            _STOP = None
    return outcome
