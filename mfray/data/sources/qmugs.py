"""QMugs (Isert et al., Sci Data 9:273, 2022): GFN2-xTB (LF) and DFT wB97X-D/def2-SVP (HF) properties.

Reads the published ``summary.csv`` (one row per conformer, keyed by ``chembl_id`` and ``conf_id``),
streamed in chunks. For every selected property ``P`` the file has ``GFN2_P`` (label ``lf/P``) and
``DFT_P`` (label ``hf/P``); ``GFN2:P`` / ``DFT:P`` (the SDF tag spelling) are accepted too. The id and
SMILES columns are matched case-insensitively (``smiles`` or ``SMILES``).

Outliers (METHOD.md section 8: values more than ``outlier_sd`` standard deviations from the property
mean are removed, about 1% of QMugs). A first streaming pass computes each label column's mean and
population standard deviation over every finite value in the file (one pass, not iterated). While
yielding records, a value beyond the limit is set to null, counted and logged in
:attr:`QmugsSummarySource.outliers`. It is *not* written to the ``reject`` column: an outlier is one
bad value, not a bad row, and rejecting the row would throw away the other 23 labels of the
conformer. Text that is not a number is a row rejection with a reason naming the column, as in every
file source.

Split index files (Buterez et al. 2024, ``assemble_QMugs/data_indices``): CSVs with ``chembl_id`` and
``conf_id`` (an ``index`` column, if present, is ignored), one file per fold: nested training sets
``train_8K`` ... ``train_300K`` (the whole set is every conformer not in ``val_1K``/``test_1K``),
``val_1K``, ``test_1K``. :func:`load_qmugs_split_index` reads them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mfray.data.sources.base import SOURCES, Source, label_column
from mfray.data.sources.tabular import (
    check_exists,
    detect_format,
    iter_file_batches,
    merge_reasons,
    parse_numeric,
    read_header,
)
from mfray.data.specs import DatasetSpec, QmugsSource
from mfray.utils.errors import DataError, SpecError
from mfray.utils.hashing import file_fingerprint

#: fidelity -> column prefix in summary.csv
FIDELITY_PREFIX = {"lf": "GFN2", "hf": "DFT"}

SPLIT_INDEX_SCHEMA = pa.schema(
    [pa.field("chembl_id", pa.string(), nullable=False), pa.field("conf_id", pa.string(), nullable=False),
     pa.field("fold", pa.string(), nullable=False)]
)


def qmugs_source_id(chembl_id: str, conf_id: str) -> str:
    """The raw-record ``source_id`` of one conformer: ``"<chembl_id>:<conf_id>"``."""
    return f"{chembl_id}:{conf_id}"


@dataclass
class ColumnStats:
    """Count, mean and population standard deviation of the finite values of one column."""

    n: int
    mean: float
    std: float


@dataclass
class OutlierReport:
    """Values nulled by the outlier filter during the latest :meth:`QmugsSummarySource.iter_tables`.

    ``counts`` is keyed by label column (``label:hf:HOMO_ENERGY``), ``values`` lists
    ``(row, source_id, label column, value)``; ``complete`` is False while the file is being read
    (or if iteration stopped early).
    """

    outlier_sd: float
    stats: dict[str, ColumnStats]
    counts: dict[str, int]
    values: list[tuple[int, str | None, str, float]] = field(default_factory=list)
    complete: bool = False

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def _merge_stats(a: tuple[int, float, float], x: np.ndarray) -> tuple[int, float, float]:
    """Combine running (n, mean, M2) with a batch of values (Chan et al.'s parallel update)."""
    n_a, mean_a, m2_a = a
    n_b = int(x.size)
    if n_b == 0:
        return a
    mean_b = float(x.mean())
    m2_b = float(((x - mean_b) ** 2).sum())
    n = n_a + n_b
    delta = mean_b - mean_a
    return n, mean_a + delta * n_b / n, m2_a + m2_b + delta * delta * n_a * n_b / n


def _find_column(header: list[str], name: str) -> str | None:
    """``name`` exactly, else the only column equal to it ignoring case."""
    if name in header:
        return name
    hits = [h for h in header if h.lower() == name.lower()]
    return hits[0] if len(hits) == 1 else None


@SOURCES.register("qmugs")
class QmugsSummarySource(Source):
    """Reads a ``kind = "qmugs"`` source: QMugs ``summary.csv`` -> ``lf``/``hf`` labels per property."""

    def __init__(self, spec: DatasetSpec) -> None:
        super().__init__(spec)
        assert isinstance(spec.source, QmugsSource)
        self.src: QmugsSource = spec.source
        missing = [f for f in FIDELITY_PREFIX if f not in spec.fidelities]
        if missing:
            raise SpecError(
                f"{spec.spec_path or spec.name}: a QMugs source provides fidelities "
                f"{list(FIDELITY_PREFIX)} (GFN2-xTB, DFT); fidelities = {spec.fidelities} lacks {missing}"
            )
        self._stats: dict[str, ColumnStats] | None = None
        #: what the outlier filter did (None until :meth:`iter_tables` runs, or if outlier_sd is null)
        self.outliers: OutlierReport | None = None

    # ------------------------------------------------------------ interface
    def labels(self) -> list[tuple[str, str]]:
        return [(fid, prop) for prop in self.src.properties for fid in FIDELITY_PREFIX]

    @property
    def path(self) -> Path:
        return self.spec.resolve_path(self.src.summary_csv)

    def missing(self) -> str | None:
        return None if self.path.exists() else f"QMugs summary file {self.path} not found"

    def fingerprint(self) -> dict[str, Any]:
        p = self.path
        check_exists(p, f"QMugs summary file of dataset {self.spec.name!r}")
        out: dict[str, Any] = {"summary": file_fingerprint(p)}
        if self.src.split_index:
            out["split_index"] = [file_fingerprint(f) for f in _split_files(self.spec.resolve_path(self.src.split_index))]
        return out

    def describe(self) -> dict[str, Any]:
        p = self.path
        out: dict[str, Any] = {
            "kind": "qmugs",
            "summary_csv": str(p),
            "exists": p.exists(),
            "size_mb": round(p.stat().st_size / 1e6, 2) if p.exists() else None,
            "properties": list(self.src.properties),
            "outlier_sd": self.src.outlier_sd,
            "split_index": str(self.spec.resolve_path(self.src.split_index)) if self.src.split_index else None,
        }
        if self.outliers is not None:
            out["outliers"] = {"complete": self.outliers.complete, "total": self.outliers.total,
                               "by_label": dict(self.outliers.counts)}
        return out

    # ------------------------------------------------------------ columns
    def columns(self) -> dict[str, str]:
        """Logical name -> column of the file: ``chembl_id``, ``conf_id``, ``smiles`` and one per label
        column (``label:lf:TOTAL_ENERGY`` -> ``GFN2_TOTAL_ENERGY``). Missing columns are a
        :class:`DataError` naming the file and every missing column."""
        p = self.path
        check_exists(p, f"QMugs summary file of dataset {self.spec.name!r}")
        header = [h.lstrip("\ufeff") for h in read_header(p, detect_format(p), None, "utf-8")]
        out: dict[str, str] = {}
        missing: list[str] = []
        for name in ("chembl_id", "conf_id", "smiles"):
            col = _find_column(header, name)
            if col is None:
                missing.append(name)
            else:
                out[name] = col
        for fid, prop in self.labels():
            prefix = FIDELITY_PREFIX[fid]
            col = next((c for c in (f"{prefix}_{prop}", f"{prefix}:{prop}") if c in header), None)
            if col is None:
                missing.append(f"{prefix}_{prop}")
            else:
                out[label_column(fid, prop)] = col
        if missing:
            raise DataError(
                f"{p}: missing column(s) {missing} needed by the QMugs spec "
                f"{self.spec.spec_path or self.spec.name}; the file has columns {header}"
            )
        return out

    def _batches(self, columns: list[str], chunk_rows: int) -> Iterator[pa.Table]:
        p = self.path
        header = read_header(p, detect_format(p), None, "utf-8")
        bom = {h.lstrip("\ufeff"): h for h in header}  # a UTF-8 BOM sticks to the first name
        real = [bom[c] for c in columns]
        for batch in iter_file_batches(p, detect_format(p), None, "utf-8", real, chunk_rows):
            batch = batch.rename_columns([c.lstrip("\ufeff") for c in batch.column_names])
            for start in range(0, batch.num_rows, chunk_rows):
                yield batch.slice(start, chunk_rows)

    # ------------------------------------------------------------ outlier statistics
    def column_stats(self, chunk_rows: int = 65536) -> dict[str, ColumnStats]:
        """Mean and population std of every label column (keyed by label column), one streaming pass.

        Only finite numbers count: missing values and non-numeric text are left out. Cached.
        """
        if self._stats is not None:
            return self._stats
        cols = self.columns()
        label_cols = [label_column(f, t) for f, t in self.labels()]
        acc = {lc: (0, 0.0, 0.0) for lc in label_cols}
        for chunk in self._batches([cols[lc] for lc in label_cols], chunk_rows):
            for lc in label_cols:
                vals, _ = parse_numeric(chunk.column(cols[lc]), cols[lc])
                x = vals.to_numpy(zero_copy_only=False)
                acc[lc] = _merge_stats(acc[lc], x[np.isfinite(x)])
        self._stats = {lc: ColumnStats(n, mean, math.sqrt(m2 / n) if n else float("nan"))
                       for lc, (n, mean, m2) in acc.items()}
        return self._stats

    # ------------------------------------------------------------ published splits
    def fold_of_conformers(self) -> tuple[dict[str, str], str]:
        """Predefined split: ``source_id -> train/valid/test`` from the split index, with ``split_train``
        as the train fold (``whole``: every conformer in neither val nor test), and the train fold's name."""
        index = load_qmugs_split_index(self.spec.resolve_path(self.src.split_index))
        names = sorted(set(index.column("fold").to_pylist()))
        train = self.src.split_train or "whole"
        if train != "whole" and train not in names:
            raise DataError(f"source.split_train = {train!r} is not a fold of the split index "
                            f"{self.spec.resolve_path(self.src.split_index)}; folds: {names} (or 'whole')")
        out: dict[str, str] = {}
        for chembl, conf, fold in zip(*(index.column(c).to_pylist() for c in ("chembl_id", "conf_id", "fold"))):
            role = qmugs_fold_role(fold)
            if role == "train" and fold != train:
                continue
            sid = qmugs_source_id(chembl, conf)
            if out.setdefault(sid, role) != role:
                raise DataError(f"QMugs split index: conformer {chembl} {conf} is in {out[sid]} and in {role}")
        return out, train

    # ------------------------------------------------------------ records
    def iter_tables(self, chunk_rows: int = 65536) -> Iterator[pa.Table]:
        cols = self.columns()
        schema = self.raw_schema()
        folds, train_fold = self.fold_of_conformers() if self.has_folds() else ({}, None)
        label_cols = [label_column(f, t) for f, t in self.labels()]
        sd = self.src.outlier_sd
        if sd is not None:
            stats = self.column_stats(chunk_rows)
            report = OutlierReport(sd, stats, {lc: 0 for lc in label_cols})
            self.outliers = report
        p = self.path
        file_name = str(p)
        needed = list(dict.fromkeys([cols["chembl_id"], cols["conf_id"], cols["smiles"],
                                     *(cols[lc] for lc in label_cols)]))
        row0 = 0
        for chunk in self._batches(needed, chunk_rows):
            n = chunk.num_rows
            chembl = pc.utf8_trim_whitespace(pc.cast(chunk.column(cols["chembl_id"]), pa.string()))
            conf = pc.utf8_trim_whitespace(pc.cast(chunk.column(cols["conf_id"]), pa.string()))
            out: dict[str, Any] = {
                "row": pa.array(range(row0, row0 + n), pa.int64()),
                "file": pa.array([file_name] * n, pa.string()),
                "file_row": pa.array(range(row0 + 1, row0 + n + 1), pa.int64()),
                # null if either part is missing (binary_join_element_wise propagates nulls)
                "source_id": pc.binary_join_element_wise(chembl, conf, ":"),
                "smiles": pc.cast(chunk.column(cols["smiles"]), pa.string()),
            }
            reasons = []
            for lc in label_cols:
                vals, why = parse_numeric(chunk.column(cols[lc]), cols[lc])
                reasons.append(why)
                if sd is not None:
                    vals = self._null_outliers(vals, lc, row0, out["source_id"])
                out[lc] = vals
            out["reject"] = pa.array(merge_reasons(*reasons), pa.string())
            if self.has_folds():
                default = "train" if train_fold == "whole" else None
                out["fold"] = pa.array([folds.get(v, default) if v is not None else None
                                        for v in out["source_id"].to_pylist()], pa.string())
            yield pa.table({k: out[k] for k in schema.names}, schema=schema)
            row0 += n
        if sd is not None:
            report.complete = True

    def _null_outliers(self, vals: pa.Array, lc: str, row0: int, source_ids: pa.Array) -> pa.Array:
        report = self.outliers
        assert report is not None
        st = report.stats[lc]
        if st.n < 2 or not st.std > 0:
            return vals
        x = vals.to_numpy(zero_copy_only=False)
        with np.errstate(invalid="ignore"):
            far = np.abs(x - st.mean) > report.outlier_sd * st.std  # NaN (missing) compares False
        if not far.any():
            return vals
        idx = np.flatnonzero(far)
        report.counts[lc] += int(idx.size)
        for i in idx:
            report.values.append((row0 + int(i), source_ids[int(i)].as_py(), lc, float(x[i])))
        x = np.where(far, np.nan, x)
        return pa.array(x, pa.float64(), mask=np.isnan(x))


# ---------------------------------------------------------------- split index files
def _split_files(p: Path) -> list[Path]:
    if not p.exists():
        raise DataError(f"{p}: QMugs split index (file or folder) does not exist")
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.is_file() and f.name.lower().endswith((".csv", ".csv.gz")))
        if not files:
            raise DataError(f"{p}: QMugs split index folder has no .csv files")
        return files
    return [p]


