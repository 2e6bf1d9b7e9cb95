"""Local CSV/TSV(.gz)/Parquet files with a column mapping: how private (AZ-style) data comes in.

Each file is streamed in chunks, so a primary screen of millions of rows never sits in memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mfray.data.sources.base import SOURCES, Source, artifact_column, censor_column, label_column, parse_folds
from mfray.data.sources.tabular import (
    check_exists,
    detect_format,
    iter_file_batches,
    merge_reasons,
    parse_embedding,
    parse_numeric,
    parse_qualifier,
    read_header,
)
from mfray.data.specs import DatasetSpec, FileSpec, LocalSource
from mfray.utils.errors import DataError
from mfray.utils.hashing import file_fingerprint


def _id_text(arr: pa.ChunkedArray | pa.Array, path: Path, column: str | None) -> pa.Array:
    """Ids as trimmed text; an id of only whitespace is missing (null), not the id ""."""
    try:
        text = pc.utf8_trim_whitespace(pc.cast(arr, pa.string()))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise DataError(f"{path}: id column {column!r} has type {arr.type}; ids must be text or whole numbers") from None
    return pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text)


@SOURCES.register("local")
class LocalFilesSource(Source):
    """Reads the files of a ``kind = "local"`` source spec."""

    def __init__(self, spec: DatasetSpec) -> None:
        super().__init__(spec)
        assert isinstance(spec.source, LocalSource)
        self.src: LocalSource = spec.source

    def labels(self) -> list[tuple[str, str]]:
        seen: dict[tuple[str, str], None] = {}
        for lab in self.src.labels:
            seen[(lab.fidelity, lab.target)] = None
        return list(seen)

    def artifacts(self) -> dict[str, str]:
        return {a.name: a.kind for a in self.src.artifacts}

    def qualified_labels(self) -> list[tuple[str, str]]:
        return list(dict.fromkeys((lab.fidelity, lab.target) for lab in self.src.labels if lab.qualifier_column))

    def path(self, key: str) -> Path:
        return self.spec.resolve_path(self.src.files[key].path)

    def missing(self) -> str | None:
        absent = [str(self.path(k)) for k in self.src.files if not self.path(k).exists()]
        return f"file(s) not found: {', '.join(absent)}" if absent else None

    def fingerprint(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in self.src.files:
            p = self.path(key)
            check_exists(p, f"data file {key!r} of dataset {self.spec.name!r}")
            out[key] = file_fingerprint(p)
        for fold, raw in (self.spec.split.files or {}).items():  # a predefined split's files are content too
            p = self.spec.resolve_path(raw)
            check_exists(p, f"split file for fold {fold!r} of dataset {self.spec.name!r}")
            out[f"split:{fold}"] = file_fingerprint(p)
        return out

    def describe(self) -> dict[str, Any]:
        files = {}
        for key, f in self.src.files.items():
            p = self.path(key)
            files[key] = {
                "path": str(p),
                "exists": p.exists(),
                "size_mb": round(p.stat().st_size / 1e6, 2) if p.exists() else None,
                "smiles_column": f.smiles_column,
                "id_column": f.id_column,
            }
        return {"kind": "local", "files": files}

    def _columns_needed(self, key: str, f: FileSpec) -> list[str]:
        cols = [f.smiles_column]
        if f.id_column:
            cols.append(f.id_column)
        cols += [lab.column for lab in self.src.labels if lab.file == key]
        cols += [lab.qualifier_column for lab in self.src.labels if lab.file == key and lab.qualifier_column]
        cols += [a.column for a in self.src.artifacts if a.file == key]
        if self.spec.split.column and self.spec.split.column in self._header(key):
            cols.append(self.spec.split.column)
        return list(dict.fromkeys(cols))

    def _header(self, key: str) -> list[str]:
        p, f = self.path(key), self.src.files[key]
        return [h.lstrip("\ufeff") for h in read_header(p, detect_format(p, f.format), f.delimiter, f.encoding)]

    def fold_of_ids(self) -> dict[str, str]:
        """Predefined split from files: id text -> fold, read from ``split.files`` (an id in two folds,
        or a file without the id column, is an error naming the file)."""
        split = self.spec.split
        col = split.id_column or "id"
        out: dict[str, str] = {}
        for fold, raw in (split.files or {}).items():
            p = self.spec.resolve_path(raw)
            check_exists(p, f"split file for fold {fold!r} of dataset {self.spec.name!r}")
            fmt = detect_format(p)
            header = [h.lstrip("\ufeff") for h in read_header(p, fmt, None, "utf-8")]
            if col not in header:
                raise DataError(f"{p}: no id column {col!r} (split.id_column) in this split file; it has {header}")
            real = {h.lstrip("\ufeff"): h for h in read_header(p, fmt, None, "utf-8")}[col]
            for chunk in iter_file_batches(p, fmt, None, "utf-8", [real], 1 << 16):
                for v in pc.utf8_trim_whitespace(pc.cast(chunk.column(0), pa.string())).to_pylist():
                    if v is None or v == "":
                        continue
                    if out.setdefault(v, fold) != fold:
                        raise DataError(f"{p}: id {v!r} is in fold {fold!r} and in fold {out[v]!r}")
        return out

    def check_columns(self) -> None:
        """Fail early, naming the file and the missing columns, before any work is done."""
        for key, f in self.src.files.items():
            p = self.path(key)
            check_exists(p, f"data file {key!r} of dataset {self.spec.name!r}")
            fmt = detect_format(p, f.format)
            header = read_header(p, fmt, f.delimiter, f.encoding)
            header = [h.lstrip("\ufeff") for h in header]
            missing = [c for c in self._columns_needed(key, f) if c not in header]
            twice = {c: [i + 1 for i, h in enumerate(header) if h == c] for c in self._columns_needed(key, f)
                     if header.count(c) > 1}
            if twice:  # a reader would silently take one of them
                where = "; ".join(f"{c!r} is columns {', '.join(map(str, pos))}" for c, pos in twice.items())
                raise DataError(f"{p}: the header names a column the spec uses more than once ({where}); "
                                "rename the copies so that each name is one column")
            if self.spec.split.files is not None and not f.id_column:
                raise DataError(f"{p}: split.files match rows by id, but file {key!r} has no id_column in the spec "
                                f"{self.spec.spec_path or self.spec.name}")
            if missing:
                raise DataError(
                    f"{p}: missing column(s) {missing} named in the spec "
                    f"{self.spec.spec_path or self.spec.name} (file {key!r}); the file has columns {header}"
                )

    def iter_tables(self, chunk_rows: int = 65536) -> Iterator[pa.Table]:
        self.check_columns()
        split = self.spec.split
        if split.column and not any(split.column in self._header(k) for k in self.src.files):
            raise DataError(f"split.column {split.column!r} of {self.spec.spec_path or self.spec.name} is in none of "
                            f"the files {[str(self.path(k)) for k in self.src.files]}")
        by_id = self.fold_of_ids() if split.files is not None else None
        schema = self.raw_schema()
        row0 = 0
        for key, f in self.src.files.items():
            p = self.path(key)
            fmt = detect_format(p, f.format)
            header = read_header(p, fmt, f.delimiter, f.encoding)
            bom = {h.lstrip("\ufeff"): h for h in header}  # a UTF-8 BOM sticks to the first name
            needed = self._columns_needed(key, f)
            real = [bom[c] for c in needed]
            file_row = 0
            for chunk in iter_file_batches(p, fmt, f.delimiter, f.encoding, real, chunk_rows):
                try:
                    yield self._records(chunk, key, f, p, row0, file_row, by_id, schema)
                except DataError as e:  # a column of the wrong type: name the file
                    raise DataError(f"{p}: {e}" if str(p) not in str(e) else str(e)) from None
                row0 += chunk.num_rows
                file_row += chunk.num_rows

    def _records(self, chunk: pa.Table, key: str, f: FileSpec, p: Path, row0: int, file_row: int,
                 by_id: dict[str, str] | None, schema: pa.Schema) -> pa.Table:
        """One chunk of a file as raw records (the columns of :meth:`raw_schema`)."""
        split = self.spec.split
        chunk = chunk.rename_columns([c.lstrip("\ufeff") for c in chunk.column_names])
        n = chunk.num_rows
        cols: dict[str, Any] = {
            "row": pa.array(range(row0, row0 + n), pa.int64()),
            "file": pa.array([str(p)] * n, pa.string()),
            "file_row": pa.array(range(file_row + 1, file_row + n + 1), pa.int64()),
        }
        sid = chunk.column(f.id_column) if f.id_column else pa.nulls(n, pa.string())
        cols["source_id"] = _id_text(sid, p, f.id_column)
        try:
            cols["smiles"] = pc.cast(chunk.column(f.smiles_column), pa.string())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise DataError(f"SMILES column {f.smiles_column!r} has type {chunk.column(f.smiles_column).type}; "
                            "expected text") from None
        reasons = []
        qualified = set(self.qualified_labels())
        for fid, target in self.labels():
            lab = next((lb for lb in self.src.labels if lb.file == key and (lb.fidelity, lb.target) == (fid, target)), None)
            if lab is None:
                cols[label_column(fid, target)] = pa.nulls(n, pa.float64())
                if (fid, target) in qualified:
                    cols[censor_column(fid, target)] = pa.nulls(n, pa.int8())
                continue
            vals, why = parse_numeric(chunk.column(lab.column), lab.column, lab.transform)
            cols[label_column(fid, target)] = vals
            reasons.append(why)
            if (fid, target) in qualified:
                cens = np.zeros(n, dtype=np.int8)
                missing = pc.is_null(vals).to_numpy(zero_copy_only=False)
                if lab.qualifier_column:
                    cens, qwhy = parse_qualifier(chunk.column(lab.qualifier_column), lab.qualifier_column,
                                                 lab.direction, present=~missing)
                    reasons.append(qwhy)
                cols[censor_column(fid, target)] = pa.array(cens, pa.int8(), mask=missing)
        for art in self.src.artifacts:
            name = artifact_column(art.name)
            if art.file != key:
                typ = pa.float64() if art.kind == "prediction" else pa.list_(pa.float32())
                cols[name] = pa.nulls(n, typ)
                continue
            if art.kind == "prediction":
                vals, why = parse_numeric(chunk.column(art.column), art.column)
            else:
                vals, why = parse_embedding(chunk.column(art.column), art.column)
            cols[name] = vals
            reasons.append(why)
        if self.has_folds():
            if by_id is not None:
                folds = [by_id.get(v) if v is not None else None for v in cols["source_id"].to_pylist()]
            elif split.column in chunk.column_names:
                folds, why = parse_folds(pc.cast(chunk.column(split.column), pa.string()).to_pylist(),
                                         split.column)
                reasons.append(why)
            else:
                folds = [None] * n
            cols["fold"] = pa.array(folds, pa.string())
        cols["reject"] = pa.array(merge_reasons(*reasons) if reasons else [None] * n, pa.string())
        return pa.table({k: cols[k] for k in schema.names}, schema=schema)
