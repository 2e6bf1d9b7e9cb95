"""Transfer strategies: how a task's inputs are augmented and how a model is initialised and frozen.

| name | augmentation (concatenated to the graph vector, before the head) | initialisation / freezing |
|---|---|---|
| base | none | random |
| label | measured LF label (transductive) | random |
| predicted_label | LF-model prediction (any molecule: inductive) | random |
| hybrid_label | measured LF label where the molecule has one, else the LF-model prediction (per molecule) | random |
| embeddings | frozen LF-model graph embedding | random |
| tune_vgae | none | encoder (+ sum readout) from the LF model; everything fine-tuned |
| tune_readout | none | encoder + adaptive readout from the LF model; encoder frozen |

Augmentations are standardised with training-fold statistics by the training code (the reference
fed raw % inhibition next to O(1) embeddings). Freezing also freezes BatchNorm statistics and VGAE
noise (:mod:`mfray.models.freezing`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mfray.utils.errors import MfrayError
from mfray.utils.registry import Registry

#: names of the LF inputs a strategy can ask for; the training code resolves them to arrays per fold
LF_LABEL = "lf_label"
LF_PREDICTION = "lf_prediction"
LF_EMBEDDING = "lf_embedding"


@dataclass(frozen=True)
class Strategy:
    """A transfer strategy (see module docstring). Instances are immutable descriptions."""

    name: str
    inputs: tuple[str, ...] = ()  # which LF inputs it needs (LF_LABEL, LF_PREDICTION, LF_EMBEDDING)
    pretrained: bool = False  # initialise encoder/readout from an LF checkpoint
    default_readout: str = "sum_mean_max"
    freeze: tuple[str, ...] = ()
    lr: float = 1e-4
    description: str = ""

    def augmentation(self, lf: dict[str, np.ndarray], fold: str) -> np.ndarray | None:
        """The raw (unscaled) augmentation matrix [n, A] for one fold, or None.

        ``lf`` maps LF input names to arrays [n, d] (NaN = missing) for that fold.
        """
        if not self.inputs:
            return None
        for key in self.inputs:
            if key not in lf:
                raise MfrayError(f"strategy {self.name!r} needs {key!r}, which this task does not provide")
        if self.name == "hybrid_label":
            measured = lf[LF_LABEL]
            predicted = lf[LF_PREDICTION]
            out = np.where(np.isfinite(measured), measured, predicted)
        else:
            out = np.concatenate([lf[k] for k in self.inputs], axis=1)
        bad = ~np.isfinite(out).all(axis=1)
        if bad.any():
            hint = " (a transductive strategy: use hybrid_label or predicted_label for molecules without a measured LF label)" if LF_LABEL in self.inputs else ""
            raise MfrayError(f"strategy {self.name!r}: {int(bad.sum())} of {len(out)} {fold} molecules have no "
                             f"value for {list(self.inputs)}{hint}")
        return out.astype(np.float32)


STRATEGIES: Registry[Strategy] = Registry("transfer strategy")


def _register(s: Strategy) -> None:
    STRATEGIES.register(s.name)(lambda s=s: s)


for _s in (
    Strategy("base", description="HF model on HF data only"),
    Strategy("label", inputs=(LF_LABEL,), description="aux = measured LF label (transductive, Eq. 12)"),
    Strategy("predicted_label", inputs=(LF_PREDICTION,), description="aux = LF-model prediction (Eq. 14)"),
    Strategy("hybrid_label", inputs=(LF_LABEL, LF_PREDICTION),
             description="aux = measured LF label where present, else the LF-model prediction (Eq. 13, per molecule)"),
    Strategy("embeddings", inputs=(LF_EMBEDDING,), description="aux = frozen LF-model graph embedding (Eq. 15)"),
    Strategy("tune_vgae", pretrained=True, default_readout="sum", lr=5e-5,
             description="pretrain on LF (sum readout), fine-tune everything on HF (Eqs. 19-21)"),
    Strategy("tune_readout", pretrained=True, default_readout="set_transformer", freeze=("encoder",), lr=5e-5,
             description="pretrain on LF (adaptive readout), freeze the encoder, fine-tune readout + head (Eqs. 22-24)"),
):
    _register(_s)


def get_strategy(name: str) -> Strategy:
    return STRATEGIES.build(name)


def load_pretrained_stages(model, state_dict: dict, stages: tuple[str, ...] = ("encoder", "readout")) -> list[str]:
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
