"""Model composition: build a model from a ModelSpec; named stages; embed() and predict()."""

from mfray.models.model import STAGES, MFModel, ModelOutput, build_model
from mfray.models.spec import ModelSpec

__all__ = ["STAGES", "MFModel", "ModelOutput", "ModelSpec", "build_model"]
