"""Study specs: which tasks x settings x strategies x search space x split seeds x budget.

A study spec is a TOML file validated into frozen pydantic models (unknown keys and wrong types are
errors naming the file, the key and the allowed values). Example (``studies/demo.toml`` is the
runnable version)::

    name = "demo"
    tasks = ["aid1445"]                       # dataset spec names or paths (see `mfray data list`)
    strategies = ["base", "label", "embeddings", "tune_readout"]
    baselines = ["lf_linear"]
    split_seeds = "spec"                      # the dataset spec's seeds, or a list [0, 1, 2]
    censored = "censored"                     # policy for bounds (qualified HF values): drop | as_value | censored

    [train]                                   # HF optimisation (TrainConfig fields)
    max_epochs = 40
    patience = 10

    [pretrain]                                # LF models (Ray Train)
    max_epochs = 3
    num_workers = 2

    [search]
    num_samples = 6
    max_concurrent_trials = 2

    [search.space]
    readout = ["sum", "sum_mean_max", "set_transformer"]   # or "all": every registered readout
    lr = { low = 1e-4, high = 3e-3, log = true }
    hidden_dim = [64, 128]
    freeze = ["encoder", "none"]              # pretrained strategies only (conditional)

The search space is expressed as an Optuna define-by-run function (:func:`mfray.run.study.space.suggest`):
``freeze`` and ``unfreeze_epoch`` exist only for strategies that start from an LF model, ``readout``
only for strategies that do not (those keep the readout of their LF model; ``pretrain.readouts``
lists the LF readouts a pretrained strategy may choose from), and ``unfreeze_epoch`` only when
something is frozen.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mfray.data.specs import CensoredPolicy, format_validation_error
from mfray.transfer.strategies import FREEZE_CHOICES
from mfray.utils.errors import SpecError
from mfray.utils.hashing import hash_obj
from mfray.utils.io import read_toml_file

#: TrainConfig fields a study may set or search
TRAIN_KEYS = ("lr", "batch_size", "max_epochs", "patience", "lr_factor", "lr_patience", "weight_decay",
              "task_weight", "recon_weight", "kl_weight", "num_threads", "device", "monitor", "scale_aux", "negatives")
#: ModelSpec fields a study may set or search
MODEL_KEYS = ("encoder", "hidden_dim", "num_layers", "vgae", "latent_dim", "head_hidden_dim", "encoder_kwargs",
              "head_kwargs")
SPECIAL_KEYS = ("readout", "freeze", "unfreeze_epoch")
#: the strategy name of a search whose space includes the strategy itself (``search.space.strategy``)
AUTO = "auto"
SEARCHABLE = ("strategy", "lr", "batch_size", "weight_decay", "kl_weight", "hidden_dim", "num_layers", "latent_dim",
              "head_hidden_dim", "encoder", *SPECIAL_KEYS)


def _typed(adapter: Any, overrides: dict[str, Any], section: str) -> None:
    """Validate ``overrides`` against the types of the config they override (a TrainConfig or ModelSpec);
    the error names ``section.key`` and what was expected."""
    from pydantic import ValidationError

    try:
        adapter.validate_python(overrides)
    except ValidationError as e:
        first = e.errors()[0]
        key = ".".join(str(x) for x in first["loc"])
        if not key:  # the config's own check (its __post_init__) names the key: "batch_size = 0: ..."
            raise ValueError(f"{section}.{first['msg'].removeprefix('Value error, ')}") from None
        raise ValueError(f"{section}.{key} = {first.get('input')!r}: {first['msg']}") from None


def _registered(names: list[str], registry: Any, what: str) -> list[str]:
    for n in names:
        if n not in registry:
            raise ValueError(f"unknown {what} {n!r}; registered: {', '.join(registry.names())}")
    return names


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Range(_Spec):
    """A numeric range: ``{ low = 1e-4, high = 1e-2, log = true }``; ints when both ends are ints."""

    low: float
    high: float
    log: bool = False
    step: float | None = None

    @model_validator(mode="after")
    def _check(self) -> Range:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self

    @property
    def is_int(self) -> bool:
        return float(self.low).is_integer() and float(self.high).is_integer() and (
            self.step is None or float(self.step).is_integer())


Param = list[Any] | Range


class SearchSpec(_Spec):
    num_samples: int = Field(default=8, ge=1)
    max_concurrent_trials: int = Field(default=2, ge=1)
    seed: int = 0  # TPE sampler seed (the search is reproducible given the same trial completion order)
    n_startup_trials: int = Field(default=4, ge=1)  # random trials before TPE models the space
    metric: Literal["valid_loss"] = "valid_loss"
    grace_period: int = Field(default=5, ge=1)  # ASHA: epochs before a trial may be stopped
    reduction_factor: float = Field(default=2.0, gt=1)
    seed_index: int = Field(default=0, ge=0)  # which of the split seeds the search runs on
    storage: str | None = None  # Optuna RDB storage: a SQLite path or a database URL (optuna-dashboard)
    #: a running trial hands its fit state to Ray Tune every this many epochs (0: never); after a killed
    #: driver it continues from there instead of epoch 0. It does not change what a search finds.
    checkpoint_every: int = Field(default=5, ge=0)
    space: dict[str, Param] = Field(default_factory=dict)

    @field_validator("space")
    @classmethod
    def _known(cls, v: dict[str, Any]) -> dict[str, Any]:
        for k, p in v.items():
            if k not in SEARCHABLE:
                raise ValueError(f"unknown search parameter {k!r}; searchable: {', '.join(SEARCHABLE)}")
            if isinstance(p, list) and not p:
                raise ValueError(f"search parameter {k!r} has no choices")
        if "strategy" in v and not isinstance(v["strategy"], list):
            raise ValueError("search.space.strategy must be a list of strategy names")
        if "freeze" in v:
            choices = v["freeze"]
            if not isinstance(choices, list) or any(c not in FREEZE_CHOICES for c in choices):
                raise ValueError(f"freeze choices must be a list of {list(FREEZE_CHOICES)}, got {choices!r}")
        return v


class PretrainSpec(_Spec):
    """LF models: one per (dataset, LF readout) the strategies need; trained with Ray Train."""

    max_epochs: int = Field(default=10, ge=1)
    batch_size: int = Field(default=512, ge=2)  # global: split over the workers
    lr: float = Field(default=5e-5, gt=0)
    max_molecules: int | None = Field(default=None, ge=10)
    valid_fraction: float = Field(default=0.05, gt=0, lt=0.5)
    num_workers: int = Field(default=1, ge=1)  # Ray Train ScalingConfig
    use_gpu: bool = False
    cpus_per_worker: float = Field(default=1, gt=0)  # also the worker's torch threads
    max_failures: int = Field(default=1, ge=-1)  # worker failures Ray Train recovers from (from the last checkpoint)
    #: which LF models leave out the valid/test molecules of the study's split seeds: "inductive" (only
    #: the inductive setting's; the transductive setting gets a model of every LF molecule, as in the
    #: paper) or "always" (one held-out LF model per dataset and readout serves both settings: half the
    #: pretraining, and a transductive LF model that never saw the test molecules)
    holdout: Literal["inductive", "always"] = "inductive"
    #: the LF model: "study" (the study's [model] encoder and [readout_kwargs]), "paper" (the paper's:
    #: GCN VGAE 3 x 256, 50-d latents, Set Transformer 1024 wide, 16 heads, 32 seeds: ~14 M parameters)
    #: or "cpu" (the paper's encoder with a Set Transformer 256 wide, 8 heads, 8 seeds: ~1.2 M, for laptops)
    size: Literal["study", "paper", "cpu"] = "study"
    #: forward passes in bf16 autocast ("auto": where the CPU or GPU has fast bf16), size-bucketed batches,
    #: activation checkpointing of the readout (mfray.train.loop.TrainConfig)
    precision: Literal["32", "bf16-mixed", "auto"] = "auto"
    bucket_by_size: bool = True
    activation_checkpointing: bool = False
    #: LF readout(s) each pretrained strategy may start from (searched when more than one)
    #: (default: each strategy's own ``default_readout``)
    readouts: dict[str, list[str]] = Field(default_factory=dict)
    #: the LF model whose predictions/embeddings feed predicted_label, hybrid_label and embeddings
    artifact_readout: str = "set_transformer"
    seed: int = 0


class ResourcesSpec(_Spec):
    cpus_per_trial: float = Field(default=1, gt=0)
    gpus_per_trial: float = Field(default=0, ge=0)


class FailureSpec(_Spec):
    trial_retries: int = Field(default=1, ge=0)  # a trial that raises is retried this many times
    #: what a step that still fails does: "continue" records it and goes on; "stop" ends the study
    on_error: Literal["continue", "stop"] = "continue"


class SelectionSpec(_Spec):
    """Choosing the strategy per task: once every per-strategy search (and baseline) has refitted on all
    split seeds, the method with the best mean validation ``metric`` is recorded again as strategy
    ``selected`` (test scores untouched by the choice), beside the methods it chose among."""

    enabled: bool = True
    #: a metric every candidate records on the valid fold (rmse, mae: lower is better; r2, ...: higher)
    metric: str = "rmse"
    include_baselines: bool = True


class TaskRef(_Spec):
    """One task: a dataset (spec name or path), optionally its HF target(s) and LF input target.

    ``alternatives``: other specs of the same task, tried in order when ``dataset``'s data is absent
    (e.g. a local copy first, the PubChem download second).
    """

    dataset: str
    alternatives: list[str] = Field(default_factory=list)
    targets: list[str] | None = None
    lf_target: str | None = None
    #: this task's censored-label policy (overrides the study's and the dataset spec's)
    censored: CensoredPolicy | None = None


class StudySpec(_Spec):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    description: str = ""
    tasks: list[str | TaskRef] = Field(default_factory=list)
    task_tags: list[str] = Field(default_factory=list)  # add every data spec carrying all these tags
    missing_data: Literal["error", "skip"] = "error"  # a task whose data files are absent
    #: censored-label policy for every task whose HF values carry a qualifier (None: each dataset spec's
    #: own): "drop" (fitted values only), "as_value" (bounds as if measured), "censored" (one-sided loss)
    censored: CensoredPolicy | None = None
    settings: list[Literal["transductive", "inductive"]] = Field(default_factory=lambda: ["transductive"])
    strategies: list[str] = Field(default_factory=lambda: ["base"])
    baselines: list[str] = Field(default_factory=list)
    baseline_grid: Literal["reference", "fast"] = "fast"
    split_seeds: list[int] | Literal["spec"] = "spec"
    max_seeds: int | None = Field(default=None, ge=1)
    lf_inputs: Literal["pretrained", "dataset"] = "pretrained"  # where LF predictions/embeddings come from
    train: dict[str, Any] = Field(default_factory=dict)
    model: dict[str, Any] = Field(default_factory=dict)
    readout_kwargs: dict[str, dict[str, Any]] = Field(default_factory=dict)  # per readout name
    pretrain: PretrainSpec = PretrainSpec()
    search: SearchSpec = SearchSpec()
    resources: ResourcesSpec = ResourcesSpec()
    failure: FailureSpec = FailureSpec()
    selection: SelectionSpec = SelectionSpec()
    spec_path: str | None = None

    @field_validator("strategies")
    @classmethod
    def _strategies(cls, v: list[str]) -> list[str]:
        from mfray.transfer import STRATEGIES

        return _registered(v, STRATEGIES, "strategy")

    @field_validator("baselines")
    @classmethod
    def _baselines(cls, v: list[str]) -> list[str]:
        from mfray.baselines import BASELINES

        return _registered(v, BASELINES, "baseline")

    @field_validator("train")
    @classmethod
    def _train_keys(cls, v: dict[str, Any]) -> dict[str, Any]:
        bad = [k for k in v if k not in TRAIN_KEYS]
        if bad:
            raise ValueError(f"unknown train setting(s) {bad}; allowed: {', '.join(TRAIN_KEYS)}")
        # the values are TrainConfig overrides: typed and checked here, not in a Ray trial later
        from pydantic import TypeAdapter

        from mfray.train.loop import TrainConfig

        _typed(TypeAdapter(TrainConfig), v, "train")
        return v

    @field_validator("model")
    @classmethod
    def _model_keys(cls, v: dict[str, Any]) -> dict[str, Any]:
        bad = [k for k in v if k not in MODEL_KEYS]
        if bad:
            raise ValueError(f"unknown model setting(s) {bad}; allowed: {', '.join(MODEL_KEYS)} "
                             "(readout is searched or set per strategy; readout options go in [readout_kwargs.<name>])")
        from pydantic import TypeAdapter

        from mfray.models.spec import ModelSpec

        _typed(TypeAdapter(ModelSpec), v, "model")
        return v

    @field_validator("readout_kwargs")
    @classmethod
    def _readout_kwargs(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        from mfray.nn import READOUTS
        from mfray.utils.registry import check_kwargs

        for name, kw in v.items():
            if name not in READOUTS:
                raise ValueError(f"unknown readout {name!r}; registered: {', '.join(READOUTS.names())}")
            check_kwargs(READOUTS.get(name), {"in_dim": 1, **kw}, what=f"readout {name!r} (readout_kwargs.{name})")
        return v

    @model_validator(mode="after")
    def _check(self) -> StudySpec:
        from mfray.nn import READOUTS
        from mfray.transfer import STRATEGIES

        if not self.tasks and not self.task_tags:
            raise ValueError("a study needs tasks (dataset names) or task_tags")
        if not self.strategies and "strategy" not in self.search.space:
            raise ValueError("a study needs strategies, or search.space.strategy to search over them")
        for s in self.search.space.get("strategy", []):
            if s not in STRATEGIES:
                raise ValueError(f"unknown strategy {s!r} in search.space.strategy; registered: "
                                 f"{', '.join(STRATEGIES.names())}")
        readouts = self.search.space.get("readout")
        if isinstance(readouts, list):
            for r in readouts:
                if r != "all" and r not in READOUTS:
                    raise ValueError(f"unknown readout {r!r} in search.space.readout; registered: "
                                     f"{', '.join(READOUTS.names())} (or \"all\")")
        named = set(self.readout_kwargs) | set(self.pretrain.readouts and sum(self.pretrain.readouts.values(), []))
        named.add(self.pretrain.artifact_readout)
        for r in named:
            if r not in READOUTS:
                raise ValueError(f"unknown readout {r!r}; registered: {', '.join(READOUTS.names())}")
        for s in self.pretrain.readouts:
            if s not in STRATEGIES or not STRATEGIES.build(s).lf_init:
                raise ValueError(f"pretrain.readouts: {s!r} is not a strategy that starts from an LF model")
        for s in self.strategies:
            if not any(STRATEGIES.build(s).supports(x) for x in self.settings):
                raise ValueError(f"strategy {s!r} runs in none of the settings {self.settings} (e.g. 'label' needs "
                                 "a measured LF label for every test molecule, which the inductive setting hides: "
                                 "use hybrid_label, predicted_label or delta, or add the transductive setting)")
        self._check_models()
        if self.search.storage and self.search.storage.startswith("sqlite") is False and "://" not in self.search.storage \
                and not self.search.storage.endswith((".db", ".sqlite", ".sqlite3")):
            raise ValueError(f"search.storage {self.search.storage!r}: give a SQLite file (*.db) or a database URL")
        return self

    def _check_models(self) -> None:
        """Build every model the study can train (each readout it names, HF and LF) on torch's meta device
        (no memory, no data), so that settings the modules refuse (a ``num_heads`` that does not divide
        ``hidden_dim``, an unknown ``encoder_kwargs`` key, a string where a number goes) are reported
        here, naming the keys, and not a minute later inside a Ray trial."""
        import torch

        from mfray.models.model import build_model
        from mfray.models.spec import ModelSpec
        from mfray.run.study.space import lf_model_config

        readouts = dict.fromkeys([*self.readout_choices(), *self.readout_kwargs,
                                  *sum(self.pretrain.readouts.values(), []), self.pretrain.artifact_readout])
        if not readouts:
            readouts = {ModelSpec().readout: None}
        builds = [(f"[model] with readout {r!r}" + (f" and [readout_kwargs.{r}]" if r in self.readout_kwargs else ""),
                   {**self.model, "readout": r, **({"readout_kwargs": self.readout_kwargs[r]}
                                                   if r in self.readout_kwargs else {})}) for r in readouts]
        for key, choices in self.search.space.items():  # each listed choice of a searched model setting
            if key in MODEL_KEYS and isinstance(choices, list):
                builds += [(f"search.space.{key} = {c!r} with readout {r!r}", {**cfg, key: c})
                           for c in choices for (_, cfg), r in zip(builds[: len(readouts)], readouts)]
        if self.pretrain.size != "study" or not self.model:
            builds += [(f"the LF model ([pretrain] size = {self.pretrain.size!r}) with readout {r!r}",
                        {**lf_model_config(self, r), "readout": r}) for r in readouts]
        for what, cfg in builds:
            try:
                with torch.device("meta"):
                    build_model(ModelSpec(**cfg))
            except Exception as e:  # noqa: BLE001 - any refusal of the modules is a spec error here
                msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                given = ", ".join(f"{k} = {cfg[k]!r}" for k in ("encoder_kwargs", "readout_kwargs", "head_kwargs")
                                  if cfg.get(k))
                raise ValueError(f"{what} cannot be built: {msg}" + (f" (with {given})" if given else "")) from None

    # ------------------------------------------------------------------ derived
    @property
    def base_dir(self) -> Path:
        return Path(self.spec_path).parent if self.spec_path else Path.cwd()

    def content_hash(self) -> str:
        return hash_obj(self.model_dump(mode="json", exclude={"spec_path", "description"}))

    def readout_choices(self) -> list[str]:
        from mfray.nn import READOUTS

        choices = self.search.space.get("readout")
        if choices is None:
            return []
        if isinstance(choices, Range):
            raise SpecError("search.space.readout must be a list of readout names")
        if "all" in choices:
            return list(READOUTS.names())
        return list(choices)

    def lf_readouts(self, strategy: str) -> list[str]:
        """The LF readouts a pretrained strategy can start from (for ``auto``: any of its candidates)."""
        from mfray.transfer import get_strategy

        if strategy == AUTO:
            out: list[str] = []
            for c in self.search.space.get("strategy", []):
                out += [r for r in self.lf_readouts(c) if r not in out]
            return out
        return get_strategy(strategy).lf_readouts(self)

    def searched_strategies(self) -> list[str]:
        """One search per listed strategy, plus ``auto`` when the space searches the strategy itself."""
        return [*self.strategies, *([AUTO] if "strategy" in self.search.space else [])]

    def smoke(self) -> StudySpec:
        """A seconds-to-minutes version of this study (for `--smoke` and CI): tiny budgets, 2 seeds,
        1 LF epoch; a separate study name so its rows never mix with the real study's."""
        space = dict(self.search.space)
        if isinstance(space.get("readout"), list):  # keep the cheapest readouts only
            cheap = [r for r in self.readout_choices() if r in ("sum", "mean", "max", "sum_mean_max")]
            space["readout"] = cheap[:2] or self.readout_choices()[:1]
        train = {**self.train, "max_epochs": min(int(self.train.get("max_epochs", 1000)), 3), "patience": 0}
        return self.model_copy(update={
            "name": f"{self.name}-smoke",
            "max_seeds": 2,
            "train": train,
            "model": {**self.model, "hidden_dim": 32, "head_hidden_dim": 32},
            "pretrain": self.pretrain.model_copy(update={"max_epochs": 1, "max_molecules": min(
                self.pretrain.max_molecules or 2000, 2000)}),
            "search": self.search.model_copy(update={"num_samples": 2, "grace_period": 1, "space": space,
                                                     "n_startup_trials": 1}),
            "baseline_grid": "fast",
        })


def _format(err: ValidationError, where: str) -> str:
    return format_validation_error(err, where).replace("invalid dataset spec", "invalid study spec")


def parse_study(data: dict[str, Any], where: str = "<study>", spec_path: str | None = None) -> StudySpec:
    try:
        return StudySpec.model_validate({**data, "spec_path": spec_path})
    except ValidationError as err:
        raise SpecError(_format(err, where)) from None


def load_study(path: str | Path) -> StudySpec:
    """Load and validate a study spec; every problem is a :class:`SpecError` naming the file."""
    p = Path(path)
    return parse_study(read_toml_file(p, "study spec"), where=str(p), spec_path=str(p.resolve()))
