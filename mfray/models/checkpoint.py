"""Checkpoints that carry their own spec: loadable with ``torch.load(weights_only=True)``.

A checkpoint is a plain dict of tensors and JSON-like values::

    {"format": 2, "kind": "hf" | "lf", "model_spec": {...}, "state_dict": {...},
     "scalers": {"y": {...}, "aux": {...}}, "meta": {...}, "sha256": "..."}

so ``load_model(path)`` rebuilds the model from registry names + kwargs, never from class paths.
``sha256`` is a hash of everything else (every tensor's name, dtype, shape and bytes, and the JSON
parts), checked on load: a flipped bit in the weights is an error, never different predictions.
Format 1 checkpoints (before the hash) still load, unchecked.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from mfray.models.model import MFModel, build_model
from mfray.models.spec import ModelSpec
from mfray.utils.errors import MfrayError
from mfray.utils.io import atomic_path

CHECKPOINT_FORMAT = 2
#: formats load_checkpoint reads (1: without the content hash)
READABLE_FORMATS = (1, 2)


def content_hash(obj: dict[str, Any]) -> str:
    """SHA-256 of a checkpoint dict without its ``sha256`` entry: its JSON parts, then each tensor of the
    state dict (sorted by name) as name, dtype, shape and raw bytes."""
    h = hashlib.sha256()
    rest = {k: v for k, v in obj.items() if k not in ("state_dict", "sha256")}
    h.update(json.dumps(rest, sort_keys=True, default=str).encode())
    for name in sorted(obj.get("state_dict", {})):
        t = obj["state_dict"][name]
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


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
    obj["sha256"] = content_hash(obj)
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
    if not isinstance(obj, dict) or obj.get("format") not in READABLE_FORMATS or "model_spec" not in obj:
        raise MfrayError(f"{p}: not an mfray checkpoint (format {obj.get('format') if isinstance(obj, dict) else '?'})")
    if not isinstance(obj.get("state_dict"), dict):
        raise MfrayError(f"{p}: the checkpoint has no state dict (the model's weights); it cannot be used")
    if obj["format"] >= 2:
        if obj.get("sha256") != content_hash(obj):
            raise MfrayError(f"{p}: the checkpoint's content does not match its recorded hash: the file is corrupt "
                             "or was edited; use another copy or retrain it")
    return obj


def load_model(path: str | os.PathLike[str]) -> tuple[MFModel, dict[str, Any]]:
    """Rebuild a model from a checkpoint; returns ``(model in eval mode, checkpoint dict)``."""
    ckpt = load_checkpoint(path)
    try:
        spec = ModelSpec.model_validate(ckpt["model_spec"])
        model = build_model(spec)
    except Exception as e:  # noqa: BLE001 - a spec this mfray cannot build
        raise MfrayError(f"{path}: the checkpoint's model spec cannot be built here ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''})") from None
    check_weights(model, ckpt["state_dict"], path)
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return model, ckpt


def check_weights(model: torch.nn.Module, state: dict[str, Any], where: Any) -> None:
    """Raise a short :class:`MfrayError` naming what differs when ``state`` does not fit ``model``."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} (the spec makes {tuple(own[k].shape)})" for k in own
              if k in state and tuple(getattr(state[k], "shape", ())) != tuple(own[k].shape)]
    if not (missing or extra or shapes):
        return

    def few(items: list[str]) -> str:
        return ", ".join(items[:3]) + (f" and {len(items) - 3} more" if len(items) > 3 else "")

    parts = ([f"missing {few(missing)}"] if missing else []) + ([f"unexpected {few(extra)}"] if extra else []) \
        + ([f"wrong shape {few(shapes)}"] if shapes else [])
    raise MfrayError(f"{where}: the weights do not match the model spec stored with them: {'; '.join(parts)}")
