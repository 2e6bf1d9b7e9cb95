"""The registered transfer strategies (METHOD.md section 6).

| name | LF information | model |
|---|---|---|
| base | none | HF GNN from scratch |
| label | measured LF label, concatenated before the head (transductive only; Eq. 12) | from scratch |
| predicted_label | LF-model prediction (any molecule: inductive; Eq. 14) | from scratch |
| hybrid_label | per molecule: measured LF label where present, else the LF-model prediction (Eq. 13) | from scratch |
| embeddings | frozen LF-model graph embedding (Eq. 15) | from scratch |
| delta | Δ-learning (Ramakrishnan et al. 2015): a line HF ≈ a + b·LF fitted on the training fold; the GNN learns the residual (measured LF transductively, the LF model's prediction inductively) | from scratch, head output zeroed: it starts at the line |
| tune_vgae | none | LF model's encoder (+ sum readout), everything fine-tuned (Eqs. 19-21) |
| tune_readout | none | LF model's encoder + adaptive readout; encoder frozen, readout + head tuned (Eqs. 22-24) |

Augmentations are standardised with training-fold statistics by ``train_hf`` (the reference fed raw %
inhibition next to O(1) embeddings). Freezing also freezes BatchNorm statistics and VGAE noise
(:mod:`mfray.models.freezing`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from mfray.transfer.base import (
    FreezePlan,
    LFInput,
    ModelContext,
    Strategy,
    SuggestOne,
    register_strategy,
)
from mfray.utils.errors import MfrayError

if TYPE_CHECKING:
    from mfray.models.spec import ModelSpec

#: what a study's ``freeze`` choice freezes ("none": fine-tune everything)
FREEZE_CHOICES: dict[str, tuple[str, ...]] = {"none": (), "encoder": ("encoder",), "readout": ("readout",),
                                              "encoder+readout": ("encoder", "readout")}


def _finite(out: np.ndarray, name: str, needs: Sequence[LFInput], fold: str) -> np.ndarray:
    bad = ~np.isfinite(out).all(axis=1)
    if bad.any():
        hint = (" (a transductive input: use hybrid_label or predicted_label for molecules without a measured LF label)"
                if LFInput.LABEL in needs else "")
        raise MfrayError(f"strategy {name!r}: {int(bad.sum())} of {len(out)} {fold} molecules have no value for "
                         f"{[n.value for n in needs]}{hint}")
    return out.astype(np.float32)


class _Augmenting(Strategy):
    """Concatenates its LF inputs (in :attr:`inputs` order) to the graph vector before the head."""

    inputs: tuple[LFInput, ...] = ()

    def needs(self, setting: str = "transductive") -> frozenset[LFInput]:
        return frozenset(self.inputs)

    def augment(self, lf: Mapping[LFInput, np.ndarray], fold: str) -> np.ndarray | None:
        return _finite(np.concatenate([lf[k] for k in self.inputs], axis=1), self.name, self.inputs, fold)


@register_strategy
class Base(Strategy):
    name = "base"
    description = "HF model on HF data only"
    order = 0


@register_strategy
class Label(_Augmenting):
    name = "label"
    description = "aux = measured LF label (transductive, Eq. 12)"
    order = 20
    floor = True
    inputs = (LFInput.LABEL,)

    def supports(self, setting: str) -> bool:
        return setting == "transductive"  # new (valid/test) molecules have no measured label inductively


@register_strategy
class PredictedLabel(_Augmenting):
    name = "predicted_label"
    description = "aux = LF-model prediction (Eq. 14)"
    order = 22
    floor = True
    inputs = (LFInput.PREDICTION,)


@register_strategy
class HybridLabel(Strategy):
    name = "hybrid_label"
    description = "aux = measured LF label where present, else the LF-model prediction (Eq. 13, per molecule)"
    order = 21
    floor = True

    def needs(self, setting: str = "transductive") -> frozenset[LFInput]:
        return frozenset({LFInput.LABEL, LFInput.PREDICTION})

    def augment(self, lf: Mapping[LFInput, np.ndarray], fold: str) -> np.ndarray | None:
        measured = lf[LFInput.LABEL]
        out = np.where(np.isfinite(measured), measured, lf[LFInput.PREDICTION])
        return _finite(out, self.name, (LFInput.LABEL, LFInput.PREDICTION), fold)


@register_strategy
class Embeddings(_Augmenting):
    name = "embeddings"
    description = "aux = frozen LF-model graph embedding (Eq. 15)"
    order = 30
    inputs = (LFInput.EMBEDDING,)


@register_strategy
class Delta(Strategy):
    """Δ-learning: ``HF ≈ a + b·LF`` fitted by least squares on the training fold, the GNN trained on the
    residual ``HF - (a + b·LF)``, predictions ``a + b·LF + residual``. The head's output layer starts at
    zero, so an untrained model predicts the line: the ``lf_linear`` floor."""

    name = "delta"
    description = "Δ-learning: a line on the LF input fitted on train, the GNN learns the residual"
    order = 25
    floor = True

    def needs(self, setting: str = "transductive") -> frozenset[LFInput]:
        # inductively, new molecules have no measured label: every fold uses the LF model's prediction
        return frozenset({LFInput.LABEL if setting == "transductive" else LFInput.PREDICTION})

    @staticmethod
    def _lf(lf: Mapping[LFInput, np.ndarray]) -> np.ndarray:
        return lf[LFInput.LABEL] if LFInput.LABEL in lf else lf[LFInput.PREDICTION]

    def fit_offset(self, lf_train: Mapping[LFInput, np.ndarray], y_train: np.ndarray) -> dict[str, Any] | None:
        x_train = self._lf(lf_train)[:, 0].astype(np.float64)
        lines = []
        for j in range(y_train.shape[1]):
            ok = np.isfinite(x_train) & np.isfinite(y_train[:, j])
            if not ok.any():
                raise MfrayError("strategy 'delta': no training molecule has both an LF value and a usable HF value")
            if ok.sum() < 2 or np.ptp(x_train[ok]) == 0:
                # an LF input that does not vary (ubiquitin's primary score is 20 for 1207 of 1210
                # compounds) says nothing: the line is the mean, and the GNN learns the rest
                b, a = 0.0, float(np.mean(y_train[ok, j]))
            else:
                b, a = np.polyfit(x_train[ok], y_train[ok, j].astype(np.float64), 1)
            lines.append({"intercept": float(a), "slope": float(b)})
        return {"lines": lines, "input": next(iter(k.value for k in lf_train if k in (LFInput.LABEL, LFInput.PREDICTION)))}

    def apply_offset(self, params: Mapping[str, Any], lf: Mapping[LFInput, np.ndarray], fold: str) -> np.ndarray:
        x = self._lf(lf)[:, 0].astype(np.float64)
        if not np.isfinite(x).all():
            raise MfrayError(f"strategy 'delta': {int((~np.isfinite(x)).sum())} {fold} molecules have no LF value "
                             "(inductively delta reads the LF model's prediction)")
        return np.stack([line["intercept"] + line["slope"] * x for line in params["lines"]], axis=1).astype(np.float32)

    def prepare(self, model: Any, lf_state: Mapping[str, Any] | None = None, *,
                freeze: Sequence[str] | None = None, unfreeze_epoch: int | None = None) -> FreezePlan:
        from torch import nn

        last = [m for m in model.head.modules() if isinstance(m, nn.Linear)][-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        return super().prepare(model, lf_state, freeze=freeze, unfreeze_epoch=unfreeze_epoch)


class _FromLF(Strategy):
    """Starts from an LF model: its encoder and readout (and their widths); only the head is new."""

    lf_init = True
    lr = 5e-5

    def lf_readouts(self, study: Any) -> list[str]:
        return list(study.pretrain.readouts.get(self.name, [self.default_readout]))

    def model_spec(self, ctx: ModelContext) -> ModelSpec:
        if ctx.lf_spec is None:
            raise MfrayError(f"strategy {self.name!r} fine-tunes a pretrained LF model: give an LF checkpoint "
                             "(--lf-checkpoint, from `mfray pretrain`)")
        if ctx.readout and ctx.readout != ctx.lf_spec.readout:
            raise MfrayError(f"strategy {self.name!r} keeps the LF model's readout {ctx.lf_spec.readout!r}; "
                             f"pretrain with --readout {ctx.readout} instead")
        head = {k: v for k, v in ctx.overrides.items() if k in ("head", "head_hidden_dim", "head_kwargs")}
        shape = sorted(k for k in ctx.overrides if k not in head)
        if shape and any(ctx.overrides[k] != getattr(ctx.lf_spec, k) for k in shape):
            raise MfrayError(f"strategy {self.name!r} keeps the LF model's encoder and readout; it cannot change "
                             f"{shape}")
        return ctx.lf_spec.model_copy(update={"n_targets": ctx.n_targets, "aux_dim": 0, "task_type": ctx.task_type,
                                              **head})

    def prepare(self, model: Any, lf_state: Mapping[str, Any] | None = None, *,
                freeze: Sequence[str] | None = None, unfreeze_epoch: int | None = None) -> FreezePlan:
        if lf_state is None:
            raise MfrayError(f"strategy {self.name!r} needs the LF model's weights")
        load_pretrained_stages(model, lf_state, ("encoder", "readout"))
        return super().prepare(model, lf_state, freeze=freeze, unfreeze_epoch=unfreeze_epoch)

    def suggest(self, suggest_one: SuggestOne, study: Any, space: Mapping[str, Any]) -> None:
        lf = self.lf_readouts(study)
        if len(lf) > 1:
            suggest_one("lf_readout", lf)
        frozen = suggest_one("freeze", space["freeze"]) if isinstance(space.get("freeze"), list) else None
        something = self.default_freeze if frozen is None else FREEZE_CHOICES[frozen]
        if "unfreeze_epoch" in space and something:
            suggest_one("unfreeze_epoch", space["unfreeze_epoch"])

    def resolve(self, study: Any, params: Mapping[str, Any]) -> dict[str, Any]:
        freeze = list(FREEZE_CHOICES[params["freeze"]]) if "freeze" in params else None
        model = {k: v for k, v in study.model.items() if k in ("head_hidden_dim", "head_kwargs")}
        return {"readout": None, "lf_readout": params.get("lf_readout") or self.lf_readouts(study)[0],
                "freeze": freeze, "model": model}


@register_strategy
class TuneVGAE(_FromLF):
    name = "tune_vgae"
    description = "pretrain on LF (sum readout), fine-tune everything on HF (Eqs. 19-21)"
    order = 40
    default_readout = "sum"


@register_strategy
class TuneReadout(_FromLF):
    name = "tune_readout"
    description = "pretrain on LF (adaptive readout), freeze the encoder, fine-tune readout + head (Eqs. 22-24)"
    order = 41
    default_readout = "set_transformer"
    default_freeze = ("encoder",)


def load_pretrained_stages(model: Any, state_dict: Mapping[str, Any], stages: tuple[str, ...] = ("encoder", "readout")
                           ) -> list[str]:
    """Copy the named stages' weights from an LF checkpoint's ``state_dict`` into ``model``.

    Returns the parameter/buffer names loaded. Shape mismatches are errors that name the tensor.
    """
    own = model.state_dict()
    loaded = []
    for key, value in state_dict.items():
        if not any(key.startswith(f"{s}.") for s in stages):
            continue
        if key not in own:
            raise MfrayError(f"pretrained tensor {key!r} has no counterpart in the model (different architecture?)")
        if own[key].shape != value.shape:
            raise MfrayError(f"pretrained tensor {key!r} has shape {tuple(value.shape)}, the model expects "
                             f"{tuple(own[key].shape)}")
        own[key] = value
        loaded.append(key)
    missing = [k for k in own if any(k.startswith(f"{s}.") for s in stages) and k not in state_dict]
    if missing:
        raise MfrayError(f"the LF checkpoint lacks {len(missing)} tensors of stages {list(stages)}, e.g. {missing[:3]}")
    model.load_state_dict(own)
    return loaded
