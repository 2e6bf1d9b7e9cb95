"""The search space of a study as an Optuna define-by-run function, and trial params -> run config.

Conditional structure (why define-by-run and not a flat dict):

- each strategy draws its own part (:meth:`mfray.transfer.Strategy.suggest`): strategies that start
  from an LF model keep its encoder and readout and get ``lf_readout`` (when ``pretrain.readouts``
  offers several), ``freeze`` and, when something is frozen, ``unfreeze_epoch``; the others get
  ``readout`` and the encoder widths;
- all get the optimisation parameters (``lr``, ``batch_size``, ...);
- with ``search.space.strategy`` the strategy itself is the first parameter of an ``auto`` search,
  and everything above is conditional on the strategy drawn.
"""

from __future__ import annotations

from typing import Any

from mfray.run.study.spec import AUTO, Range, StudySpec
from mfray.transfer import get_strategy

_TRAIN = ("lr", "batch_size", "weight_decay", "kl_weight")


def _suggest_one(trial: Any, name: str, p: list[Any] | Range, fixed: dict[str, Any]) -> Any:
    """Sample ``name``; a one-choice list is a constant (not sampled), returned in ``fixed``."""
    if isinstance(p, list):
        if len(p) == 1:
            fixed[name] = p[0]
            return p[0]
        return trial.suggest_categorical(name, p)
    if p.is_int:
        return trial.suggest_int(name, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
    return trial.suggest_float(name, p.low, p.high, log=p.log, step=p.step)


def candidates(study: StudySpec, setting: str = "transductive") -> list[str]:
    """The strategies an ``auto`` search chooses from in ``setting`` (those that support it)."""
    return [c for c in study.search.space.get("strategy", []) if get_strategy(c).supports(setting)]


def suggest(trial: Any, study: StudySpec, strategy: str, setting: str = "transductive") -> dict[str, Any]:
    """Draw one configuration for ``strategy`` (or, for ``auto``, a strategy and its configuration)
    from ``trial`` (an ``optuna.Trial``).

    The strategy draws its own conditional part (:meth:`mfray.transfer.Strategy.suggest`); the
    optimisation parameters are common. Returns the constants that are not searched (the strategy
    name, one-choice parameters), as OptunaSearch expects; the searched values are captured from the
    ``suggest_*`` calls.
    """
    space = study.search.space
    fixed: dict[str, Any] = {}
    if strategy == AUTO:  # the strategy is a parameter; everything below is conditional on it
        strategy = _suggest_one(trial, "strategy", candidates(study, setting), fixed)
    else:
        fixed["strategy"] = strategy
    get_strategy(strategy).suggest(lambda name, p: _suggest_one(trial, name, p, fixed), study, space)
    for k in (*_TRAIN, "head_hidden_dim"):
        if k in space:
            _suggest_one(trial, k, space[k], fixed)
    return fixed


def resolve_config(study: StudySpec, strategy: str, params: dict[str, Any]) -> dict[str, Any]:
    """Trial params -> the full, JSON-ready HF run configuration (what is hashed and recorded).

    Keys: strategy, readout (None for strategies that keep their LF model's), lf_readout, freeze (list
    of stages or None for the strategy's default), unfreeze_epoch, model (ModelSpec overrides), train
    (every TrainConfig field but the seed, the study's ``[train]`` over the defaults; ``lr`` defaults to
    the strategy's).
    """
    if strategy == AUTO:
        strategy = params["strategy"]
    s = get_strategy(strategy)
    train = {**resolved_train(study), **{k: params[k] for k in _TRAIN if k in params}}
    if train.get("lr") is None:
        train["lr"] = s.lr
    own = s.resolve(study, params)
    model = own["model"]
    if "head_hidden_dim" in params:
        model["head_hidden_dim"] = params["head_hidden_dim"]
    unfreeze = params.get("unfreeze_epoch")
    return {"strategy": strategy, "readout": own["readout"], "lf_readout": own["lf_readout"], "freeze": own["freeze"],
            "unfreeze_epoch": None if unfreeze is None else int(unfreeze), "model": model, "train": train}


def resolved_train(study: StudySpec) -> dict[str, Any]:
    """The study's ``[train]`` over every TrainConfig default (without the seed): what a run's key is made
    of, so that a change of mfray's defaults is a new run, not a silently reused one."""
    from dataclasses import asdict

    from mfray.train.loop import TrainConfig

    out = {**asdict(TrainConfig(lr=None)), **study.train}
    out.pop("seed")
    return out


def lf_model_config(study: StudySpec, readout: str) -> dict[str, Any]:
    """ModelSpec overrides of the LF model with ``readout``: the study's encoder settings and readout
    options, or with ``[pretrain] size`` "paper"/"cpu" the preset's (:data:`mfray.models.spec.LF_PRESETS`)."""
    from mfray.models.spec import lf_preset

    if study.pretrain.size != "study":
        return lf_preset(study.pretrain.size, readout)
    model = {k: v for k, v in study.model.items() if k != "head_hidden_dim"}
    if readout in study.readout_kwargs:
        model["readout_kwargs"] = dict(study.readout_kwargs[readout])
    return model
