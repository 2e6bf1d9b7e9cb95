"""The transfer-strategy interface: one object with hooks per strategy, registered next to it.

A strategy answers, for the code that trains, searches and reports:

==========================  ===================================================================
hook                        what it says / does (who calls it)
==========================  ===================================================================
``needs(setting)``          the LF inputs it reads, as :class:`LFInput` (``train_hf`` and the
                            baselines resolve them with :func:`mfray.transfer.inputs.resolve_lf_inputs`;
                            the study plan asks whether it needs an LF model's outputs)
``supports(setting)``       whether it can run in ``transductive`` / ``inductive`` (study spec
                            validation, the plan, ``mfray train``)
``lf_init``                 whether it starts from an LF model's weights (plan: which LF models;
                            search space; ``train_hf``)
``augment(lf, fold)``       the raw augmentation matrix concatenated before the head (``train_hf``)
``fit_offset(...)``,        a per-molecule offset the model learns a residual on (``delta``): its
``apply_offset(...)``       parameters fitted on the training fold (saved with the model), applied
                            to any molecules (``train_hf``, ``mfray predict``)
``model_spec(...)``         the :class:`~mfray.models.ModelSpec` it trains (``train_hf``)
``prepare(model, ...)``     loads LF weights and returns the :class:`FreezePlan` that ``fit``
                            receives explicitly (``train_hf``)
``suggest(trial, ...)``     its conditional part of a study's search space (``run/study/space``)
``resolve(study, params)``  trial params -> its part of the run configuration (``run/study/space``)
``lr``, ``order``,          default learning rate (``mfray train`` and studies alike), position in
``floor``                   report tables, and whether tables compare it with the ``lf_linear``
                            floor (``results/report``)
==========================  ===================================================================

Nothing outside ``mfray.transfer`` tests a strategy's name. Adding a strategy is one class with the
``@register_strategy`` decorator; ``tests/contracts/test_strategies.py`` then runs the contract suite
on it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from mfray.utils.errors import MfrayError

if TYPE_CHECKING:  # the interface imports no torch: reports read strategies' order without it
    from mfray.models.spec import ModelSpec
from mfray.utils.registry import Registry

SETTINGS = ("transductive", "inductive")
STAGES = ("encoder", "readout", "head")


class LFInput(str, Enum):
    """The low-fidelity inputs a strategy can read (resolved per fold to ``[n, d]`` float arrays)."""

    LABEL = "lf_label"  # the molecule's measured LF label (NaN where it has none, or hidden)
    PREDICTION = "lf_prediction"  # an LF model's prediction (any molecule)
    EMBEDDING = "lf_embedding"  # an LF model's graph embedding (any molecule)


#: LF inputs that come from an LF model (not from the data)
MODEL_OUTPUTS = frozenset({LFInput.PREDICTION, LFInput.EMBEDDING})


@dataclass(frozen=True)
class FreezePlan:
    """What ``fit`` freezes, passed to it explicitly (not stored on the model).

    Attributes:
        stages: stages frozen from the first epoch: parameters, BatchNorm statistics and (encoder)
            VGAE sampling noise.
        unfreeze_epoch: the epoch at which every stage is unfrozen (gradual unfreezing), or None.
        vgae_losses: whether the VGAE reconstruction and KL terms are part of the training loss. They
            only train the encoder, so they are off while the encoder is frozen (and on after an
            unfreeze).
    """

    stages: tuple[str, ...] = ()
    unfreeze_epoch: int | None = None
    vgae_losses: bool = True

    def __post_init__(self) -> None:
        bad = sorted(set(self.stages) - set(STAGES))
        if bad:
            raise MfrayError(f"unknown stage(s) {bad} to freeze; stages are {list(STAGES)}")
        if self.unfreeze_epoch is not None and self.unfreeze_epoch < 0:
            raise MfrayError(f"unfreeze_epoch must be >= 0 (got {self.unfreeze_epoch})")

    @classmethod
    def of(cls, stages: Sequence[str], unfreeze_epoch: int | None = None) -> FreezePlan:
        stages = tuple(s for s in STAGES if s in set(stages))
        return cls(stages=stages, unfreeze_epoch=unfreeze_epoch if stages else None,
                   vgae_losses="encoder" not in stages)

    def at(self, epoch: int) -> FreezePlan:
        """The plan in force at ``epoch`` (everything unfrozen from ``unfreeze_epoch`` on)."""
        if self.unfreeze_epoch is not None and epoch >= self.unfreeze_epoch:
            return FreezePlan()
        return self


@dataclass
class ModelContext:
    """What :meth:`Strategy.model_spec` builds from: the dataset's featuriser and the task's shape."""

    featurizer: str
    max_atomic_number: int | None
    n_targets: int
    task_type: str
    aux_dim: int = 0
    readout: str | None = None  # chosen by a search or ``--readout``; None = the strategy's default
    overrides: dict[str, Any] = field(default_factory=dict)  # ModelSpec fields (hidden_dim, ...)
    lf_spec: ModelSpec | None = None  # the LF model's spec (strategies with ``lf_init``)


#: ``suggest_one(name, param) -> value``: samples a study search-space entry (a constant when it has
#: one choice); what :meth:`Strategy.suggest` draws its parameters with
SuggestOne = Callable[[str, Any], Any]


class Strategy:
    """Base class of the transfer strategies (see the module docstring for the hooks)."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    #: position in report tables (lower first)
    order: ClassVar[int] = 100
    #: default learning rate (the reference's: 1e-4 for HF models, 5e-5 for fine-tuning)
    lr: ClassVar[float] = 1e-4
    #: readout when neither a search nor ``--readout`` picks one
    default_readout: ClassVar[str] = "sum_mean_max"
    #: starts from an LF model's encoder and readout
    lf_init: ClassVar[bool] = False
    #: stages frozen unless a search or ``--freeze`` says otherwise
    default_freeze: ClassVar[tuple[str, ...]] = ()
    #: tables compare it with the ``lf_linear`` floor (it reads the LF label or its prediction directly)
    floor: ClassVar[bool] = False

    # ------------------------------------------------------------------ inputs and settings
    def needs(self, setting: str = "transductive") -> frozenset[LFInput]:
        """The LF inputs the strategy reads in ``setting``."""
        return frozenset()

    def supports(self, setting: str) -> bool:
        """Whether the strategy can run in ``setting`` (every molecule it must score has its inputs)."""
        return setting in SETTINGS

    def needs_lf_model(self, setting: str = "transductive") -> bool:
        """Whether it needs an LF model at all (its weights, or its predictions/embeddings)."""
        return self.lf_init or bool(self.needs(setting) & MODEL_OUTPUTS)

    # ------------------------------------------------------------------ data
    def augment(self, lf: Mapping[LFInput, np.ndarray], fold: str) -> np.ndarray | None:
        """The raw (unscaled) augmentation ``[n, A]`` for one fold, or None. ``lf`` holds the inputs of
        :meth:`needs` for that fold (``[n, d]``, NaN = missing); ``train_hf`` standardises the result
        with training-fold statistics."""
        return None

    def fit_offset(self, lf_train: Mapping[LFInput, np.ndarray], y_train: np.ndarray) -> dict[str, Any] | None:
        """The parameters (JSON-able) of a per-molecule offset the model learns the residual on, fitted on
        the training fold, or None (no offset). ``lf_train``: the inputs of :meth:`needs` for the training
        fold; ``y_train``: training targets with only the values the model may fit (NaN elsewhere). They
        are saved with the model, so :meth:`apply_offset` gives new molecules the same offset."""
        return None

    def apply_offset(self, params: Mapping[str, Any], lf: Mapping[LFInput, np.ndarray], fold: str) -> np.ndarray:
        """The offsets ``[n, T]`` of molecules with LF inputs ``lf`` (predictions add them back)."""
        raise NotImplementedError(f"strategy {self.name!r} has no target offset")

    def target_offset(self, lf: Mapping[str, Mapping[LFInput, np.ndarray]], y_train: np.ndarray
                      ) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
        """:meth:`fit_offset` on the training fold and :meth:`apply_offset` on every fold of ``lf`` (fold ->
        the inputs of :meth:`needs`): ``(params, fold -> offsets)``, or None."""
        params = self.fit_offset(lf["train"], y_train)
        if params is None:
            return None
        return params, {f: self.apply_offset(params, inputs, f) for f, inputs in lf.items()}

    # ------------------------------------------------------------------ model
    def model_spec(self, ctx: ModelContext) -> ModelSpec:
        """The model the strategy trains."""
        from mfray.models.spec import ModelSpec

        return ModelSpec(**{"featurizer": ctx.featurizer, "max_atomic_number": ctx.max_atomic_number,
                            "readout": ctx.readout or self.default_readout, "n_targets": ctx.n_targets,
                            "aux_dim": ctx.aux_dim, "task_type": ctx.task_type, **ctx.overrides})

    def prepare(self, model: Any, lf_state: Mapping[str, Any] | None = None, *,
                freeze: Sequence[str] | None = None, unfreeze_epoch: int | None = None) -> FreezePlan:
        """Initialise ``model`` (e.g. from an LF checkpoint's ``state_dict``) and return what ``fit``
        freezes: ``freeze`` (a search's or ``--freeze``'s choice) or :attr:`default_freeze`."""
        return FreezePlan.of(self.default_freeze if freeze is None else freeze, unfreeze_epoch)

    # ------------------------------------------------------------------ studies
    def suggest(self, suggest_one: SuggestOne, study: Any, space: Mapping[str, Any]) -> None:
        """Draw the strategy's conditional part of a study's search space with ``suggest_one``: here the
        readout and the encoder's shape (``readout`` choices come from the study)."""
        choices = study.readout_choices()
        if choices:
            suggest_one("readout", choices)
        for k in ENCODER_SHAPE:
            if k in space:
                suggest_one(k, space[k])

    def resolve(self, study: Any, params: Mapping[str, Any]) -> dict[str, Any]:
        """Trial params -> ``readout``, ``lf_readout``, ``freeze`` and ``model`` (ModelSpec overrides) of
        the run configuration (``mfray.run.study.space.resolve_config`` adds the rest)."""
        readout = params.get("readout") or self.default_readout
        model = dict(study.model)
        for k in ENCODER_SHAPE:
            if k in params:
                model[k] = params[k]
        if readout in study.readout_kwargs:
            model["readout_kwargs"] = dict(study.readout_kwargs[readout])
        return {"readout": readout, "lf_readout": None, "freeze": None, "model": model}

    def lf_readouts(self, study: Any) -> list[str]:
        """The LF readouts the strategy can start from (strategies with :attr:`lf_init`)."""
        return []

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


#: searchable keys that change the encoder's shape (fixed by the LF model for ``lf_init`` strategies)
ENCODER_SHAPE = ("hidden_dim", "num_layers", "latent_dim", "encoder")

STRATEGIES: Registry[Strategy] = Registry("transfer strategy")


def register_strategy(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator: register a strategy under its ``name``."""
    if not cls.name:
        raise MfrayError(f"{cls.__name__}: a strategy needs a name")
    STRATEGIES.register(cls.name)(cls)
    return cls


def get_strategy(name: str) -> Strategy:
    """The registered strategy ``name`` (an unknown name lists the registered ones)."""
    return STRATEGIES.build(name)


def all_strategies() -> list[Strategy]:
    """Every registered strategy, in report order."""
    return sorted((get_strategy(n) for n in STRATEGIES.names()), key=lambda s: (s.order, s.name))
