"""The source interface: every data source yields *raw record* tables with one schema.

A raw record is one input row: where it came from, its SMILES, its labels and artifacts, and a
read-time rejection reason if the row is already known to be bad (e.g. a non-numeric label). Rows are
never dropped by a source: ``rows in = rows stored + rows quarantined`` is counted downstream from
these tables.

Raw record columns:
    row       int64   running index over the whole source (0-based), the row's identity downstream
    file      string  input file (or PubChem AID) the row came from
    file_row  int64   1-based data-row number within that file (header not counted)
    source_id string  the id column's value, if the file has one (else null)
    smiles    string  the SMILES as given
    reject    string  read-time rejection reason (null = fine so far)
    label:<fidelity>:<target>   float64 (null = not measured)
    fold      string  only for a predefined split: the row's fold (train / valid / test; null = none)
    censor:<fidelity>:<target>  int8, only for labels with a qualifier column: 0 = fitted value,
                                +1 = the value is a lower bound (true value above it), -1 an upper bound
    artifact:<name>             float64 (predictions) or list<float32> (embeddings)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from mfray.data.specs import DatasetSpec
from mfray.utils.registry import Registry

BASE_FIELDS = [
    pa.field("row", pa.int64(), nullable=False),
    pa.field("file", pa.string()),
    pa.field("file_row", pa.int64()),
    pa.field("source_id", pa.string()),
    pa.field("smiles", pa.string()),
    pa.field("reject", pa.string()),
]


def label_column(fidelity: str, target: str) -> str:
    return f"label:{fidelity}:{target}"


def censor_column(fidelity: str, target: str) -> str:
    return f"censor:{fidelity}:{target}"


def artifact_column(name: str) -> str:
    return f"artifact:{name}"


def parse_label_column(col: str) -> tuple[str, str] | None:
    if not col.startswith("label:"):
        return None
    _, fid, target = col.split(":", 2)
    return fid, target


class Source(ABC):
    """A dataset source (local files, PubChem, QMugs, ...): yields raw record tables in chunks."""

    def __init__(self, spec: DatasetSpec) -> None:
        self.spec = spec

    @abstractmethod
    def labels(self) -> list[tuple[str, str]]:
        """The (fidelity, target) pairs this source provides."""

    def artifacts(self) -> dict[str, str]:
        """Artifact name -> kind (``"prediction"`` or ``"embedding"``)."""
        return {}

    def qualified_labels(self) -> list[tuple[str, str]]:
        """The (fidelity, target) pairs whose values carry a qualifier (a ``censor:`` column)."""
        return []

    def has_folds(self) -> bool:
        """Whether records carry a ``fold`` column (a predefined split)."""
        return self.spec.split.kind == "predefined"

    @abstractmethod
    def missing(self) -> str | None:
        """Why this source's data is not on this machine (None: it is), checked without reading it:
        a study with ``missing_data = "skip"`` runs on the datasets that are present and names the rest."""
        return None

    def fingerprint(self) -> dict[str, Any]:
        """What identifies this source's content (file sizes and digests, AIDs, ...): a cache key."""

    @abstractmethod
    def iter_tables(self, chunk_rows: int = 65536) -> Iterator[pa.Table]:
        """Yield raw record tables (schema: :func:`raw_schema`) in row order."""

    def raw_schema(self, embedding_dims: dict[str, int] | None = None) -> pa.Schema:
        fields = list(BASE_FIELDS) + ([pa.field("fold", pa.string())] if self.has_folds() else [])
        fields += [pa.field(label_column(f, t), pa.float64()) for f, t in self.labels()]
        fields += [pa.field(censor_column(f, t), pa.int8()) for f, t in self.qualified_labels()]
        for name, kind in self.artifacts().items():
            typ = pa.float64() if kind == "prediction" else pa.list_(pa.float32())
            fields.append(pa.field(artifact_column(name), typ))
        return pa.schema(fields)

    def describe(self) -> dict[str, Any]:
        """Static facts for ``mfray data show`` (no reading of large files)."""
        return {"kind": self.spec.source.kind}


#: fold text of a predefined split -> the fold it names (matched after trimming, case-insensitively)
FOLD_TEXT = {"train": "train", "training": "train", "valid": "valid", "validate": "valid", "validation": "valid",
             "val": "valid", "test": "test"}


def parse_folds(values: list[str | None], column: str) -> tuple[list[str | None], list[str | None]]:
    """Fold text -> ``train``/``valid``/``test`` (None where empty) and per-row reasons for unknown text."""
    folds: list[str | None] = []
    reasons: list[str | None] = []
    for v in values:
        t = v.strip().lower() if v is not None else ""
        f = FOLD_TEXT.get(t)
        folds.append(f)
        reasons.append(None if f is not None or not t else
                       f"column {column!r}: unknown fold {v[:20]!r} (expected train, valid/validate/val or test)")
    return folds, reasons


SOURCES: Registry[Source] = Registry("data source")


def build_source(spec: DatasetSpec) -> Source:
    """The :class:`Source` for a spec (by ``spec.source.kind``)."""
    import importlib

    # each kind lives in the module of the same name; importing it registers it
    importlib.import_module(f"mfray.data.sources.{spec.source.kind}")
    return SOURCES.get(spec.source.kind)(spec)
