"""Finding dataset specs by name or path (what ``mfray data list/show`` and every verb use).

Search path, first match wins: the folders in ``$MFRAY_DATA_SPECS`` (``:``-separated), then
``./data_specs`` under the current folder, then the ``data_specs`` folder of this mfray checkout.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from mfray.data.specs import DatasetSpec, load_spec
from mfray.utils.errors import SpecError


def search_path() -> list[Path]:
    dirs: list[Path] = []
    env = os.environ.get("MFRAY_DATA_SPECS")
    if env:
        dirs += [Path(p) for p in env.split(os.pathsep) if p]
    dirs.append(Path.cwd() / "data_specs")
    dirs.append(Path(__file__).resolve().parents[2] / "data_specs")
    seen: list[Path] = []
    for d in dirs:
        d = d.resolve()
        if d.is_dir() and d not in seen:
            seen.append(d)
    return seen


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    path: Path
    spec: DatasetSpec | None
    error: str | None = None


def list_specs() -> list[CatalogEntry]:
    """Every spec file on the search path (invalid ones are listed with their error)."""
    out: dict[str, CatalogEntry] = {}
    for d in search_path():
        for p in sorted(d.rglob("*.toml")):
            try:
                spec = load_spec(p)
                entry = CatalogEntry(spec.name, p, spec)
            except SpecError as e:
                entry = CatalogEntry(p.stem, p, None, str(e))
            out.setdefault(entry.name, entry)
    return sorted(out.values(), key=lambda e: e.name)


def resolve_spec(name_or_path: str) -> DatasetSpec:
    """A spec from a file path, or by its ``name`` (or file stem) on the search path."""
    p = Path(name_or_path)
    try:
        is_file = p.suffix == ".toml" or p.exists() or os.sep in name_or_path
    except (OSError, ValueError) as e:  # a name too long for a path, a NUL byte, a symlink loop
        raise SpecError(f"dataset {name_or_path[:80]!r}{'...' if len(name_or_path) > 80 else ''}: not a spec file "
                        f"or a dataset name ({type(e).__name__}: {e.strerror if isinstance(e, OSError) else e})") from None
    if is_file:
        return load_spec(p)
    matches = [e for e in list_specs() if e.name == name_or_path or e.path.stem == name_or_path]
    if not matches:
        import difflib

        names = [e.name for e in list_specs()]
        close = difflib.get_close_matches(name_or_path, names, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; `mfray data list` shows the known datasets"
        raise SpecError(f"no dataset spec named {name_or_path!r} on the search path "
                        f"{[str(d) for d in search_path()]}{hint}")
    entry = matches[0]
    if entry.spec is None:
        raise SpecError(entry.error or f"{entry.path}: invalid spec")
    return entry.spec
