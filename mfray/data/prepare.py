"""Source -> raw record Parquet files (step 1 of the data path), streamed, with progress callbacks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq

from mfray.data.sources.base import Source


def write_raw(source: Source, out_dir: Path, chunk_rows: int = 65536,
              on_chunk: Callable[[int], None] | None = None) -> list[str]:
    """Stream ``source`` into ``out_dir/raw-*.parquet`` (one file per chunk); returns the file paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for i, tbl in enumerate(source.iter_tables(chunk_rows=chunk_rows)):
        path = out_dir / f"raw-{i:05d}.parquet"
        pq.write_table(tbl, path, compression="lz4")
        files.append(str(path))
        if on_chunk is not None:
            on_chunk(tbl.num_rows)
    return files
