"""Featurise a dataset into a graph store, once: Ray Data ``map_batches`` over raw record shards.

Plan: (1) stream the source into raw record shards (driver, constant memory); (2) standardise and
extract graphs with Ray Data (``executor="ray"``, one CPU per worker) or in this process
(``executor="local"``); ``"auto"`` (the default) picks the process below :func:`local_below` rows,
where starting Ray would cost more than it saves; (3) finalise the store (ids, quarantine, duplicates, splits) and write its
manifest last, atomically: a store either exists complete or not at all, so a killed run leaves no
half-store behind and a re-run is a cache hit only when the previous run finished.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from mfray.data.featurize import extractor_for, featurize_table
from mfray.data.prepare import write_raw
from mfray.data.sources import build_source
from mfray.data.specs import DatasetSpec
from mfray.data.store import MANIFEST, GraphStore, default_root, finalize, store_key
from mfray.utils.errors import DataError, MfrayError, storage_errors
from mfray.utils.process import pid_alive

#: datasets with fewer source rows than this are featurised in-process by ``executor="auto"``
LOCAL_BELOW = 50_000
#: how often Ray Data re-runs a featurisation task whose worker died before the shard is featurised in
#: separate processes, bisected down to the molecules that crash (:func:`featurize_isolated`)
WORKER_RETRIES = 1
#: environment variable that overrides :data:`LOCAL_BELOW` (``mfray featurize --local-below`` wins over it)
LOCAL_BELOW_ENV = "MFRAY_LOCAL_BELOW"


@dataclass
class FeaturizeResult:
    store: GraphStore
    cache_hit: bool
    seconds: float
    executor: str | None = None  # "local" or "ray" as run (None: a cache hit ran nothing)


def local_below(rows: int | None = None) -> int:
    """The row count below which ``executor="auto"`` featurises in this process: ``rows`` if given,
    else ``$MFRAY_LOCAL_BELOW``, else :data:`LOCAL_BELOW`.

    One process featurises ~1,300 (a busy core) to ~2,500 molecules/s; starting a local Ray and its
    workers costs 10-20 s on a laptop and can at best divide the rest by the core count. Measured on 2
    busy cores: 655 rows 2.5 s in-process vs 22.7 s with Ray; 20,010 rows 21 s vs 37 s.
    """
    if rows is None:
        raw = os.environ.get(LOCAL_BELOW_ENV)
        if raw is None or not raw.strip():
            return LOCAL_BELOW
        try:
            rows = int(raw)
        except ValueError:
            raise MfrayError(f"${LOCAL_BELOW_ENV}={raw!r}: give a number of rows (0: always use Ray)") from None
        where = f"${LOCAL_BELOW_ENV}"
    else:
        where = "--local-below"
    if rows < 0:
        raise MfrayError(f"{where} {rows}: give a number of rows >= 0 (0: always use Ray)")
    return rows


def choose_executor(executor: str, n_rows: int, threshold: int | None = None) -> Literal["ray", "local"]:
    """Where to featurise ``n_rows`` source rows: ``executor`` as given (``"ray"`` or ``"local"``), or for
    ``"auto"`` ``"local"`` below :func:`local_below` ``(threshold)`` rows, else ``"ray"``. No rows at all:
    ``"local"``."""
    if executor not in ("auto", "ray", "local"):
        raise MfrayError(f"executor {executor!r}: expected auto, ray or local")
    limit = local_below(threshold) if executor == "auto" else None  # validated even when there is nothing to do
    if n_rows == 0:
        return "local"
    if limit is None:
        return executor  # type: ignore[return-value]
    return "local" if n_rows < limit else "ray"


_EXTRACTORS: dict[str, Any] = {}


def _featurize_shards(batch: dict[str, Any], spec_json: dict[str, Any], out_dir: str, batch_size: int) -> dict[str, Any]:
    """Ray Data task: featurise whole raw shards (paths in ``batch["path"]``), write one output file
    each, and return only their row counts. Data moves through files, not the object store, and
    each shard is exactly one task, so every worker gets work whatever Ray's read planner would
    merge. The RDKit pipeline is built once per worker process and reused."""
    import numpy as np

    from mfray.utils.hashing import hash_obj

    key = hash_obj(spec_json)
    if key not in _EXTRACTORS:
        _EXTRACTORS[key] = extractor_for(DatasetSpec.model_validate(spec_json))
    extractor = _EXTRACTORS[key]
    counts = []
    for path in batch["path"]:
        name = Path(str(path)).stem
        pf = pq.ParquetFile(str(path))
        parts = [featurize_table(pa.Table.from_batches([b]), extractor) for b in pf.iter_batches(batch_size=batch_size)]
        out = pa.concat_tables(parts) if parts else None
        if out is not None:
            dest = Path(out_dir) / f"{name}.parquet"
            tmp = dest.with_suffix(".tmp")
            pq.write_table(out, tmp, compression="lz4")
            os.replace(tmp, dest)
        counts.append(out.num_rows if out is not None else 0)
    return {"path": batch["path"], "rows": np.asarray(counts, dtype=np.int64)}


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    prog = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), disable=not enabled, transient=False)
    return prog


def featurize_dataset(
    spec: DatasetSpec,
    out_root: str | os.PathLike[str] | None = None,
    *,
    executor: Literal["auto", "ray", "local"] = "auto",
    local_below_rows: int | None = None,
    ray_init: Callable[[], Any] | None = None,
    num_workers: int | None = None,
    batch_size: int = 4096,
    chunk_rows: int = 16384,
    force: bool = False,
    progress: bool = True,
    log=print,
) -> FeaturizeResult:
    """Featurise ``spec``'s dataset into ``out_root/<name>/<key>`` unless that store already exists.

    ``executor``: ``"auto"`` (in this process below ``local_below_rows`` source rows, see
    :func:`local_below`; else Ray Data), ``"ray"`` or ``"local"``. ``ray_init`` starts or connects
    to Ray when Ray Data runs (default :func:`mfray.run.runtime.ensure_ray`): a cache hit or an
    in-process run never starts Ray.
    """
    t0 = time.perf_counter()
    choose_executor(executor, 0, local_below_rows)  # a bad executor or threshold fails before any work
    root = Path(out_root) if out_root else default_root()
    source = build_source(spec)
    fingerprint = source.fingerprint()
    extractor = extractor_for(spec)
    key = store_key(spec, fingerprint, extractor.spec())
    dest = root / spec.name / key
    if (dest / MANIFEST).exists() and not force:
        return FeaturizeResult(GraphStore(dest), cache_hit=True, seconds=time.perf_counter() - t0)
    if hasattr(source, "check_columns"):
        source.check_columns()  # fail before any work, naming the file and columns

    with storage_errors(root):  # a full or read-only disk is one message naming root
        root.mkdir(parents=True, exist_ok=True)
        removed = remove_leftover_work(root)
        if removed:
            log(f"removed {removed} work folder(s) left in {root} by featurise runs that were killed")
        work = Path(tempfile.mkdtemp(prefix=f".{spec.name}-{key}.{_HOST}.{os.getpid()}.", dir=root))
        timings: dict[str, float] = {}
        try:
            # 1. source -> raw shards
            t = time.perf_counter()
            with _progress(progress) as prog:
                task = prog.add_task(f"reading {spec.name}", total=None)
                raw_files = write_raw(source, work / "raw", chunk_rows=chunk_rows,
                                      on_chunk=lambda n: prog.advance(task, n))
            timings["read"] = round(time.perf_counter() - t, 3)
            n_rows = sum(pq.ParquetFile(f).metadata.num_rows for f in raw_files)
            if n_rows == 0:
                raise DataError(f"dataset {spec.name!r} ({spec.spec_path or 'spec'}) has no data rows: only a header "
                                f"(or schema) in {_source_files(source) or 'its source'}")
            chosen = choose_executor(executor, n_rows, local_below_rows)
            how = "in this process" if chosen == "local" else "with Ray Data"
            if executor == "auto":
                how += (f" (under {local_below(local_below_rows):,} rows)" if chosen == "local"
                        else f" ({local_below(local_below_rows):,} rows or more)")
            log(f"read {n_rows:,} rows from {spec.name} into {len(raw_files)} shard(s); featurising {how}")

            # 2. featurise
            t = time.perf_counter()
            feat_dir = work / "featurized"
            feat_dir.mkdir()
            if chosen == "local":
                _featurize_local(raw_files, feat_dir, extractor, n_rows, batch_size=batch_size, progress=progress)
            else:
                _featurize_with_ray(spec, raw_files, feat_dir, num_workers=num_workers, batch_size=batch_size,
                                    progress=progress, ray_init=ray_init, log=log)
            timings["featurize"] = round(time.perf_counter() - t, 3)
            feat_files = sorted(str(p) for p in feat_dir.glob("*.parquet"))
            if not feat_files:
                raise RuntimeError("featurisation produced no output files")

            # 3. finalise into a fresh folder, then move it into place
            staged = work / "store"
            finalize(feat_files, spec, staged, key=key, extractor_spec=extractor.spec(),
                     source_fingerprint=fingerprint,
                     timings={**timings, "executor": chosen, "num_workers": num_workers or 0})
            if dest.exists():
                shutil.rmtree(dest)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged, dest)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return FeaturizeResult(GraphStore(dest), cache_hit=False, seconds=time.perf_counter() - t0, executor=chosen)


def _featurize_local(raw_files: list[str], feat_dir: Path, extractor: Any, n_rows: int, *, batch_size: int,
                     progress: bool) -> None:
    """Featurise the raw shards in this process, one Parquet part per batch."""
    with _progress(progress) as prog:
        task = prog.add_task("featurising", total=n_rows)
        for i, f in enumerate(raw_files):
            pf = pq.ParquetFile(f)
            for j, batch in enumerate(pf.iter_batches(batch_size=batch_size)):
                out = featurize_table(pa.Table.from_batches([batch]), extractor)
                pq.write_table(out, feat_dir / f"part-{i:05d}-{j:05d}.parquet", compression="lz4")
                prog.advance(task, batch.num_rows)


_HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())
#: a featurise work folder: .<dataset>-<key>.<host>.<pid>.<random> in the store root
_WORK_DIR = re.compile(r"^\..+-[0-9a-f]+\.(?P<host>[A-Za-z0-9_-]+)\.(?P<pid>\d+)\.[^.]+$")


def remove_leftover_work(root: Path) -> int:
    """Delete the work folders of featurise runs on this machine whose process is gone (a killed run
    leaves its raw shards behind; a finished or failed one removes its own). Returns how many."""
    n = 0
    for p in root.glob(".*"):
        m = _WORK_DIR.match(p.name)
        if not m or not p.is_dir() or m["host"] != _HOST:
            continue
        if pid_alive(int(m["pid"])):
            continue  # still running
        shutil.rmtree(p, ignore_errors=True)
        n += 1
    return n


def _source_files(source: Any) -> str:
    """The source's data files, for messages ('' when it has none of its own, e.g. a download)."""
    files = getattr(getattr(source, "src", None), "files", None)
    return ", ".join(str(source.path(k)) for k in files) if files else ""


