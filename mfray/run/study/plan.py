"""The plan of a study: every step, its content key and where its output lives (no Ray, no training).

Storage layout under ``--storage`` (a folder or URI)::

    results/study=<name>/run-<run_key>.parquet   the central results table (one part per finished run)
    lf/<lf_key>/lf.ckpt, outputs.parquet          LF models and their predictions/embeddings per molecule
    search/<search_key>/best.json, trials.json     one search per (task, setting, strategy)
    runs/<run_key>/best.ckpt, config.json         each refit's best-validation model and its resolved config
    runs/<run_key>/predictions.parquet            per-run test/valid/train predictions
    studies/<name>/driver.json, spec.json          who is running the study, the resolved spec
    ray/                                          Ray Tune / Ray Train experiment folders

Keys are content hashes of everything that determines a step's output, so two studies that need
the same LF model or the same search share it, and a re-run finds finished steps by key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mfray.data.catalog import list_specs, resolve_spec
from mfray.data.featurize import extractor_for
from mfray.data.sources import build_source
from mfray.data.specs import DatasetSpec
from mfray.data.store import GraphStore, default_root, store_key
from mfray.results.record import make_run_key
from mfray.run.study.space import candidates, lf_model_config, resolved_train
from mfray.run.study.spec import AUTO, StudySpec, TaskRef
from mfray.transfer import MODEL_OUTPUTS, SETTINGS, LFInput, get_strategy
from mfray.utils.errors import MfrayError, SpecError
from mfray.utils.hashing import hash_obj
from mfray.utils.location import Location


@dataclass
class TaskPlan:
    ref: TaskRef
    spec: DatasetSpec
    store_key: str
    store_path: str
    seeds: list[int]
    #: censored-label policy of the task's HF values (None: they carry no qualifier)
    censored: str | None = None

    @property
    def dataset(self) -> str:
        return self.spec.name

    @property
    def id(self) -> str:
        """Identity within a plan: one dataset store may serve several tasks (QMugs: one per target)."""
        return f"{self.store_path}|{self.ref.targets}"

    @property
    def ident(self) -> dict[str, Any]:
        out = {"store": self.store_key, "dataset": self.spec.name, "targets": self.ref.targets,
               "lf_target": self.ref.lf_target}
        if self.censored is not None:  # only then: tasks without qualifiers keep their keys
            out["censored"] = self.censored
        return out

    @property
    def lf_censored(self) -> str | None:
        """The policy of the LF label values that carry a qualifier (the dataset spec's; rare)."""
        lf_fid = self.spec.fidelities[0]
        return next((p for (f, _), p in self.spec.censored_policies().items() if f == lf_fid), None)

    def store(self) -> GraphStore:
        return GraphStore(self.store_path)


@dataclass
class LFPlan:
    dataset: str
    store_key: str
    store_path: str
    readout: str
    key: str
    config: dict[str, Any]
    location: Location

    @property
    def checkpoint(self) -> Location:
        return self.location.child("lf.ckpt")

    @property
    def outputs(self) -> Location:
        return self.location.child("outputs.parquet")


@dataclass
class SearchPlan:
    task: TaskPlan
    setting: str
    strategy: str
    key: str
    lf: dict[str, LFPlan]  # LF readout -> plan (pretrained strategies: every readout they may start from)
    outputs_lf: LFPlan | None  # the LF model whose outputs feed predicted_label / hybrid / embeddings
    location: Location

    @property
    def label(self) -> str:
        return f"{self.task.dataset} {self.setting} {self.strategy}"

    @property
    def best(self) -> Location:
        return self.location.child("best.json")

    @property
    def trials(self) -> Location:
        return self.location.child("trials.json")


@dataclass
class StudyPlan:
    study: StudySpec
    storage: Location
    tasks: list[TaskPlan]
    missing: list[tuple[str, str]]  # (dataset, reason) of tasks skipped for absent data
    lf: list[LFPlan]
    searches: list[SearchPlan]
    store_root: str
    notes: list[str] = field(default_factory=list)

    @property
    def results(self) -> Location:
        return self.storage.child("results")

    @property
    def ray_storage(self) -> Location:
        return self.storage.child("ray")

    @property
    def study_dir(self) -> Location:
        return self.storage.child("studies", self.study.name)

    def run_dir(self, run_key: str) -> Location:
        return self.storage.child("runs", run_key)

    @property
    def optuna_url(self) -> str | None:
        """The Optuna RDB storage of the searches (``[search] storage``; None: Optuna keeps them in
        memory): a database URL as given, or a SQLite file, relative paths taken in the study's storage
        folder (in the spec file's folder when the storage is not local), so that
        ``optuna-dashboard <optuna_url>`` shows every search."""
        spec = self.study.search.storage
        if not spec:
            return None
        if "://" in spec:
            return spec
        import os
        from pathlib import Path

        base = self.storage.path if self.storage.is_local else Path(self.study.base_dir)
        return f"sqlite:///{Path(spec) if os.path.isabs(spec) else (Path(base) / spec).resolve()}"


def _task_refs(study: StudySpec) -> list[TaskRef]:
    refs = [TaskRef(dataset=t) if isinstance(t, str) else t for t in study.tasks]
    if study.task_tags:
        want = set(study.task_tags)
        for entry in list_specs():
            if entry.spec is not None and want <= set(entry.spec.tags):
                refs.append(TaskRef(dataset=str(entry.path)))
    return refs


def _resolve(ref: TaskRef, base_dir) -> tuple[DatasetSpec | None, str | None]:
    """The first of ``ref.dataset`` and its alternatives whose data is here, or (None, why not)."""
    reasons = []
    for name in [ref.dataset, *ref.alternatives]:
        candidate = base_dir / name if name.endswith(".toml") and not name.startswith("/") else name
        try:
            spec = resolve_spec(str(candidate) if (base_dir / name).exists() else name)
            why = build_source(spec).missing()
        except SpecError as e:
            why = str(e)
            spec = None
        if spec is not None and why is None:
            return spec, None
        reasons.append(why if len([ref.dataset, *ref.alternatives]) == 1 else f"{name}: {why}")
    return None, "; ".join(reasons)


def task_policy(study: StudySpec, ref: TaskRef, spec: DatasetSpec) -> str | None:
    """The censored-label policy of a task: the task's own, else the study's, else its dataset spec's;
    None when none of the task's HF targets carries a qualifier (then a policy means nothing)."""
    if not spec.censored_policies():
        return None
    if ref.censored or study.censored:
        has = {t for (f, t) in spec.censored_policies() if f == spec.split_fidelity and (not ref.targets or t in ref.targets)}
        return (ref.censored or study.censored) if has else None
    return spec.task_policy(ref.targets)


def make_plan(study: StudySpec, storage: str, store_root: str | None = None) -> StudyPlan:
    """Resolve a study into its steps. Reads dataset specs and file headers only; trains nothing."""
    loc = Location(storage)
    root = str(store_root or default_root())
    tasks: list[TaskPlan] = []
    missing: list[tuple[str, str]] = []
    seen: set[tuple] = set()
    for ref in _task_refs(study):
        spec, why = _resolve(ref, study.base_dir)
        if spec is None:
            if study.missing_data == "error":
                raise MfrayError(f"study {study.name}: no data for task {ref.dataset}: {why} "
                                 "(set missing_data = \"skip\" to run on the tasks that have data)")
            label = ref.dataset + (f"[{','.join(ref.targets)}]" if ref.targets else "")
            missing.append((label, why or "absent"))
            continue
        ident = (spec.name, tuple(ref.targets or ()), ref.lf_target)
        if ident in seen:
            continue
        seen.add(ident)
        key = store_key(spec, build_source(spec).fingerprint(), extractor_for(spec).spec())
        seeds = list(spec.split.seeds) if study.split_seeds == "spec" else list(study.split_seeds)
        if study.max_seeds:
            seeds = seeds[: study.max_seeds]
        if not seeds:
            raise MfrayError(f"study {study.name}: dataset {spec.name} has no split seeds")
        if study.search.seed_index >= len(seeds):
            raise MfrayError(f"study {study.name}: search.seed_index {study.search.seed_index} but only "
                             f"{len(seeds)} split seeds")
        tasks.append(TaskPlan(ref=ref if ref.dataset == spec.name else ref.model_copy(update={"dataset": spec.name}),
                              spec=spec, store_key=key, store_path=f"{root}/{spec.name}/{key}", seeds=seeds,
                              censored=task_policy(study, ref, spec)))

    lf_plans: dict[str, LFPlan] = {}

    def lf_for(task: TaskPlan, readout: str, setting: str) -> LFPlan:
        p = study.pretrain
        config = {"store": task.store_key, "readout": readout, "model": lf_model_config(study, readout),
                  "train": {"max_epochs": p.max_epochs, "batch_size": p.batch_size, "lr": p.lr, "seed": p.seed,
                            "precision": p.precision, "bucket_by_size": p.bucket_by_size},
                  "max_molecules": p.max_molecules, "valid_fraction": p.valid_fraction,
                  "num_workers": p.num_workers}
        if setting == "inductive" or p.holdout == "always":
            # the valid and test molecules of every split seed the study uses stand for molecules not
            # screened yet: the LF model must not see them (the store's splits make this an exact set)
            config["holdout"] = {"seeds": list(task.seeds), "folds": ["valid", "test"]}
        if task.lf_censored is not None:
            config["censored"] = task.lf_censored
        key = hash_obj(config)
        if key not in lf_plans:
            lf_plans[key] = LFPlan(dataset=task.dataset, store_key=task.store_key, store_path=task.store_path,
                                   readout=readout, key=key, config=config, location=loc.child("lf", key))
        return lf_plans[key]

    searches: list[SearchPlan] = []
    notes: set[str] = set()
    for task in tasks:
        for setting in study.settings:
            for name in study.searched_strategies():
                pool = [get_strategy(c) for c in candidates(study, setting)] if name == AUTO else [get_strategy(name)]
                if not pool or not pool[0].supports(setting):
                    continue  # e.g. label: measured labels only exist for LF-domain molecules
                lf = ({r: lf_for(task, r, setting) for r in study.lf_readouts(name)}
                      if any(s.lf_init for s in pool) else {})
                outputs_lf = None
                if any(s.needs(setting) & MODEL_OUTPUTS for s in pool):
                    if study.lf_inputs == "pretrained":
                        outputs_lf = lf_for(task, study.pretrain.artifact_readout, setting)
                    elif setting == "inductive":
                        notes.add(f"{task.dataset}: inductive with lf_inputs = \"dataset\": the dataset's LF outputs "
                                  "come from a model that may have seen the valid/test molecules")
                # a strategy that reads no measured LF label and the same inputs in both settings trains the same
                # model in either (given the same LF models, which the keys below name): one search, and one fit
                # per split seed, serve both settings (the runs step records it under each)
                either = name != AUTO and all(LFInput.LABEL not in s.needs(st) and s.needs(st) == s.needs(SETTINGS[0])
                                              for s in pool for st in SETTINGS)
                ident = {
                    "task": task.ident, "setting": "either" if either else setting, "strategy": name,
                    "seed": task.seeds[study.search.seed_index],
                    "search": study.search.model_dump(mode="json", exclude={"storage", "max_concurrent_trials", "checkpoint_every"}),
                    "train": resolved_train(study), "model": study.model, "readout_kwargs": study.readout_kwargs,
                    "lf": sorted(p.key for p in lf.values()), "outputs_lf": outputs_lf.key if outputs_lf else None,
                    "lf_inputs": study.lf_inputs,
                }
                key = hash_obj(ident)
                if either:  # a search this storage ran per setting, before one served both, stays in use
                    legacy = hash_obj({**ident, "setting": setting})
                    if loc.child("search", legacy, "best.json").exists():
                        key = legacy
                searches.append(SearchPlan(task=task, setting=setting, strategy=name, key=key, lf=lf,
                                           outputs_lf=outputs_lf, location=loc.child("search", key)))
    return StudyPlan(study=study, storage=loc, tasks=tasks, missing=missing, lf=list(lf_plans.values()),
                     searches=searches, store_root=root, notes=sorted(notes))


# ---------------------------------------------------------------------------------- run identities
def task_name(task: TaskPlan, targets: list[str]) -> str:
    """The ``task`` column of result rows (what ``Task.name`` gives): ``<dataset>:<fidelity>/<targets>``."""
    fid = task.spec.split.fidelity or task.spec.fidelities[-1]
    return f"{task.dataset}:{fid}/{','.join(targets)}"


def refit_identity(plan: StudyPlan, search: SearchPlan, config: dict[str, Any], seed: int, task: str) -> dict[str, Any]:
    """Identity fields of one refit run (for :func:`make_run_key` and the record)."""
    lf_key = search.lf[config["lf_readout"]].key if config.get("lf_readout") else None
    config_hash = hash_obj({"config": config, "task": search.task.ident, "lf": lf_key,
                            "outputs_lf": search.outputs_lf.key if search.outputs_lf else None,
                            "lf_inputs": plan.study.lf_inputs})
    return {"study": plan.study.name, "task": task, "setting": search.setting, "strategy": search.strategy,
            "readout": config.get("readout") or config.get("lf_readout"), "model": "gnn", "split_seed": int(seed),
            "config_hash": config_hash}


def baseline_identity(plan: StudyPlan, task: TaskPlan, baseline: str, seed: int, task_label: str) -> dict[str, Any]:
    config_hash = hash_obj({"baseline": baseline, "grid": plan.study.baseline_grid, "features": "morgan",
                            "task": task.ident})
    return {"study": plan.study.name, "task": task_label, "setting": "transductive", "strategy": baseline,
            "readout": None, "model": baseline, "split_seed": int(seed), "config_hash": config_hash}


def run_key(identity: dict[str, Any]) -> str:
    return make_run_key(**identity)
