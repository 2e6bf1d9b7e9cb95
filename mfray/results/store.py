"""The central results table: one Parquet part per finished run, partitioned by study.

Layout (Hive-partitioned)::

    <root>/study=<study>/run-<run_key>.parquet

Every part has the base columns (:data:`mfray.results.record.BASE_SCHEMA`) plus the ``params_*`` columns
of its own run's configuration, so parts differ in their params columns. Read with plain tools::

    files = glob.glob(f"{root}/study=*/*.parquet")
    pl.concat([pl.read_parquet(f) for f in files], how="diagonal_relaxed")       # every column
    pl.scan_parquet(f"{root}/study=*/*.parquet", extra_columns="ignore").collect() # columns of the first part
    pyarrow.dataset.dataset(root, partitioning="hive",
                            schema=pa.unify_schemas([pq.read_schema(f) for f in files]))

Every part holds one run's rows (:meth:`mfray.results.record.RunRecord.to_arrow`), the ``study`` column
included, so a part read on its own is complete. A part is written once: :meth:`ResultsStore.append_run`
skips a run whose part exists, so a killed-and-restarted study never writes a row twice. Writes go
to a dot-prefixed temporary file in the same folder and are renamed into place; readers skip
dot-files and ``*.tmp``, so a crash mid-write leaves no partial part visible.

All I/O goes through :mod:`pyarrow.fs`: ``root`` may be a local path today, and a URI such as
``s3://bucket/results`` resolves through :meth:`pyarrow.fs.FileSystem.from_uri` (an object-store put
is atomic by itself; the temp-then-move is kept so the code path is the same).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from mfray.results.record import _STUDY_RE, BASE_SCHEMA, ResultsError, RunRecord

PART_PREFIX = "run-"
PART_SUFFIX = ".parquet"
_SORT = ["study", "task", "setting", "censored", "strategy", "model", "readout", "split_seed", "fold", "metric"]


def base_frame() -> pl.DataFrame:
    """An empty frame with the base schema (what an empty store reads as)."""
    return pl.from_arrow(BASE_SCHEMA.empty_table())  # type: ignore[return-value]


def _resolve(root: str | os.PathLike[str]) -> tuple[pafs.FileSystem, str]:
    s = os.fspath(root)
    if "://" in s:
        fs, path = pafs.FileSystem.from_uri(s)
        return fs, path.rstrip("/")
    return pafs.LocalFileSystem(), Path(s).expanduser().resolve().as_posix()


class ResultsStore:
    """Append-once run parts under ``root`` and read them back as one Polars frame.

    Args:
        root: local folder or filesystem URI (anything :meth:`pyarrow.fs.FileSystem.from_uri` takes).
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.uri = os.fspath(root)
        self.fs, self.root = _resolve(root)
        #: parts the last :meth:`read` could not use (truncated, empty, not a results part): (path, why)
        self.skipped: list[tuple[str, str]] = []

    def __repr__(self) -> str:
        return f"ResultsStore({self.uri!r})"

    # ------------------------------------------------------------------ paths
    def _study_dir(self, study: str) -> str:
        return f"{self.root}/study={study}"

    def part_path(self, study: str, run_key: str) -> str:
        """Where the part of run ``run_key`` of ``study`` lives (a path on :attr:`fs`)."""
        return f"{self._study_dir(study)}/{PART_PREFIX}{run_key}{PART_SUFFIX}"

    def _exists(self, path: str) -> bool:
        return self.fs.get_file_info(path).type == pafs.FileType.File

    def _parts(self, study: str | None = None) -> list[str]:
        base = self._study_dir(study) if study is not None else self.root
        if self.fs.get_file_info(base).type != pafs.FileType.Directory:
            return []
        infos = self.fs.get_file_info(pafs.FileSelector(base, recursive=study is None))
        out = []
        for info in infos:
            if info.type != pafs.FileType.File:
                continue
            parent, _, name = info.path.rpartition("/")
            if (name.startswith(PART_PREFIX) and name.endswith(PART_SUFFIX)
                    and parent.rpartition("/")[2].startswith("study=")):
                out.append(info.path)
        return sorted(out)

    # ------------------------------------------------------------------ writing
    def has_run(self, run_key: str, study: str | None = None) -> bool:
        """Whether a part for ``run_key`` exists (in ``study``, or in any study when None)."""
        if study is not None:
            return self._exists(self.part_path(study, run_key))
        return any(self._exists(self.part_path(s, run_key)) for s in self.studies())

    def append_run(self, record: RunRecord) -> bool:
        """Write ``record``'s rows as a new part; False (nothing written) when the run is already stored.

        Two processes racing on the same run both rename a complete part onto the same name: the
        store still holds one part (one set of rows) for the run.
        """
        dest = self.part_path(record.study, record.run_key)
        if self._exists(dest):
            return False
        self._write_atomic(record.to_arrow(), dest)
        return True

    def append_runs(self, records: Iterable[RunRecord]) -> int:
        """Append several runs; returns how many were new."""
        return sum(self.append_run(r) for r in records)

    def _write_atomic(self, table: pa.Table, dest: str) -> None:
        folder, _, name = dest.rpartition("/")
        self.fs.create_dir(folder, recursive=True)
        # dot-prefixed and not ending in .parquet: invisible to this reader, to polars globs and to
        # pyarrow.dataset (which ignores '.'/'_' prefixes) until it is renamed into place
        tmp = f"{folder}/.{name}.{uuid.uuid4().hex}.tmp"
        try:
            with self.fs.open_output_stream(tmp) as sink:
                pq.write_table(table, sink, compression="zstd")
            self.fs.move(tmp, dest)
        finally:
            try:
                if self.fs.get_file_info(tmp).type != pafs.FileType.NotFound:
                    self.fs.delete_file(tmp)
            except OSError:  # pragma: no cover - best effort clean-up; readers ignore temp files
                pass

    def clean_temp(self) -> int:
        """Delete temporary files left by writers that were killed mid-write; returns how many.

        Call it only when no writer is running (a live writer's temp file would be deleted too).
        """
        if self.fs.get_file_info(self.root).type != pafs.FileType.Directory:
            return 0
        n = 0
        for info in self.fs.get_file_info(pafs.FileSelector(self.root, recursive=True)):
            name = info.path.rpartition("/")[2]
            if info.type == pafs.FileType.File and name.startswith(".") and name.endswith(".tmp"):
                self.fs.delete_file(info.path)
                n += 1
        return n

    # ------------------------------------------------------------------ reading
    def studies(self) -> list[str]:
        """Names of the studies that have at least one part, sorted."""
        if self.fs.get_file_info(self.root).type != pafs.FileType.Directory:
            return []
        out = []
        for info in self.fs.get_file_info(pafs.FileSelector(self.root)):
            name = info.path.rpartition("/")[2]
            if info.type == pafs.FileType.Directory and name.startswith("study="):
                study = name.removeprefix("study=")
                if self._parts(study):
                    out.append(study)
        return sorted(out)

    def run_keys(self, study: str | None = None) -> list[str]:
        return [p.rpartition("/")[2][len(PART_PREFIX):-len(PART_SUFFIX)] for p in self._parts(study)]

    def read(self, study: str | None = None) -> pl.DataFrame:
        """All rows (of one study, or of all), sorted; parts with different ``params_*`` columns union.

        Column types of the same ``params_*`` column that differ between runs are relaxed to a
        common supertype (int + float -> float, anything + str -> str). An empty store (or study)
        reads as an empty frame with the base schema.
        """
        if study is not None and not _STUDY_RE.match(study):
            raise ResultsError(f"study name {study!r} must match {_STUDY_RE.pattern}")
        parts = self._parts(study)
        self.skipped = []
        if not parts:
            return base_frame()
        need = {f.name for f in BASE_SCHEMA}

        def load(path: str) -> pl.DataFrame | str:
            """The part's rows, or why it cannot be used (one bad part must not hide the others)."""
            try:
                table = pq.read_table(path, filesystem=self.fs)
            except Exception as e:  # truncated, empty, not Parquet, unreadable
                return f"unreadable: {type(e).__name__}: {str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}"
            missing = sorted(need - set(table.column_names))
            if missing:
                return f"not a results part: no column(s) {', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else "")
            try:
                return pl.concat([base_frame(), pl.from_arrow(table)], how="diagonal_relaxed")  # types checked here
            except Exception as e:
                return f"columns of the wrong type: {type(e).__name__}: {str(e).strip().splitlines()[0][:200]}"

        if len(parts) > 8:
            with ThreadPoolExecutor(max_workers=8) as pool:
                loaded = list(pool.map(load, parts))
        else:
            loaded = [load(p) for p in parts]
        frames = []
        for path, got in zip(parts, loaded, strict=True):
            if isinstance(got, str):
                self.skipped.append((path, got))
            else:
                frames.append(got)
        if not frames:
            return base_frame()
        df = pl.concat([base_frame(), *frames], how="diagonal_relaxed")
        base = [f.name for f in BASE_SCHEMA]
        params = sorted(c for c in df.columns if c not in base)
        return df.select(base + params).sort(_SORT, nulls_last=True)