def _resplit(files: list[str], n: int) -> list[str]:
    tbl = pa.concat_tables([pq.read_table(f) for f in files])
    out_dir = Path(files[0]).parent
    for f in files:
        os.remove(f)
    step = -(-tbl.num_rows // n)
    out = []
    for i in range(n):
        part = tbl.slice(i * step, step)
        if part.num_rows:
            path = out_dir / f"raw-split-{i:05d}.parquet"
            pq.write_table(part, path)
            out.append(str(path))
    return out


def _featurize_with_ray(spec: DatasetSpec, raw_files: list[str], feat_dir: Path, *, num_workers: int | None,
                        batch_size: int, progress: bool, ray_init: Callable[[], Any] | None = None,
                        log: Callable[[str], Any] = print) -> None:
    import logging

    import ray

    from mfray.run.runtime import ensure_ray

    (ray_init or ensure_ray)()
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = progress
    ctx.verbose_stats_logs = False
    if not progress:  # without a terminal Ray Data logs progress lines instead of bars: keep them out
        logging.getLogger("ray.data").setLevel(logging.ERROR)
    n = num_workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
    if len(raw_files) < n:  # a small dataset: one raw shard per worker so all of them get work
        raw_files = _resplit(raw_files, n)
    ds = ray.data.from_items([{"path": f} for f in raw_files], override_num_blocks=len(raw_files))
    spec_json = spec.model_dump(mode="json")
    with warnings.catch_warnings():
        # Ray Data retries a task whose worker dies forever by default, so one crashing molecule would hang
        # the run. Ray 2.60 takes max_retries only through the (deprecated) ray_remote_args keywords.
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
        ds = ds.map_batches(
            _featurize_shards,
            fn_kwargs={"spec_json": spec_json, "out_dir": str(feat_dir), "batch_size": batch_size},
            batch_size=1,
            compute=ray.data.TaskPoolStrategy(size=n),
            num_cpus=1,
            max_retries=WORKER_RETRIES,
        )
    try:
        ds.take_all()
    except (ray.exceptions.RayError, RuntimeError) as e:
        crashed = [f for f in raw_files if not (feat_dir / f"{Path(f).stem}.parquet").exists()]
        if not crashed:
            raise
        log(f"{len(crashed)} shard(s) failed in Ray Data after {WORKER_RETRIES} retr{'y' if WORKER_RETRIES == 1 else 'ies'} "
            f"({type(e).__name__}); featurising them in separate processes to find the molecules at fault")
        for f in crashed:
            n_bad = featurize_isolated(f, feat_dir / f"{Path(f).stem}.parquet", spec_json, batch_size)
            log(f"{Path(f).name}: {n_bad} molecule(s) crashed the featuriser and are quarantined as 'featurizer_crash'")
    rows = sum(pq.ParquetFile(feat_dir / f"{Path(f).stem}.parquet").metadata.num_rows for f in raw_files)
    expected = sum(pq.ParquetFile(f).metadata.num_rows for f in raw_files)
    if rows != expected:
        raise RuntimeError(f"featurisation returned {rows} rows for {expected} raw rows")


def _featurize_rows_child(raw_path: str, start: int, stop: int, dest: str, spec_path: str, batch_size: int) -> None:
    """Child-process entry of :func:`featurize_isolated`: featurise rows ``[start, stop)`` of a raw shard."""
    import json

    spec = DatasetSpec.model_validate(json.loads(Path(spec_path).read_text()))
    table = pq.read_table(raw_path).slice(start, stop - start)
    extractor = extractor_for(spec)
    parts = [featurize_table(b, extractor) for b in _table_batches(table, batch_size)]
    tmp = dest + ".tmp"
    pq.write_table(pa.concat_tables(parts), tmp, compression="lz4")
    os.replace(tmp, dest)


def _table_batches(table: pa.Table, batch_size: int) -> list[pa.Table]:
    return [table.slice(i, batch_size) for i in range(0, max(table.num_rows, 1), batch_size)]


def featurize_isolated(raw_path: str, dest: Path, spec_json: dict[str, Any], batch_size: int = 4096) -> int:
    """Featurise a raw shard whose Ray task kept dying, in child processes, and quarantine the molecules
    that take a process down (code ``featurizer_crash``). Returns how many were quarantined.

    A child featurises a range of rows; when it dies (a segfault in RDKit, say) the range is halved
    and each half tried again, down to single rows: ~2 log2(rows) extra processes per bad molecule.
    Rows are written in their shard order; every row comes back, stored or quarantined.
    """
    import json
    import subprocess
    import sys

    extractor = extractor_for(DatasetSpec.model_validate(spec_json))
    raw = pq.read_table(raw_path)
    work = Path(tempfile.mkdtemp(prefix=".isolate.", dir=Path(dest).parent))
    spec_path = work / "spec.json"
    spec_path.write_text(json.dumps(spec_json))
    crashed = 0
    code = ("import sys; from mfray.run.featurize import _featurize_rows_child as f; "
            "f(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], int(sys.argv[6]))")

    def run(start: int, stop: int) -> list[pa.Table]:
        nonlocal crashed
        out = work / f"rows-{start}-{stop}.parquet"
        proc = subprocess.run([sys.executable, "-c", code, raw_path, str(start), str(stop), str(out), str(spec_path),
                               str(batch_size)], capture_output=True, text=True)
        if proc.returncode == 0:
            return [pq.read_table(out)]
        if stop - start > 1:
            mid = (start + stop) // 2
            return run(start, mid) + run(mid, stop)
        crashed += 1
        how = (f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit status {proc.returncode}")
        last = (proc.stderr.strip().splitlines() or [""])[-1][:200]
        row = raw.slice(start, 1)
        row = row.set_column(row.schema.get_field_index("reject"), "reject",
                             pa.array([f"the featuriser's process died on this molecule ({how}{': ' + last if last else ''})"],
                                      pa.string()))
        res = featurize_table(row, extractor)  # a rejected row is not parsed again: empty graph, reason kept
        return [res.set_column(res.schema.get_field_index("reject_code"), "reject_code",
                               pa.array(["featurizer_crash"], pa.string()))]

    try:
        parts = run(0, raw.num_rows) if raw.num_rows else []
        tmp = Path(str(dest) + ".tmp")
        pq.write_table(pa.concat_tables(parts) if parts else featurize_table(raw, extractor), tmp, compression="lz4")
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return crashed


def node_store_path(store_path: str, driver_cache: str | None = None) -> str:
    """Where this node keeps the store the driver planned at ``store_path``.

    ``driver_cache`` is the driver's own graph-store root (:func:`mfray.data.store.default_root` there).
    A node whose root is the same (a local Ray's workers, or nodes sharing ``MFRAY_CACHE``) uses the
    planned path; a node set up with a cache of its own (a different ``MFRAY_CACHE``) keeps the store
    in its own root under the same ``<dataset>/<key>``.
    """
    own = default_root()
    if driver_cache is None or os.path.abspath(str(own)) == os.path.abspath(driver_cache):
        return store_path
    p = Path(store_path)
    return str(own / p.parent.name / p.name)


def ensure_local_store(store_path: str, dataset_spec: dict[str, Any] | None, driver_cache: str | None = None) -> str:
    """The path of the graph store the driver planned at ``store_path`` on this node
    (:func:`node_store_path`), built from ``dataset_spec`` (a dumped :class:`DatasetSpec` with its
    ``spec_path``) when this node does not have it yet.

    On a cluster without a shared ``MFRAY_CACHE``, a worker node builds its own copy once: the store
    key is a content hash of the spec and its source files, so every node builds the same store under
    the same key, or this raises when the node's source files differ. Processes of one node that need
    it at once build it once (a file lock; the others wait and use it).
    """
    path = node_store_path(store_path, driver_cache)
    if (Path(path) / MANIFEST).exists() or dataset_spec is None:
        return path
    import fcntl

    from mfray.utils.errors import DataError

    spec = DatasetSpec.model_validate(dataset_spec)
    root = Path(path).parents[1]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(Path(path).parent / f".{Path(path).name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes (also if this process dies)
        if (Path(path) / MANIFEST).exists():  # another process of this node built it meanwhile
            return path
        res = featurize_dataset(spec, root, executor="local", progress=False, log=lambda m: None)
    if Path(res.store.path).name != Path(path).name:
        raise DataError(f"{spec.name}: this node built its graph store with key {Path(res.store.path).name} "
                        f"({res.store.path}), but the study planned {Path(store_path).name} ({store_path}): "
                        "the dataset's source files differ between nodes")
    return path
