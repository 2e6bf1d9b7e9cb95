"""Streaming readers for CSV/TSV(.gz) and Parquet files, and value parsing with per-row reasons.

Used by every file-backed source. Files are read in chunks (never whole), every value column as
text, so a stray ``"n/a"`` in a label column becomes a per-row rejection reason instead of a crash.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from mfray.utils.errors import DataError

#: a number as text: ASCII decimal digits with optional sign, point and exponent, or inf/infinity (then
#: refused as infinite with its own reason). Digit separators ('1_000', '1,000'), hex and non-ASCII
#: digits are not numbers here.
_NUMBER = re.compile(r"[+-]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|inf|infinity)", re.ASCII | re.IGNORECASE)

NULL_TOKENS = ["", "NA", "N/A", "NaN", "nan", "NAN", "null", "NULL", "None", "none", "#N/A"]


def detect_format(path: Path, fmt: str = "auto") -> str:
    if fmt != "auto":
        return fmt
    name = path.name.lower()
    for suffix in (".gz", ".bz2", ".zst", ".zstd"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    if name.endswith(".parquet") or name.endswith(".pq"):
        return "parquet"
    if name.endswith(".tsv") or name.endswith(".tab"):
        return "tsv"
    return "csv"


def _find_bad_utf8(path: Path, encoding: str) -> str:
    """Locate the first undecodable line of a (possibly compressed) text file, for the message."""
    try:
        with pa.input_stream(str(path)) as f:
            data = f.read(512 << 20)
    except Exception:  # pragma: no cover - the caller already failed reading it
        return ""
    for lineno, line in enumerate(data.split(b"\n"), start=1):
        try:
            line.decode(encoding)
        except UnicodeDecodeError as e:
            bad = line[e.start : e.start + 1]
            return f" at line {lineno}, byte {e.start + 1} (0x{bad.hex()})"
    return ""


def check_exists(path: Path, what: str) -> None:
    try:
        path.stat()
    except OSError as e:
        if path.is_symlink():
            raise DataError(f"{path}: {what} is a symbolic link that leads nowhere ({e.strerror})") from None
        if not path.exists():
            raise DataError(f"{path}: {what} does not exist") from None
        raise DataError(f"{path}: {what} cannot be read: {e.strerror}") from None
    if path.is_dir():
        raise DataError(f"{path}: {what} is a folder, expected a file")


def _utf16_hint(path: Path, encoding: str) -> str | None:
    """A message when a file declared UTF-8 is UTF-16/32 text (a byte-order mark, or NUL bytes between
    ASCII letters, as Excel's "Unicode text" writes), else None."""
    if encoding.lower().replace("-", "").replace("_", "") not in ("utf8", "utf8sig"):
        return None
    try:
        with pa.input_stream(str(path)) as f:
            head = f.read(4096)
    except (OSError, pa.ArrowInvalid):
        return None
    if head.startswith((b"\xff\xfe", b"\xfe\xff")) or (len(head) >= 4 and head.count(b"\x00") >= len(head) // 4):
        return (f"{path}: the file is UTF-16 (or UTF-32) text, not {encoding}: re-save it as UTF-8, "
                "or set encoding = 'utf-16' for this file in the spec")
    return None


def read_header(path: Path, fmt: str, delimiter: str | None, encoding: str) -> list[str]:
    """Column names of a file, with a clear error for unreadable files."""
    if fmt == "parquet":
        try:
            return pq.ParquetFile(str(path)).schema_arrow.names
        except (pa.ArrowInvalid, OSError) as e:
            raise DataError(f"{path}: not a readable Parquet file ({e})") from None
    hint = _utf16_hint(path, encoding)
    if hint:
        raise DataError(hint)
    try:
        reader = _csv_reader(path, fmt, delimiter, encoding, None, block_size=1 << 16)
        return reader.schema.names
    except (pa.ArrowInvalid, UnicodeDecodeError) as e:
        if "UTF8" in str(e) or "utf-8" in str(e).lower() or isinstance(e, UnicodeDecodeError):
            raise DataError(
                f"{path}: not valid {encoding} text{_find_bad_utf8(path, encoding)}; "
                f"re-save it as UTF-8 or set encoding (e.g. 'latin-1') for this file in the spec"
            ) from None
        raise DataError(f"{path}: cannot read as {fmt.upper()}: {e}") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e}") from None


def _csv_reader(path, fmt, delimiter, encoding, columns, block_size=1 << 22):
    delim = delimiter or ("\t" if fmt == "tsv" else ",")
    enc = "utf8" if encoding.lower().replace("-", "") in ("utf8", "utf8sig") else encoding
    read = pacsv.ReadOptions(block_size=block_size, encoding=enc)
    parse = pacsv.ParseOptions(delimiter=delim, newlines_in_values=True)
    conv = pacsv.ConvertOptions(
        column_types={c: pa.string() for c in columns} if columns else None,
        include_columns=columns,
        strings_can_be_null=True,
        null_values=NULL_TOKENS,
        check_utf8=True,
    )
    stream = pa.input_stream(str(path))  # detects .gz/.bz2/.zst from the name
    return pacsv.open_csv(stream, read_options=read, parse_options=parse, convert_options=conv)


def iter_file_batches(
    path: Path, fmt: str, delimiter: str | None, encoding: str, columns: list[str], chunk_rows: int
) -> Iterator[pa.Table]:
    """Yield tables of ``columns`` (CSV: all as strings) in file order, about ``chunk_rows`` each."""
    done = 0
    if fmt == "parquet":
        try:
            pf = pq.ParquetFile(str(path))
            for batch in pf.iter_batches(batch_size=chunk_rows, columns=columns):
                yield pa.Table.from_batches([batch])
                done += batch.num_rows
        except (pa.ArrowException, OSError) as e:
            raise DataError(f"{path}: corrupt Parquet data after {done:,} good rows ({e}); re-export the file") from None
        return
    try:
        # CSV strings take ~60-100 bytes a row: size blocks to about chunk_rows rows
        reader = _csv_reader(path, fmt, delimiter, encoding, columns, block_size=max(1 << 20, chunk_rows * 96))
    except pa.ArrowInvalid as e:  # the first block is parsed on open
        _raise_csv_error(e, path, fmt, encoding)
    except OSError as e:
        _raise_stream_error(e, path, done)
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            return
        except pa.ArrowInvalid as e:
            _raise_csv_error(e, path, fmt, encoding)
        except OSError as e:
            _raise_stream_error(e, path, done)
        done += batch.num_rows
        yield pa.Table.from_batches([batch])


def _raise_stream_error(e: OSError, path: Path, done: int) -> None:
    compressed = path.suffix.lower() in (".gz", ".bz2", ".zst", ".zstd")
    what = "the compressed file is truncated or corrupt" if compressed else "the file cannot be read"
    raise DataError(f"{path}: {what} after {done:,} rows were read ({e}); "
                    f"{'re-download or re-compress it' if compressed else 'check the file'}") from None


def _raise_csv_error(e: Exception, path: Path, fmt: str, encoding: str) -> None:
    if "UTF8" in str(e):
        raise DataError(
            f"{path}: not valid {encoding} text{_find_bad_utf8(path, encoding)}; "
            f"re-save it as UTF-8 or set encoding (e.g. 'latin-1') for this file in the spec"
        ) from None
    raise DataError(f"{path}: malformed {fmt.upper()}: {e}") from None


# ------------------------------------------------------------------ value parsing
def _apply_transform(values: np.ndarray, transform: str) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        if transform == "none":
            return values
        if transform == "pxc50_from_um":  # XC50 in uM -> -log10(M)
            return 6.0 - np.log10(values)
        if transform == "neg_log10":
            return -np.log10(values)
        if transform == "log10":
            return np.log10(values)
        if transform == "minus":
            return -values
    raise ValueError(f"unknown transform {transform!r}")


def parse_numeric(
    arr: pa.ChunkedArray | pa.Array, column: str, transform: str = "none"
) -> tuple[pa.Array, list[str | None]]:
    """Parse a label column to float64. Returns the values (null = missing) and per-row reasons.

    Missing values (empty, NA, NaN, ...) are null, not errors. Non-numeric text, infinities and
    values the transform cannot take (log of 0 or a negative) give a reason naming the column.
    """
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    n = len(arr)
    reasons: list[str | None] = [None] * n
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        trimmed = pc.utf8_trim_whitespace(arr)
        try:
            num = pc.cast(trimmed, pa.float64())
            values = num.to_numpy(zero_copy_only=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            values = np.full(n, np.nan)
            for i, s in enumerate(trimmed.to_pylist()):
                if s is None or s in NULL_TOKENS:
                    continue
                if _NUMBER.fullmatch(s):  # Python's float() alone would also take '1_000' and non-ASCII digits
                    values[i] = float(s)
                else:
                    reasons[i] = f"column {column!r}: non-numeric value {s[:40]!r}"
    elif (pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type) or pa.types.is_boolean(arr.type)
          or pa.types.is_decimal(arr.type)):
        values = pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False)
    else:
        raise DataError(f"column {column!r} has type {arr.type}, expected numbers")
    values = np.asarray(values, dtype=np.float64).copy()
    raw = values
    inf = np.isinf(raw)
    for i in np.flatnonzero(inf):
        reasons[i] = f"column {column!r}: infinite value"
    out = _apply_transform(np.where(inf, np.nan, raw), transform)
    bad = ~np.isfinite(out) & np.isfinite(raw) & ~inf
    for i in np.flatnonzero(bad):
        reasons[i] = f"column {column!r}: value {raw[i]:g} cannot be transformed by {transform}"
    out = np.where(np.isfinite(out), out, np.nan)
    mask = np.isnan(out)
    return pa.array(out, pa.float64(), mask=mask), reasons


