"""The search space of a study as an Optuna define-by-run function, and trial params -> run config.

Conditional structure (why define-by-run and not a flat dict):

- strategies that start from an LF model (``tune_vgae``, ``tune_readout``) keep their LF model's
  encoder and readout: they get ``lf_readout`` (when ``pretrain.readouts`` offers several),
  ``freeze`` and, when something is frozen, ``unfreeze_epoch``; encoder widths are not searched;
- every other strategy gets ``readout`` and the encoder widths;
- all get the optimisation parameters (``lr``, ``batch_size``, ...);
- with ``search.space.strategy`` the strategy itself is the first parameter of an ``auto`` search,
  and everything above is conditional on the strategy drawn.
"""

from __future__ import annotations

from typing import Any

from mfray.run.study.spec import AUTO, FREEZE_CHOICES, Range, StudySpec
from mfray.transfer import get_strategy

#: searchable keys that change the encoder's shape: fixed by the LF model for pretrained strategies
_ENCODER_SHAPE = ("hidden_dim", "num_layers", "latent_dim", "encoder")
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
    """The strategies an ``auto`` search chooses from in ``setting`` (inductive: no measured labels)."""
    from mfray.transfer import LF_LABEL

    out = list(study.search.space.get("strategy", []))
    if setting == "inductive":
        out = [c for c in out if get_strategy(c).inputs != (LF_LABEL,)]
    return out


def suggest(trial: Any, study: StudySpec, strategy: str, setting: str = "transductive") -> dict[str, Any]:
    """Draw one configuration for ``strategy`` (or, for ``auto``, a strategy and its configuration)
    from ``trial`` (an ``optuna.Trial``).

    Returns the constants that are not searched (the strategy name, one-choice parameters), as
    OptunaSearch expects; the searched values are captured from the ``suggest_*`` calls.
    """
    space = study.search.space
    fixed: dict[str, Any] = {}
    if strategy == AUTO:  # the strategy is a parameter; everything below is conditional on it
        strategy = _suggest_one(trial, "strategy", candidates(study, setting), fixed)
    else:
        fixed["strategy"] = strategy
    s = get_strategy(strategy)
    if s.pretrained:
        lf = study.lf_readouts(strategy)
        if len(lf) > 1:
            trial.suggest_categorical("lf_readout", lf)
        freeze = space.get("freeze")
        frozen = _suggest_one(trial, "freeze", freeze, fixed) if isinstance(freeze, list) else None
        if "unfreeze_epoch" in space and (frozen is None and s.freeze or frozen not in (None, "none")):
            _suggest_one(trial, "unfreeze_epoch", space["unfreeze_epoch"], fixed)
    else:
        choices = study.readout_choices()
        if choices:
            _suggest_one(trial, "readout", choices, fixed)
        for k in _ENCODER_SHAPE:
            if k in space:
                _suggest_one(trial, k, space[k], fixed)
    for k in (*_TRAIN, "head_hidden_dim"):
        if k in space:
            _suggest_one(trial, k, space[k], fixed)
    return fixed


def resolve_config(study: StudySpec, strategy: str, params: dict[str, Any]) -> dict[str, Any]:
    """Trial params -> the full, JSON-ready HF run configuration (what is hashed and recorded).

    Keys: strategy, readout (None for pretrained strategies: the LF model's), lf_readout, freeze
    (list of stages or None for the strategy's default), unfreeze_epoch, model (ModelSpec
    overrides), train (TrainConfig overrides, without the seed).
    """
    if strategy == AUTO:
        strategy = params["strategy"]
    s = get_strategy(strategy)
    train = {**study.train, **{k: params[k] for k in _TRAIN if k in params}}
    train.setdefault("lr", s.lr)
    model = dict(study.model)
    readout = lf_readout = None
    freeze = None
    if s.pretrained:
        lf_readout = params.get("lf_readout") or study.lf_readouts(strategy)[0]
        if "freeze" in params:
            freeze = list(FREEZE_CHOICES[params["freeze"]])
        # the encoder, readout and their widths are the LF model's; only the head is new
        model = {k: v for k, v in model.items() if k in ("head_hidden_dim", "head_kwargs")}
    else:
        readout = params.get("readout") or s.default_readout
        for k in _ENCODER_SHAPE:
            if k in params:
                model[k] = params[k]
        if readout in study.readout_kwargs:
            model["readout_kwargs"] = dict(study.readout_kwargs[readout])
    if "head_hidden_dim" in params:
        model["head_hidden_dim"] = params["head_hidden_dim"]
    unfreeze = params.get("unfreeze_epoch")
    return {"strategy": strategy, "readout": readout, "lf_readout": lf_readout, "freeze": freeze,
            "unfreeze_epoch": None if unfreeze is None else int(unfreeze), "model": model, "train": train}


def lf_model_config(study: StudySpec, readout: str) -> dict[str, Any]:
    """ModelSpec overrides of the LF model with ``readout`` (encoder settings of the study + readout options)."""
    model = {k: v for k, v in study.model.items() if k != "head_hidden_dim"}
    if readout in study.readout_kwargs:
        model["readout_kwargs"] = dict(study.readout_kwargs[readout])
    return model
