"""Transfer strategies: one object with hooks each (:mod:`mfray.transfer.base`), the registered
strategies (:mod:`mfray.transfer.strategies`) and where their LF inputs come from
(:mod:`mfray.transfer.inputs`)."""

from mfray.transfer.base import (
    MODEL_OUTPUTS,
    SETTINGS,
    STRATEGIES,
    FreezePlan,
    LFInput,
    ModelContext,
    Strategy,
    get_strategy,
    register_strategy,
    all_strategies,
)
from mfray.transfer.inputs import LF_OUTPUTS, LFSources, artifact_sources, outputs_sources, resolve_lf_inputs
from mfray.transfer.strategies import FREEZE_CHOICES, load_pretrained_stages

__all__ = [
    "FREEZE_CHOICES", "LF_OUTPUTS", "all_strategies", "MODEL_OUTPUTS", "SETTINGS", "STRATEGIES", "FreezePlan", "LFInput", "LFSources", "ModelContext",
    "Strategy", "artifact_sources", "get_strategy", "load_pretrained_stages", "outputs_sources", "register_strategy",
    "resolve_lf_inputs",
]
