"""Score a file of SMILES with a :class:`~mfray.predict.model.Predictor`, streaming: chunks of rows are
read, standardised and featurised with the model's own recipe, scored and written before the next is
read, so memory does not grow with the input (a 640k-molecule primary screen, or ten of them).

Every input row ends up in exactly one of two files: the predictions (the input columns, in input
order, + ``prediction`` [+ ``prediction_std``, ``lf_source``, embedding]) or the rejected rows (the
input columns + ``row``: the 1-based data row of the input, ``reject_code``, ``reject_reason``).

Chunks are scored in this process (:func:`local_chunks`), or on Ray Data by
:mod:`mfray.run.predict` (the layer that may import Ray), which passes its own chunk source.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from mfray.predict.model import Predictor, Scores
from mfray.utils.errors import MfrayError

#: rows per chunk (a featurise + score unit; bounds memory)
CHUNK_ROWS = 4096
#: how the SMILES column is found when not named
SMILES_NAMES = ("smiles", "canonical_smiles", "isomeric_smiles", "std_smiles", "mol_smiles")
#: columns the output adds (an input column of the same name is an error, not silently overwritten)
ROW_COLUMN = "row"


@dataclass
class PredictSummary:
    """What :func:`predict_file` did (the counts add up: ``n_input == n_scored + n_rejected``)."""

    input: str
    out: str
    rejected_file: str | None
    n_input: int = 0
    n_scored: int = 0
    n_rejected: int = 0
    rejected_by: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    executor: str = "local"
    columns: list[str] = field(default_factory=list)

    def add_rejects(self, codes: list[str]) -> None:
        for c in codes:
            self.rejected_by[c] = self.rejected_by.get(c, 0) + 1


# ---------------------------------------------------------------------------- input
def input_format(path: Path) -> str:
    name = path.name.lower()
    for suffix, fmt in ((".parquet", "parquet"), (".pq", "parquet"), (".tsv", "tsv"), (".tsv.gz", "tsv"),
                        (".csv", "csv"), (".csv.gz", "csv"), (".smi", "csv"), (".txt", "csv")):
        if name.endswith(suffix):
            return fmt
    raise MfrayError(f"{path}: unknown input format (give a .csv, .csv.gz, .tsv or .parquet file)")


def csv_names(path: Path, delimiter: str) -> list[str]:
    import pyarrow as pa_

    with pa_.input_stream(str(path), compression="detect") as f:
        head = f.read(1 << 20).decode("utf-8", errors="replace")
    lines = head.splitlines()
    if not lines:
        raise MfrayError(f"{path}: the file is empty (expected a header row naming the columns)")
    return next(csv.reader([lines[0]], delimiter=delimiter))


def input_columns(path: Path) -> list[str]:
    fmt = input_format(path)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            return pq.ParquetFile(path).schema_arrow.names
        except (pa.ArrowInvalid, OSError) as e:
            raise MfrayError(f"{path}: not a readable Parquet file ({e})") from None
    return csv_names(path, "\t" if fmt == "tsv" else ",")


def count_rows(path: Path) -> int | None:
    """Data rows of the input (Parquet: from its footer; CSV: None, unknown without reading it)."""
    if input_format(path) == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    return None


def read_chunks(path: Path, chunk_rows: int = CHUNK_ROWS) -> Iterator[pa.Table]:
    """The input in tables of ``chunk_rows`` rows (CSV columns as text, exactly as written)."""
    fmt = input_format(path)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        for b in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows):
            yield pa.Table.from_batches([b])
        return
    import pyarrow.csv as pcsv

    delimiter = "\t" if fmt == "tsv" else ","
    names = csv_names(path, delimiter)
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise MfrayError(f"{path}: duplicate column names {dup}")
    reader = pcsv.open_csv(
        str(path), read_options=pcsv.ReadOptions(block_size=1 << 22),
        parse_options=pcsv.ParseOptions(delimiter=delimiter, newlines_in_values=False),
        convert_options=pcsv.ConvertOptions(column_types={n: pa.string() for n in names}, strings_can_be_null=True,
                                            quoted_strings_can_be_null=False))
    pending: list[pa.RecordBatch] = []
    have = 0
    try:
        for b in reader:
            pending.append(b)
            have += b.num_rows
            while have >= chunk_rows:
                t = pa.Table.from_batches(pending)
                yield t.slice(0, chunk_rows)
                rest = t.slice(chunk_rows)
                pending, have = rest.to_batches(), rest.num_rows
    except pa.ArrowInvalid as e:
        raise MfrayError(f"{path}: malformed {fmt.upper()}: {e}") from None
    if have:
        yield pa.Table.from_batches(pending)


def pick_smiles_column(columns: list[str], given: str | None, path: Path) -> str:
    if given is not None:
        if given not in columns:
            raise MfrayError(f"--smiles-column {given!r} is not a column of {path}; its columns: {', '.join(columns)}")
        return given
    lower = {c.lower(): c for c in columns}
    for name in SMILES_NAMES:
        if name in lower:
            return lower[name]
    raise MfrayError(f"{path}: no SMILES column found (looked for {', '.join(SMILES_NAMES)}, any case); name it with "
                     f"--smiles-column; its columns: {', '.join(columns)}")


def pick_lf_column(predictor: Predictor, columns: list[str], given: str | None, path: Path) -> str | None:
    """The input column of measured LF values: ``given``, else a column named like the LF target; None
    when the model reads none."""
    if not predictor.needs_lf_label:
        if given is not None and given not in columns:
            raise MfrayError(f"--lf-column {given!r} is not a column of {path}; its columns: {', '.join(columns)}")
        return None  # the model reads no measured LF value (the caller says so)
    if given is not None:
        if given not in columns:
            raise MfrayError(f"--lf-column {given!r} is not a column of {path}; its columns: {', '.join(columns)}")
        return given
    if predictor.lf_target in columns:
        return predictor.lf_target
    if predictor.lf_label_required:
        raise MfrayError(f"the {predictor.strategy} model reads each molecule's measured LF value "
                         f"({predictor.lf_fidelity}/{predictor.lf_target}, as the dataset stored it"
                         f"{'' if predictor.lf_transform == 'none' else ', before its ' + predictor.lf_transform + ' transform'}"
                         f"): name its column with --lf-column; columns of {path}: {', '.join(columns)}")
    return None  # hybrid_label without measured values: every molecule gets the LF model's prediction


# ---------------------------------------------------------------------------- one chunk
@dataclass
class ChunkResult:
    """A scored chunk: ``ok`` (bool per input row), the scored rows' outputs, rejects' code/reason."""

    ok: np.ndarray
    scores: Scores
    codes: list[str]
    reasons: list[str]


class ChunkScorer:
    """Featurise and score chunks of input rows (one per process or Ray actor)."""

    def __init__(self, predictor: Predictor, smiles_column: str, lf_column: str | None, *, batch_size: int = 256,
                 embeddings: bool = False) -> None:
        from mfray.chem.graph import GraphExtractor
        from mfray.chem.standardize import Standardizer, StandardizerConfig

        self.predictor = predictor
        self.smiles_column = smiles_column
        self.lf_column = lf_column
        self.batch_size = batch_size
        self.embeddings = embeddings
        self.extractor = GraphExtractor(Standardizer(StandardizerConfig.from_dict(predictor.recipe["standardize"])))

    def __call__(self, chunk: pa.Table) -> ChunkResult:
        from mfray.data.sources.tabular import parse_numeric

        n = chunk.num_rows
        smiles = chunk.column(self.smiles_column)
        if not (pa.types.is_string(smiles.type) or pa.types.is_large_string(smiles.type) or pa.types.is_null(smiles.type)):
            raise MfrayError(f"column {self.smiles_column!r} holds {smiles.type}, not SMILES text")
        smiles = smiles.cast(pa.string()).to_pylist()
        codes: list[str | None] = [None] * n
        reasons: list[str | None] = [None] * n
        lf = None
        if self.lf_column is not None:
            values, bad = parse_numeric(chunk.column(self.lf_column), self.lf_column, self.predictor.lf_transform)
            lf = values.to_numpy(zero_copy_only=False).astype(np.float64)
            for i, r in enumerate(bad):
                if r is not None:
                    codes[i], reasons[i] = "bad_lf_value", r
            if self.predictor.lf_label_required:
                for i in np.flatnonzero(np.isnan(lf)):
                    if codes[i] is None:
                        codes[i], reasons[i] = "no_lf_value", (f"column {self.lf_column!r}: no measured LF value (the "
                                                               f"{self.predictor.strategy} model reads it)")
        todo = [i for i in range(n) if codes[i] is None]
        out = self.extractor([smiles[i] for i in todo])
        good = []
        for j, i in enumerate(todo):
            if out.ok[j]:
                good.append(j)
            else:
                codes[i], reasons[i] = out.reject_code[j], out.reject_reason[j]
        ok = np.array([c is None for c in codes], dtype=bool)
        cols = out.graph_columns()
        take = pa.array(good, pa.int64())
        rows = pa.table({"mol_id": pa.array(np.arange(len(good), dtype=np.int64)),
                         **{k: v.take(take) for k, v in cols.items()}})
        lf_ok = lf[ok] if lf is not None else None
        if lf_ok is None and self.predictor.needs_lf_label:
            lf_ok = np.full(int(ok.sum()), np.nan)  # hybrid_label with no measured values at all
        scores = self.predictor.score(rows, lf_ok, batch_size=self.batch_size, embeddings=self.embeddings)
        return ChunkResult(ok=ok, scores=scores, codes=[c for c in codes if c is not None],
                           reasons=[r for r in reasons if r is not None])


def output_columns(predictor: Predictor) -> list[str]:
    ts = predictor.targets
    return ["prediction"] if len(ts) == 1 else [f"prediction_{t}" for t in ts]


def scored_table(chunk: pa.Table, res: ChunkResult, predictor: Predictor, csv_out: bool) -> pa.Table:
    """The scored rows of ``chunk`` with the model's outputs appended."""
    kept = chunk.filter(pa.array(res.ok))
    s = res.scores
    names = output_columns(predictor)
    for j, name in enumerate(names):
        kept = kept.append_column(name, pa.array(s.mean[:, j], pa.float64()))
    if len(predictor.members) > 1:
        for j, name in enumerate(names):
            kept = kept.append_column(f"{name}_std", pa.array(s.std[:, j], pa.float64()))
    if s.lf_source is not None:
        kept = kept.append_column("lf_source", pa.array(s.lf_source, pa.string()))
    if s.embedding is not None:
        emb = s.embedding.astype(np.float32)
        if csv_out:
            for k in range(emb.shape[1]):
                kept = kept.append_column(f"embedding_{k}", pa.array(emb[:, k]))
        else:
            kept = kept.append_column("embedding", pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), emb.shape[1]))
    return kept


