"""A file location that is a local path or a filesystem URI (``s3://``, ``gs://``, ``file://``).

Study storage (``mfray study run --storage``) may live on shared object storage so that every node
of a cluster sees the same LF checkpoints, search records and results. Small records (JSON) are
read and written through :mod:`pyarrow.fs`; large artifacts are copied to a local cache before
torch or Parquet readers open them. Local paths take the plain ``pathlib`` route (atomic renames).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from mfray.utils.hashing import hash_obj
from mfray.utils.io import atomic_path, write_json_atomic


class Location:
    def __init__(self, uri: str | os.PathLike[str]) -> None:
        s = os.fspath(uri)
        if s.startswith("file://"):
            s = s[len("file://"):]
        self.uri = s.rstrip("/") if "://" in s else str(Path(s).expanduser().resolve())
        self.is_local = "://" not in self.uri

    def __repr__(self) -> str:
        return f"Location({self.uri!r})"

    def __str__(self) -> str:
        return self.uri

    def child(self, *parts: str) -> Location:
        return Location("/".join([self.uri, *parts]))

    @property
    def path(self) -> Path:
        """The local path (local locations only)."""
        if not self.is_local:
            raise ValueError(f"{self.uri} is not a local path")
        return Path(self.uri)

    def _fs(self):
        import pyarrow.fs as pafs

        return pafs.FileSystem.from_uri(self.uri)

    def exists(self) -> bool:
        if self.is_local:
            return Path(self.uri).exists()
        import pyarrow.fs as pafs

        fs, p = self._fs()
        return fs.get_file_info(p).type != pafs.FileType.NotFound

    def read_json(self) -> Any:
        if self.is_local:
            return json.loads(Path(self.uri).read_text())
        fs, p = self._fs()
        with fs.open_input_stream(p) as f:
            return json.loads(f.read().decode())

    def write_json(self, obj: Any) -> None:
        if self.is_local:
            write_json_atomic(self.uri, obj)
            return
        fs, p = self._fs()
        fs.create_dir(p.rsplit("/", 1)[0], recursive=True)
        with fs.open_output_stream(p) as f:  # an object-store put is atomic
            f.write((json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())

    def put(self, local: str | os.PathLike[str]) -> None:
        """Copy a local file here (atomically for local destinations)."""
        if self.is_local:
            with atomic_path(self.uri) as tmp:
                shutil.copyfile(local, tmp)
            return
        fs, p = self._fs()
        fs.create_dir(p.rsplit("/", 1)[0], recursive=True)
        with open(local, "rb") as src, fs.open_output_stream(p) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)

    def local_copy(self) -> Path:
        """A local path with this file's content (itself when local; else a cached download)."""
        if self.is_local:
            return Path(self.uri)
        base = os.environ.get("MFRAY_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "mfray")
        dest = Path(base) / "remote" / hash_obj(self.uri) / self.uri.rsplit("/", 1)[-1]
        if not dest.exists():
            fs, p = self._fs()
            with atomic_path(dest) as tmp, fs.open_input_stream(p) as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        return dest
