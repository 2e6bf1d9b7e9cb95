"""Classical baselines (METHOD.md section 6): RF and SVR on Morgan bits or RDKit 2D descriptors, with
the same LF augmentations as the GNN strategies, and ``lf_linear``, the floor of the label strategies.

>>> result = run_baseline(task, "rf", features="morgan", augment="label", grid="fast")
>>> result.metrics["test"]["r2"], result.best_params
"""

from mfray.baselines.features import AUGMENTS, CachedDescriptor, FeatureSet, build_features
from mfray.baselines.models import BASELINES, Baseline, SearchResult
from mfray.baselines.runner import BaselineResult, Predictions, run_baseline

__all__ = [
    "AUGMENTS", "BASELINES", "Baseline", "BaselineResult", "CachedDescriptor", "FeatureSet", "Predictions",
    "SearchResult", "build_features", "run_baseline",
]
