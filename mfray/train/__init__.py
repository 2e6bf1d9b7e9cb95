"""Pure-torch training: fit/evaluate loop, early stopping, checkpoints, metrics (no Ray)."""
