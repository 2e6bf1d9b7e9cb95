"""``mfray study plan``: the steps a study will run, counted, and (``--estimate``) what they will cost.

The plan needs no Ray and trains nothing. The estimate measures this machine first (:func:`calibrate`,
about a minute, one thread, no Ray): featurisation molecules/s per core on the bundled demo data, and,
through the training loop the study itself uses (:func:`mfray.train.loop.fit`, a few steps each),
training and inference graphs/s of every LF model the plan pretrains (its size, readout, batch size
and precision) and of the HF models its searches fit (the study's model at its batch size; the LF
model's size for strategies that fine-tune it). Step costs follow from the plan's counts:

- featurise: rows / (molecules/s per core x cores);
- pretrain: epochs x (training molecules / (graphs/s x workers) + validation / inference rate);
- searches: trials x epochs x (training graphs / graphs/s + validation graphs / inference rate), trials
  ``max_concurrent_trials`` at a time; refits alike, one per split seed (one for both settings where
  the study fits one), all at once over the cores; baselines from timed fits on the demo task.

Epochs are the spec's ``max_epochs`` (an upper bound: ASHA and early stopping end most fits sooner)
unless ``--epochs-fraction`` says how far fits go on average; the storage's own finished trials give
that fraction once a study has run there (printed). Ray start-up and per-trial overheads are added
as fixed assumed costs (:data:`OVERHEAD_S`, not measured by the estimate).
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mfray.run.study.plan import LFPlan, SearchPlan, StudyPlan, TaskPlan
from mfray.run.study.space import resolved_train
from mfray.transfer import get_strategy

#: the share of max_epochs a search trial ran on average in mfpcba9_transfer (0.46 over 60 trials, ASHA +
#: early stopping): the "typical" total printed beside the upper bound when the storage has no history
TYPICAL_FRACTION = 0.5
#: fixed costs assumed per step (seconds), rough figures read off study logs on a 2-core machine (local Ray
#: ready in 5-12 s; a 2-trial smoke search 14-16 s in all), not measured by the estimate: Ray start, one
#: Tune search's set-up and tear-down, one trial's or refit's actor start and data load, Ray Train start
OVERHEAD_S = {"ray": 10.0, "search": 12.0, "trial": 6.0, "refit": 4.0, "pretrain": 25.0}


@dataclass
class TaskCounts:
    """Molecules of a task (``exact``: from its featurised store's manifest; else counted from the source rows)."""

    rows: int
    molecules: int
    lf: int
    hf: int
    exact: bool


@dataclass
class Rates:
    """Throughputs measured on this machine (one thread, ``device``)."""

    device: str
    featurise: float  # molecules/s per core
    train: dict[str, float] = field(default_factory=dict)  # model key -> training graphs/s (one process)
    infer: dict[str, float] = field(default_factory=dict)  # model key -> inference graphs/s
    baselines: dict[str, float] = field(default_factory=dict)  # baseline -> training molecules/s (its grid, features)
    seconds: float = 0.0
    source: str = ""


@dataclass
class Line:
    kind: str
    n: int
    done: int
    cpu_s: float
    wall_s: float
    detail: str = ""


def task_counts(task: TaskPlan) -> TaskCounts:
    """Rows, molecules, LF- and HF-labelled molecules of ``task``: the store's manifest when it is
    featurised, else counted by reading the source (rows with a value; before de-duplication)."""
    manifest = os.path.join(task.store_path, "manifest.json")
    lf_fid, hf_fid = task.spec.fidelities[0], task.spec.split.fidelity or task.spec.fidelities[-1]
    if os.path.exists(manifest):
        import json

        with open(manifest) as fh:
            c = json.load(fh)["counts"]
        lab = c.get("labelled_molecules", {})

        def at(fid: str) -> int:
            return max((n for k, n in lab.items() if k.split("/")[0] == fid), default=0)

        return TaskCounts(rows=c.get("rows_read", c["molecules"]), molecules=c["molecules"], lf=at(lf_fid),
                          hf=at(hf_fid), exact=True)
    import pyarrow.compute as pc

    from mfray.data.sources import build_source
    from mfray.data.sources.base import label_column

    src = build_source(task.spec)
    cols = {f: [label_column(f, t) for (ff, t) in src.labels() if ff == f] for f in (lf_fid, hf_fid)}
    rows = lf = hf = 0
    for tbl in src.iter_tables(chunk_rows=262144):
        rows += tbl.num_rows

        def labelled(names: list[str]) -> int:
            if not names:
                return 0
            mask = None
            for n in names:
                valid = pc.is_valid(tbl.column(n))
                mask = valid if mask is None else pc.or_(mask, valid)
            return int(pc.sum(mask).as_py() or 0)

        lf += labelled(cols[lf_fid])
        hf += labelled(cols[hf_fid])
    return TaskCounts(rows=rows, molecules=rows, lf=lf, hf=hf, exact=False)


# ------------------------------------------------------------------------------------------ calibration
def _lf_cfg(plan: StudyPlan, lf: LFPlan) -> dict[str, Any]:
    """What the speed of pretraining ``lf`` depends on: its model, per-worker batch, precision, bucketing."""
    p = plan.study.pretrain
    return {"model": {"readout": lf.readout, **lf.config["model"]},
            "batch": max(1, -(-p.batch_size // max(1, p.num_workers))), "precision": p.precision,
            "bucket": p.bucket_by_size}


def _hf_cfg(plan: StudyPlan, lf: LFPlan | None = None) -> dict[str, Any]:
    """What the speed of an HF fit depends on: the study's HF model (or ``lf``'s, fine-tuned) at its batch size."""
    study = plan.study
    train = resolved_train(study)
    if lf is None:
        readouts = study.search.space.get("readout") if isinstance(study.search.space, dict) else None
        readout = (readouts[0] if isinstance(readouts, list) and readouts else None) or "sum_mean_max"
        model = {"readout": readout, **study.model}
    else:
        model = {"readout": lf.readout, **lf.config["model"]}
    return {"model": model, "batch": int(train.get("batch_size", 32)), "precision": train.get("precision", "32"),
            "bucket": False}


def _key(prefix: str, cfg: dict[str, Any]) -> str:
    from mfray.utils.hashing import hash_obj

    return f"{prefix}:{cfg['model']['readout']}:{hash_obj(cfg)[:8]}"


def lf_rate_key(plan: StudyPlan, lf: LFPlan) -> str:
    return _key("lf", _lf_cfg(plan, lf))


def _model_key(plan: StudyPlan, s: SearchPlan) -> str:
    strat = get_strategy(s.strategy) if s.strategy in _strategies() else None
    if strat is not None and strat.lf_init and s.lf:
        return _key("tune", _hf_cfg(plan, next(iter(s.lf.values()))))
    return _key("hf", _hf_cfg(plan))


def _hf_model_keys(plan: StudyPlan) -> dict[str, dict[str, Any]]:
    """The model configurations whose speed the estimate needs: key (by content, so the same models of
    another task or study share a measurement) -> {spec overrides, batch, precision, bucket}."""
    out: dict[str, dict[str, Any]] = {}
    for lf in plan.lf:
        out[lf_rate_key(plan, lf)] = _lf_cfg(plan, lf)
    out[_key("hf", _hf_cfg(plan))] = _hf_cfg(plan)
    for s in plan.searches:
        strat = get_strategy(s.strategy) if s.strategy in _strategies() else None
        if strat is not None and strat.lf_init:
            for lf in s.lf.values():
                cfg = _hf_cfg(plan, lf)
                out.setdefault(_key("tune", cfg), cfg)
    return out


def _strategies() -> set[str]:
    from mfray.transfer import STRATEGIES

    return set(STRATEGIES)


def calibrate(plan: StudyPlan, device: str = "cpu", steps: int = 6, log: Callable[[str], None] = lambda m: None) -> Rates:
    """Measure this machine (see the module docstring); about a minute on 2 CPU cores."""
    import torch

    from mfray.data.catalog import resolve_spec
    from mfray.models import ModelSpec, build_model
    from mfray.run.featurize import featurize_dataset
    from mfray.train.loop import TrainConfig, fit, predict
    from mfray.train.task import _datasets

    t_start = time.perf_counter()
    log("measuring this machine (about a minute, one thread)")
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        demo = resolve_spec("aid1445")
        t0 = time.perf_counter()
        res = featurize_dataset(demo, tmp, executor="local", progress=False, log=lambda m: None)
        feat = res.store.manifest["counts"]["rows_read"] / (time.perf_counter() - t0)
        log(f"featurise: {feat:,.0f} molecules/s per core (demo, {res.store.manifest['counts']['rows_read']} rows)")
        store = res.store
        ids = store.table("molecules")["mol_id"].to_numpy()
        rates = Rates(device=device, featurise=feat, source=f"the bundled demo's {len(ids)} molecules (AID 1445)")
        for key, m in _hf_model_keys(plan).items():
            spec = ModelSpec(**{"n_targets": 1, **m["model"]})
            model = build_model(spec)
            batch = min(m["batch"], len(ids))
            n = min(len(ids), batch * steps)
            y = np.random.default_rng(0).normal(size=(len(ids), 1)).astype(np.float32)
            data = _datasets(store, spec, ids[:n], y[:n], None, None)
            tiny = _datasets(store, spec, ids[:batch], y[:batch], None, None)
            cfg = TrainConfig(lr=1e-4, batch_size=batch, max_epochs=2, patience=0, precision=m["precision"],
                              bucket_by_size=m["bucket"], device=device, max_steps_per_epoch=steps)
            hist = fit(model, data, tiny, cfg).history
            rates.train[key] = hist[-1].graphs_per_s
            t0 = time.perf_counter()
            predict(model, data, batch_size=max(batch, 256), device=device)
            rates.infer[key] = n / (time.perf_counter() - t0)
            log(f"{key}: train {rates.train[key]:,.0f} graphs/s, inference {rates.infer[key]:,.0f} graphs/s "
                f"(batch {batch}, {hist[-1].precision})")
        if plan.study.baselines:
            rates.baselines = _baseline_rates(store, list(plan.study.baselines), plan.study.baseline_grid)
            log("baselines: " + ", ".join(f"{k} {v:,.0f}" for k, v in rates.baselines.items())
                + " training molecules/s (grid search included)")
    rates.seconds = time.perf_counter() - t_start
    return rates


def _baseline_rates(store, names: list[str], grid: str) -> dict[str, float]:
    """Training molecules/s of each baseline (its grid search included) on the demo task's split seed 0."""
    from mfray.baselines.runner import run_baseline
    from mfray.data.tasks import load_task

    task = load_task(store, int(store.manifest["spec"]["split"]["seeds"][0]))
    out = {}
    for name in names:
        t0 = time.perf_counter()
        run_baseline(task, name, grid=grid)
        out[name] = len(task.train.y) / (time.perf_counter() - t0)
    return out


def rates_key(plan: StudyPlan, device: str) -> str:
    """What a measurement depends on: the models measured, the baselines, the device, this machine."""
    import platform

    import torch

    from mfray.utils.hashing import hash_obj

    return hash_obj({"models": sorted(_hf_model_keys(plan)), "baselines": list(plan.study.baselines),
                     "grid": plan.study.baseline_grid, "device": device, "torch": torch.__version__,
                     "host": platform.node(), "cpu": platform.processor(), "cores": os.cpu_count()})


def load_or_calibrate(plan: StudyPlan, device: str = "cpu", remeasure: bool = False,
                      log: Callable[[str], None] = lambda m: None) -> tuple[Rates, str | None]:
    """This machine's rates for ``plan``: from the cache (``$MFRAY_CACHE/rates/<key>.json``) when the same
    models were measured here before, else measured now and cached. Returns (rates, cached file or None)."""
    import json
    from dataclasses import asdict

    from mfray.data.store import default_root

    path = os.path.join(os.path.dirname(str(default_root())), "rates", f"{rates_key(plan, device)}.json")
    if not remeasure and os.path.exists(path):
        try:
            with open(path) as fh:
                return Rates(**json.load(fh)), path
        except (OSError, ValueError, TypeError):
            pass  # unreadable: measure again
    rates = calibrate(plan, device=device, log=log)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as fh:
            json.dump(asdict(rates), fh)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache: the estimate still prints
    return rates, None


# ------------------------------------------------------------------------------------------ estimate
def _fit_seconds(n_train: int, n_valid: int, epochs: float, train_rate: float, infer_rate: float) -> float:
    return epochs * (n_train / train_rate + n_valid / infer_rate)


def _split(task: TaskPlan, n_hf: int) -> tuple[int, int]:
    fr = getattr(task.spec.split, "fractions", None) or (0.8, 0.1, 0.1)
    return int(n_hf * fr[0]), int(n_hf * fr[1])


def estimate(plan: StudyPlan, rates: Rates, cpus: int, counts: dict[str, TaskCounts],
             done: dict[str, set[str]], epochs_fraction: float = 1.0) -> list[Line]:
    """Per step kind: how many, how many done, CPU-seconds and wall seconds on ``cpus`` cores of the
    steps still to do (``done``: keys of finished steps per kind)."""
    study = plan.study
    train = resolved_train(study)
    hf_epochs = float(train.get("max_epochs", 40)) * epochs_fraction
    lines: list[Line] = []

    todo = [t for t in plan.tasks if t.store_key not in done.get("featurise", set())]
    rows = sum(counts[t.id].rows for t in todo)
    cpu = rows / rates.featurise
    lines.append(Line("featurise", len(plan.tasks), len(plan.tasks) - len(todo), cpu, cpu / max(1, cpus),
                      f"{rows:,} rows"))

    p = study.pretrain
    workers = max(1, min(p.num_workers, cpus))
    cpu = wall = 0.0
    mols = 0
    lf_todo = [lf for lf in plan.lf if lf.key not in done.get("pretrain", set())]
    for lf in lf_todo:
        c = counts[_task_of(plan, lf).id]
        n = min(c.lf, p.max_molecules or c.lf)
        n_valid = int(n * p.valid_fraction)
        key = lf_rate_key(plan, lf)
        w = _fit_seconds(n - n_valid, n_valid, p.max_epochs, rates.train[key] * workers, rates.infer[key] * workers)
        wall += w + OVERHEAD_S["pretrain"]
        cpu += (w + OVERHEAD_S["pretrain"]) * workers
        mols += n
    lines.append(Line("pretrain", len(plan.lf), len(plan.lf) - len(lf_todo), cpu, wall,
                      f"{len(lf_todo)} LF model(s) x {p.max_epochs} epoch(s), {mols:,} molecules, {workers} worker(s)"))

    outs = {s.outputs_lf.key: s.outputs_lf for s in plan.searches if s.outputs_lf}
    o_todo = [lf for k, lf in outs.items() if k not in done.get("lf outputs", set())]
    cpu = sum(counts[_task_of(plan, lf).id].hf / rates.infer[lf_rate_key(plan, lf)] + OVERHEAD_S["refit"] for lf in o_todo)
    lines.append(Line("lf outputs", len(outs), len(outs) - len(o_todo), cpu, cpu / max(1, min(cpus, len(o_todo) or 1)),
                      f"{len(o_todo)} LF model(s) x the HF set's molecules"))

    cpu = wall = 0.0
    s_todo = [s for s in plan.searches if s.key not in done.get("search", set())]
    unique = {s.key: s for s in s_todo}
    conc = max(1, min(study.search.max_concurrent_trials, int(cpus // study.resources.cpus_per_trial) or 1))
    for s in unique.values():
        n_train, n_valid = _split(s.task, counts[s.task.id].hf)
        key = _model_key(plan, s)
        trial = _fit_seconds(n_train, n_valid, hf_epochs, rates.train[key], rates.infer[key]) + OVERHEAD_S["trial"]
        cpu += study.search.num_samples * trial
        wall += math.ceil(study.search.num_samples / conc) * trial + OVERHEAD_S["search"]
    lines.append(Line("search", len(plan.searches), len(plan.searches) - len(s_todo), cpu, wall,
                      f"{len(unique)} search(es) x {study.search.num_samples} trial(s), {conc} at a time, "
                      f"<= {hf_epochs:g} epochs"))

    cpu = 0.0
    fits = 0
    fit_keys = {s.key: s for s in plan.searches}
    n_runs = sum(len(s.task.seeds) for s in plan.searches)
    runs_done = len(done.get("runs", set()))
    for s in fit_keys.values():
        n_train, n_valid = _split(s.task, counts[s.task.id].hf)
        key = _model_key(plan, s)
        per = _fit_seconds(n_train, n_valid, hf_epochs, rates.train[key], rates.infer[key]) + OVERHEAD_S["refit"]
        left = max(0, len(s.task.seeds) - len(done.get(f"runs:{s.key}", set())))
        cpu += left * per
        fits += left
    par = max(1, int(cpus // study.resources.cpus_per_trial) or 1)
    lines.append(Line("runs", n_runs, runs_done, cpu, cpu / par,
                      f"{fits} fit(s) for {n_runs} run(s) (one fit serves both settings where the strategy reads no "
                      "measured LF label)"))

    cpu = 0.0
    n_base = sum(len(t.seeds) * len(study.baselines) for t in plan.tasks)
    for t in plan.tasks:
        n_train, _ = _split(t, counts[t.id].hf)
        for b in study.baselines:
            cpu += len(t.seeds) * (n_train / rates.baselines[b] + OVERHEAD_S["refit"])
    lines.append(Line("baselines", n_base, len(done.get("baselines", set())), cpu, cpu / max(1, cpus),
                      ", ".join(study.baselines) or "none"))
    return lines


def _task_of(plan: StudyPlan, lf: LFPlan) -> TaskPlan:
    return next(t for t in plan.tasks if t.store_key == lf.store_key)


def hms(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h {m:02d}m" if h else (f"{m}m {s:02d}s" if m else f"{s}s")


# ------------------------------------------------------------------------------------------ the plan
@dataclass
class StudyOutline:
    """What ``mfray study plan`` prints: per kind the steps, how many are done, and the task counts."""

    plan: StudyPlan
    counts: dict[str, TaskCounts]
    kinds: dict[str, tuple[int, int]]  # kind -> (steps, done)
    done: dict[str, set[str]]
    fits: int  # refits the runs step will train (one serves both settings where it can)
    history: tuple[float, int] | None = None  # (epochs run / max_epochs, trials) of this storage's finished trials

    def render(self, lines: list[Line] | None = None, rates: Rates | None = None, cpus: int = 1,
               typical: list[Line] | None = None) -> str:
        plan, study = self.plan, self.plan.study
        out = [f"study {study.name}: {len(plan.tasks)} task(s), storage {plan.storage}"]
        for ds, why in plan.missing:
            out.append(f"  skipped (no data here): {ds}: {why}")
        for t in plan.tasks:
            c = self.counts[t.id]
            how = "featurised" if c.exact else "counted from the source rows"
            out.append(f"  {t.dataset}: {c.molecules:,} molecules ({how}), LF-labelled {c.lf:,}, HF-labelled {c.hf:,}, "
                       f"split seeds {', '.join(map(str, t.seeds))}")
        p = study.pretrain
        for lf in plan.lf:
            c = self.counts[_task_of(plan, lf).id]
            n = min(c.lf, p.max_molecules or c.lf)
            out.append(f"  LF model {lf.dataset}/{lf.readout} [{lf.key}]: size {p.size}, {n:,} molecules"
                       + (f" (cap max_molecules = {p.max_molecules:,})" if p.max_molecules and c.lf > p.max_molecules else "")
                       + f", {p.max_epochs} epoch(s), batch {p.batch_size}, {p.num_workers} worker(s), precision {p.precision}")
        out.append("")
        if lines is None:
            out.append("| step | steps | done | to do |")
            out.append("|---|---:|---:|---:|")
            for kind, (n, d) in self.kinds.items():
                out.append(f"| {kind} | {n} | {d} | {n - d} |")
            out.append(f"\nruns: {self.fits} fit(s) to train (a strategy that reads no measured LF label is fitted "
                       "once for both settings). `--estimate` measures this machine and prints the cost.")
            return "\n".join(out) + "\n"
        assert rates is not None
        out.append(f"| step | steps | done | CPU-hours to do | wall on {cpus} CPU(s) | what |")
        out.append("|---|---:|---:|---:|---:|---|")
        cpu_total = wall_total = 0.0
        for ln in lines:
            out.append(f"| {ln.kind} | {ln.n} | {ln.done} | {ln.cpu_s / 3600:.2f} | {hms(ln.wall_s)} | {ln.detail} |")
            cpu_total += ln.cpu_s
            wall_total += ln.wall_s
        wall_total += OVERHEAD_S["ray"]
        out.append(f"| total | | | {cpu_total / 3600:.2f} | {hms(wall_total)} | |")
        if typical is not None:
            cpu_t = sum(ln.cpu_s for ln in typical)
            wall_t = sum(ln.wall_s for ln in typical) + OVERHEAD_S["ray"]
            out.append(f"| total, fits at {TYPICAL_FRACTION:g} of max_epochs | | | {cpu_t / 3600:.2f} | {hms(wall_t)} | "
                       "typical: see Epochs below |")
        out.append("")
        out.append(f"Measured here in {rates.seconds:.0f} s ({rates.device}, one thread, on {rates.source}): "
                   f"featurise {rates.featurise:,.0f} molecules/s per core; "
                   + "; ".join(f"{k} train {rates.train[k]:,.0f} / infer {rates.infer[k]:,.0f} graphs/s" for k in rates.train)
                   + ".")
        if self.history:
            frac, n = self.history
            out.append(f"Epochs: {frac:.2f} of max_epochs, the mean of this storage's {n} finished trial(s).")
        else:
            out.append("Epochs: max_epochs for every fit (an upper bound: ASHA and early stopping end most fits "
                       "sooner; --epochs-fraction sets the share)."
                       + (f" The second total assumes {TYPICAL_FRACTION:g} of max_epochs, what the trials of "
                          "mfpcba9_transfer ran on average (0.46 over 60 trials)." if typical is not None else ""))
        out.append("Wall time assumes the cores do nothing else; a cluster's CPU-hours are the same work spread "
                   "over its nodes (wall ~ CPU-hours / CPUs for searches and refits).")
        return "\n".join(out) + "\n"


def outline(plan: StudyPlan) -> StudyOutline:
    """Count the plan's steps and what is done (reads manifests, search records and the results store)."""
    from mfray.results.store import ResultsStore
    from mfray.run.study.runner import task_names
    from mfray.run.study.steps import study_steps

    counts = {t.id: task_counts(t) for t in plan.tasks}
    store = ResultsStore(plan.results.uri)
    steps = study_steps(plan, set(store.run_keys(plan.study.name)), task_names(plan))
    kinds: dict[str, tuple[int, int]] = {}
    done: dict[str, set[str]] = {}
    for st in steps:
        n, d = kinds.get(st.kind, (0, 0))
        kinds[st.kind] = (n + 1, d + int(st.done))
        if st.done:
            done.setdefault(st.kind, set()).add(st.key or st.name)
            if st.kind == "runs" and st.target is not None:
                done.setdefault(f"runs:{st.target[0].key}", set()).add(str(st.target[2]))
    fit_keys: dict[str, SearchPlan] = {s.key: s for s in plan.searches}
    fits = sum(max(0, len(s.task.seeds) - len(done.get(f"runs:{k}", set()))) for k, s in fit_keys.items())
    return StudyOutline(plan, counts, kinds, done, fits, _history(plan))


def _history(plan: StudyPlan) -> tuple[float, int] | None:
    """Mean share of max_epochs that this storage's finished search trials ran (None: none recorded)."""
    max_epochs = float(resolved_train(plan.study).get("max_epochs") or 0)
    if not max_epochs:
        return None
    fr = []
    for s in plan.searches:
        if s.trials.exists():
            for t in s.trials.read_json().get("trials", []):
                if t.get("status") in ("finished", "terminated") and t.get("epochs"):
                    fr.append(min(1.0, t["epochs"] / max_epochs))
    return (float(np.mean(fr)), len(fr)) if fr else None