#: qualifier text (after trimming) -> +1: the true value is above the stated one (a lower bound),
#: -1: below it (an upper bound), 0: the value is fitted. Empty / NA text is a fitted value.
QUALIFIERS = {"": 0, "=": 0, "~": 0, ">": 1, ">=": 1, "<": -1, "<=": -1}


def parse_qualifier(
    arr: pa.ChunkedArray | pa.Array, column: str, direction: int = 1, present: np.ndarray | None = None,
) -> tuple[np.ndarray, list[str | None]]:
    """Qualifier text -> per-row censoring direction of the (transformed) label: ``int8`` with 0 =
    fitted, +1 = censored above (the true value is at least the stored bound), -1 = censored below.

    ``direction`` is -1 when the label's transform (or the column's own convention) reverses order,
    so that '>' on an IC50 in uM becomes "pXC50 below the bound". Unknown text gives a per-row reason,
    except on rows whose value is missing (``present`` False): there is nothing for it to qualify.
    """
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    n = len(arr)
    out = np.zeros(n, dtype=np.int8)
    reasons: list[str | None] = [None] * n
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        arr = pc.cast(arr, pa.string())
    trimmed = pc.utf8_trim_whitespace(arr).to_pylist()
    for i, q in enumerate(trimmed):
        if q is None or q in NULL_TOKENS:
            continue
        d = QUALIFIERS.get(q)
        if present is not None and not present[i]:
            continue
        if d is None:
            reasons[i] = (f"column {column!r}: unknown qualifier {q[:20]!r} "
                          f"(expected one of {', '.join(repr(k) for k in QUALIFIERS)})")
            continue
        out[i] = d * direction
    return out, reasons


