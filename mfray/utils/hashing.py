"""Stable content hashes for specs and files (cache keys, idempotent study steps)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any


def stable_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: equal objects give equal strings."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def hash_obj(obj: Any, n: int = 16) -> str:
    """Hex digest (``n`` characters) of a JSON-serialisable object."""
    return hashlib.blake2b(stable_json(obj).encode(), digest_size=32).hexdigest()[:n]


def file_fingerprint(path: str | os.PathLike[str], full: bool = False) -> dict[str, Any]:
    """Cheap identity of a file: name, size and a hash of its first and last MiB.

    ``full=True`` hashes the whole file. The cheap form changes whenever a file is replaced or
    edited in practice, without reading gigabytes on every run.
    """
    p = Path(path)
    size = p.stat().st_size
    h = hashlib.blake2b(digest_size=16)
    with open(p, "rb") as f:
        if full or size <= 2 << 20:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        else:
            h.update(f.read(1 << 20))
            f.seek(-(1 << 20), os.SEEK_END)
            h.update(f.read(1 << 20))
    return {"name": p.name, "size": size, "digest": h.hexdigest()}
