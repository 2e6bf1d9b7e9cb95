"""Transfer strategies: augmentation inputs, initialisation from LF checkpoints, freezing."""

from mfray.transfer.strategies import LF_EMBEDDING, LF_LABEL, LF_PREDICTION, STRATEGIES, Strategy, get_strategy

__all__ = ["LF_EMBEDDING", "LF_LABEL", "LF_PREDICTION", "STRATEGIES", "Strategy", "get_strategy"]