def rejected_table(chunk: pa.Table, res: ChunkResult, first_row: int) -> pa.Table:
    bad = ~res.ok
    rows = np.flatnonzero(bad) + first_row
    t = chunk.filter(pa.array(bad))
    return (t.append_column(ROW_COLUMN, pa.array(rows, pa.int64()))
             .append_column("reject_code", pa.array(res.codes, pa.string()))
             .append_column("reject_reason", pa.array(res.reasons, pa.string())))


# ---------------------------------------------------------------------------- output
class _Writer:
    """Streams tables to one CSV or Parquet file, written under a temporary name and renamed at the end
    (an interrupted run leaves no half-written output)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.csv = not path.name.lower().endswith((".parquet", ".pq"))
        self.tmp = path.with_name(f".{path.name}.partial")
        self.writer: Any = None
        self.schema: pa.Schema | None = None

    def write(self, table: pa.Table) -> None:
        if self.writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.schema = table.schema
            if self.csv:
                import pyarrow.csv as pcsv

                # quotes only where a value needs them: text columns of numbers read back as numbers
                self.writer = pcsv.CSVWriter(str(self.tmp), table.schema,
                                             write_options=pcsv.WriteOptions(quoting_style="needed"))
            else:
                import pyarrow.parquet as pq

                self.writer = pq.ParquetWriter(str(self.tmp), table.schema, compression="zstd")
        if table.num_rows:
            self.writer.write_table(table.cast(self.schema))

    def close(self, empty_schema: pa.Schema | None = None) -> None:
        if self.writer is None and empty_schema is not None:
            self.write(empty_schema.empty_table())
        if self.writer is not None:
            self.writer.close()
            self.tmp.replace(self.path)

    def abort(self) -> None:
        if self.writer is not None:
            try:
                self.writer.close()
            finally:
                self.tmp.unlink(missing_ok=True)


def rejected_path(out: Path) -> Path:
    name = out.name
    for suffix in (".parquet", ".pq", ".csv"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return out.with_name(f"{name}.rejected.csv")


def _check_names(columns: list[str], predictor: Predictor, embeddings: bool, path: Path) -> None:
    added = set(output_columns(predictor)) | {f"{c}_std" for c in output_columns(predictor)} | {"lf_source", "embedding",
                                                                                            ROW_COLUMN, "reject_code",
                                                                                            "reject_reason"}
    clash = sorted(added & set(columns))
    if clash:
        raise MfrayError(f"{path}: column(s) {clash} would be overwritten by mfray predict's output; rename them")


# ---------------------------------------------------------------------------- driver
def predict_file(predictor: Predictor, input_path: str | Path, out: str | Path, *, smiles_column: str | None = None,
                 lf_column: str | None = None, embeddings: bool = False, batch_size: int = 256,
                 chunk_rows: int = CHUNK_ROWS, scored: ScoredChunks | None = None, executor: str = "local",
                 on_rows: Callable[[int], None] | None = None) -> PredictSummary:
    """Score every row of ``input_path`` into ``out`` (CSV or Parquet by its suffix); rejected rows go to
    :func:`rejected_path` (only written when there are any). ``scored`` yields the scored chunks (default:
    :func:`local_chunks`, in this process; :func:`mfray.run.predict.predict_file` passes Ray Data's and
    names it in ``executor``). ``on_rows(n)`` is called as rows are done."""
    src, dst = Path(input_path), Path(out)
    if not src.exists():
        raise MfrayError(f"{src}: input does not exist")
    if src.resolve() == dst.resolve():
        raise MfrayError(f"--out {dst} is the input file")
    columns = input_columns(src)
    smiles = pick_smiles_column(columns, smiles_column, src)
    lf_col = pick_lf_column(predictor, columns, lf_column, src)
    _check_names(columns, predictor, embeddings, src)
    summary = PredictSummary(input=str(src), out=str(dst), rejected_file=None, executor=executor, columns=columns)
    t0 = time.perf_counter()
    writer = _Writer(dst)
    rej_path = rejected_path(dst)
    rejects = _Writer(rej_path)
    rejects.csv = True
    csv_out = writer.csv
    try:
        results = (scored or local_chunks)(predictor, src, smiles, lf_col, batch_size=batch_size,
                                           embeddings=embeddings, chunk_rows=chunk_rows)
        for chunk, res in results:
            first = summary.n_input + 1
            summary.n_input += chunk.num_rows
            writer.write(scored_table(chunk, res, predictor, csv_out))
            n_ok = int(res.ok.sum())
            summary.n_scored += n_ok
            if n_ok < chunk.num_rows:
                rejects.write(rejected_table(chunk, res, first))
                summary.n_rejected += chunk.num_rows - n_ok
                summary.add_rejects(res.codes)
            if on_rows:
                on_rows(chunk.num_rows)
    except BaseException:
        writer.abort()
        rejects.abort()
        raise
    if summary.n_scored == 0:
        writer.abort()
        rejects.close()
        summary.rejected_file = str(rej_path) if summary.n_rejected else None
        summary.seconds = time.perf_counter() - t0
        where = f"; every row is in {rej_path} with its reason" if summary.n_rejected else " (no data rows)"
        raise MfrayError(f"{src}: no molecule could be scored: {summary.n_rejected} of {summary.n_input} rows rejected"
                         f"{_reasons(summary)}{where}")
    writer.close()
    rejects.close()
    summary.rejected_file = str(rej_path) if summary.n_rejected else None
    if not summary.n_rejected:
        rej_path.unlink(missing_ok=True)  # a stale file of an earlier run would mislead
    summary.seconds = time.perf_counter() - t0
    return summary


def _reasons(summary: PredictSummary) -> str:
    if not summary.rejected_by:
        return ""
    return " (" + ", ".join(f"{k} {v}" for k, v in sorted(summary.rejected_by.items(), key=lambda x: -x[1])) + ")"


def estimated_rows(path: Path) -> int:
    """Data rows of the input: exact for Parquet; for CSV, bytes / mean line length of its first MiB."""
    n = count_rows(path)
    if n is not None:
        return n
    import pyarrow as pa_

    size = path.stat().st_size
    with pa_.input_stream(str(path), compression="detect") as f:
        head = f.read(1 << 20)
    lines = head.count(b"\n")
    if lines <= 1 or len(head) < (1 << 20):
        return max(lines - 1, 0)
    ratio = 4.0 if path.name.lower().endswith(".gz") else 1.0  # compressed: ~4x more text than bytes
    return int(size * ratio / (len(head) / lines))


#: ``scored(predictor, src, smiles_column, lf_column, *, batch_size, embeddings, chunk_rows)`` ->
#: (input chunk, its result) pairs in input order
ScoredChunks = Callable[..., Iterator[tuple[pa.Table, "ChunkResult"]]]


def local_chunks(predictor: Predictor, src: Path, smiles: str, lf_column: str | None, *, batch_size: int,
                 embeddings: bool, chunk_rows: int) -> Iterator[tuple[pa.Table, ChunkResult]]:
    """The input's chunks scored one at a time in this process."""
    scorer = ChunkScorer(predictor, smiles, lf_column, batch_size=batch_size, embeddings=embeddings)
    for chunk in read_chunks(src, chunk_rows):
        yield chunk, scorer(chunk)