def _fold_name(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".csv"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return name


def qmugs_fold_role(fold: str) -> str:
    """``train``/``valid``/``test`` for a split index fold name (``train_8K`` -> ``train``, ``val_1K`` -> ``valid``)."""
    head = fold.lower().split("_")[0]
    roles = {"train": "train", "val": "valid", "valid": "valid", "validation": "valid", "test": "test"}
    if head not in roles:
        raise DataError(f"QMugs split fold {fold!r}: expected a name starting with train_, val_ or test_")
    return roles[head]


def load_qmugs_split_index(path: str | os.PathLike[str]) -> pa.Table:
    """Read QMugs split index files into one table ``(chembl_id, conf_id, fold)``.

    ``path`` is one CSV or a folder of them (``*.csv``, ``*.csv.gz``). Each file needs ``chembl_id``
    and ``conf_id`` columns; its fold is its ``fold`` column if it has one, else its file name without
    extensions (``train_8K.csv`` -> ``train_8K``). Nested training sets make a conformer appear in
    several folds; a conformer listed twice in one fold, an empty id or a missing column is a
    :class:`DataError` naming the file. Join to raw records by
    ``source_id = qmugs_source_id(chembl_id, conf_id)``.
    """
    tables = []
    for f in _split_files(Path(path)):
        header = [h.lstrip("\ufeff") for h in read_header(f, "csv", None, "utf-8")]
        cols = {name: _find_column(header, name) for name in ("chembl_id", "conf_id", "fold")}
        missing = [k for k in ("chembl_id", "conf_id") if cols[k] is None]
        if missing:
            raise DataError(f"{f}: missing column(s) {missing} in a QMugs split index; the file has columns {header}")
        raw = {h.lstrip("\ufeff"): h for h in read_header(f, "csv", None, "utf-8")}
        wanted = [raw[c] for c in cols.values() if c is not None]
        parts = list(iter_file_batches(f, "csv", None, "utf-8", wanted, 1 << 20))
        if not parts:
            continue
        t = pa.concat_tables(parts)
        t = t.rename_columns([c.lstrip("\ufeff") for c in t.column_names])
        chembl = pc.utf8_trim_whitespace(t.column(cols["chembl_id"]))
        conf = pc.utf8_trim_whitespace(t.column(cols["conf_id"]))
        if cols["fold"] is not None:
            fold = pc.utf8_trim_whitespace(t.column(cols["fold"]))
        else:
            fold = pa.chunked_array([pa.array([_fold_name(f)] * t.num_rows, pa.string())])
        for name, arr in (("chembl_id", chembl), ("conf_id", conf), ("fold", fold)):
            nulls = pc.is_null(arr)
            if pc.any(nulls).as_py():
                first = int(pc.index(nulls, True).as_py())
                raise DataError(f"{f}: empty {name} at data row {first + 1}")
        out = pa.table({"chembl_id": chembl, "conf_id": conf, "fold": fold}, schema=SPLIT_INDEX_SCHEMA)
        keys = pc.binary_join_element_wise(out["fold"], out["chembl_id"], out["conf_id"], "\x1f")
        if pc.count_distinct(keys).as_py() != out.num_rows:
            counts = pc.value_counts(keys)
            dup = next(v["values"].as_py() for v in counts if v["counts"].as_py() > 1)
            fd, ch, cf = dup.split("\x1f")
            raise DataError(f"{f}: conformer {ch} {cf} is listed more than once in fold {fd!r}")
        tables.append(out)
    if not tables:
        return SPLIT_INDEX_SCHEMA.empty_table()
    return pa.concat_tables(tables)