def parse_embedding(arr: pa.ChunkedArray | pa.Array, column: str) -> tuple[pa.Array, list[str | None]]:
    """Embeddings to list<float32>. Accepts list columns or text like ``"[0.1, -2.0, ...]"``."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    n = len(arr)
    reasons: list[str | None] = [None] * n
    if pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type) or pa.types.is_fixed_size_list(arr.type):
        return pc.cast(arr, pa.list_(pa.float32())), reasons
    out: list[list[float] | None] = []
    for i, s in enumerate(arr.to_pylist()):
        if s is None:
            out.append(None)
            continue
        text = s.strip().strip("[]")
        try:
            tokens = text.replace(",", " ").split()
            if not all(_NUMBER.fullmatch(x) for x in tokens):
                raise ValueError
            vec = [float(x) for x in tokens]
            if not vec or not all(math.isfinite(x) for x in vec):
                raise ValueError
            out.append(vec)
        except ValueError:
            out.append(None)
            reasons[i] = f"column {column!r}: not a list of finite numbers"
    return pa.array(out, pa.list_(pa.float32())), reasons


def merge_reasons(*cols: list[str | None]) -> list[str | None]:
    out: list[str | None] = []
    for parts in zip(*cols):
        found = [p for p in parts if p]
        out.append("; ".join(found) if found else None)
    return out
