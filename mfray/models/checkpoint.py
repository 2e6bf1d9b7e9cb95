"""Checkpoints that carry their own spec: loadable with ``torch.load(weights_only=True)``.

A checkpoint is a plain dict of tensors and JSON-like values::

    {"format": 1, "kind": "hf" | "lf", "model_spec": {...}, "state_dict": {...},
     "scalers": {"y": {...}, "aux": {...}}, "meta": {...}}

so ``load_model(path)`` rebuilds the model from registry names + kwargs, never from class paths.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from mfray.models.model import MFModel, build_model
from mfray.models.spec import ModelSpec
from mfray.utils.errors import MfrayError
from mfray.utils.io import atomic_path

CHECKPOINT_FORMAT = 1


def save_checkpoint(path: str | os.PathLike[str], model: MFModel, *, kind: str,
                    scalers: dict[str, Any] | None = None, meta: dict[str, Any] | None = None) -> Path:
    obj = {
        "format": CHECKPOINT_FORMAT,
        "kind": kind,
        "model_spec": model.spec.model_dump(mode="json"),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "scalers": scalers or {},
        "meta": meta or {},
    }
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    p = Path(path)
    if not p.exists():
        raise MfrayError(f"{p}: checkpoint does not exist")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt or foreign file
        raise MfrayError(f"{p}: not an mfray checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict) or obj.get("format") != CHECKPOINT_FORMAT or "model_spec" not in obj:
        raise MfrayError(f"{p}: not an mfray checkpoint (format {obj.get('format') if isinstance(obj, dict) else '?'})")
    return obj


def load_model(path: str | os.PathLike[str]) -> tuple[MFModel, dict[str, Any]]:
    """Rebuild a model from a checkpoint; returns ``(model in eval mode, checkpoint dict)``."""
    ckpt = load_checkpoint(path)
    model = build_model(ModelSpec.model_validate(ckpt["model_spec"]))
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return model, ckpt
