"""``mfray predict`` on Ray Data for large inputs: the input is read by Ray Data, a pool of actors
featurises and scores its batches (each actor takes the model from the object store once, where the
driver put it once), and the driver receives the scored batches in input order (``preserve_order``)
and writes them with :func:`mfray.predict.stream.predict_file`. Small inputs are scored in this process."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from mfray.predict.model import Predictor, Scores
from mfray.predict.stream import ChunkResult, ChunkScorer, PredictSummary, csv_names, estimated_rows, input_format
from mfray.predict.stream import predict_file as write_predictions
from mfray.utils.errors import MfrayError

#: inputs of at least this many rows are scored on Ray Data (``executor="auto"``); below, Ray's start-up
#: costs more than it saves
RAY_MIN_ROWS = 50_000

#: internal columns of a scored batch (split off again by the driver)
_OK, _CODE, _REASON, _MEAN, _STD, _SRC, _EMB = ("__mfray_ok", "__mfray_code", "__mfray_reason", "__mfray_mean",
                                                "__mfray_std", "__mfray_lf_source", "__mfray_embedding")


class _ScoreBatches:
    """The Ray Data UDF: one per actor; the predictor arrives once, as an object reference."""

    def __init__(self, predictor_ref: Any, smiles: str, lf_column: str | None, batch_size: int, embeddings: bool,
                 input_columns: list[str]) -> None:
        import ray
        import torch

        torch.set_num_threads(1)
        predictor = ray.get(predictor_ref[0])  # wrapped in a list so Ray Data does not resolve it per task
        self.scorer = ChunkScorer(predictor, smiles, lf_column, batch_size=batch_size, embeddings=embeddings)
        self.columns = input_columns
        self.n_targets = len(predictor.targets)

    def __call__(self, batch: pa.Table) -> pa.Table:
        batch = batch.select(self.columns)
        res = self.scorer(batch)
        n, t = batch.num_rows, self.n_targets
        ok = res.ok
        mean = np.full((n, t), np.nan)
        mean[ok] = res.scores.mean
        codes = np.full(n, None, dtype=object)
        reasons = np.full(n, None, dtype=object)
        codes[~ok] = res.codes
        reasons[~ok] = res.reasons
        out = batch.append_column(_OK, pa.array(ok)).append_column(_CODE, pa.array(codes.tolist(), pa.string()))
        out = out.append_column(_REASON, pa.array(reasons.tolist(), pa.string()))
        out = out.append_column(_MEAN, pa.FixedSizeListArray.from_arrays(pa.array(mean.reshape(-1)), t))
        if res.scores.std is not None:
            std = np.full((n, t), np.nan)
            std[ok] = res.scores.std
            out = out.append_column(_STD, pa.FixedSizeListArray.from_arrays(pa.array(std.reshape(-1)), t))
        if res.scores.lf_source is not None:
            src = np.full(n, None, dtype=object)
            src[ok] = res.scores.lf_source
            out = out.append_column(_SRC, pa.array(src.tolist(), pa.string()))
        if res.scores.embedding is not None:
            e = res.scores.embedding.astype(np.float32)
            full = np.zeros((n, e.shape[1]), np.float32)
            full[ok] = e
            out = out.append_column(_EMB, pa.FixedSizeListArray.from_arrays(pa.array(full.reshape(-1)), e.shape[1]))
        return out


def _split(batch: pa.Table, columns: list[str]) -> tuple[pa.Table, ChunkResult]:
    """A scored batch back into (input rows, result)."""
    ok = batch.column(_OK).to_numpy(zero_copy_only=False).astype(bool)

    def dense(name: str) -> np.ndarray | None:
        if name not in batch.column_names:
            return None
        col = batch.column(name).combine_chunks()
        width = col.type.list_size
        return col.flatten().to_numpy(zero_copy_only=False).reshape(-1, width)[ok]

    codes = [c for c, k in zip(batch.column(_CODE).to_pylist(), ok) if not k]
    reasons = [r for r, k in zip(batch.column(_REASON).to_pylist(), ok) if not k]
    src = ([s for s, k in zip(batch.column(_SRC).to_pylist(), ok) if k] if _SRC in batch.column_names else None)
    scores = Scores(mean=dense(_MEAN), std=dense(_STD), embedding=dense(_EMB), lf_source=src)
    return batch.select(columns), ChunkResult(ok=ok, scores=scores, codes=codes, reasons=reasons)


def ray_scored_chunks(predictor: Predictor, src: Path, smiles: str, lf_column: str | None, *, batch_size: int,
                      embeddings: bool, chunk_rows: int, workers: int | None,
                      log: Callable[[str], None] = lambda m: None) -> Iterator[tuple[pa.Table, ChunkResult]]:
    import logging

    import ray

    from mfray.run.runtime import ensure_ray

    ensure_ray(log_to_driver=False)  # errors still arrive as exceptions; workers' chatter stays in Ray's logs
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False
    ctx.verbose_stats_logs = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    n = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
    fmt = input_format(src)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        columns = pq.ParquetFile(src).schema_arrow.names
        ds = ray.data.read_parquet(str(src), num_cpus=0)
    else:
        import pyarrow.csv as pcsv

        delimiter = "\t" if fmt == "tsv" else ","
        columns = csv_names(src, delimiter)
        ds = ray.data.read_csv(
            str(src), parse_options=pcsv.ParseOptions(delimiter=delimiter),
            convert_options=pcsv.ConvertOptions(column_types={c: pa.string() for c in columns}, strings_can_be_null=True,
                                                quoted_strings_can_be_null=False),
            arrow_open_stream_args={"compression": "gzip"} if src.name.lower().endswith(".gz") else None,
            include_paths=False, num_cpus=0)
    # reads take no CPU slot (num_cpus=0 above): the scoring actors hold one each, all of them, and a read
    # task waiting for a free slot would wait for ever
    ref = ray.put(predictor)  # the model goes to the object store once; every actor reads it from there
    log(f"scoring on Ray Data with {n} actor(s)")
    scored = ds.map_batches(_ScoreBatches, fn_constructor_args=([ref], smiles, lf_column, batch_size, embeddings, columns),
                            batch_size=chunk_rows, batch_format="pyarrow", concurrency=n, num_cpus=1,
                            zero_copy_batch=True, max_restarts=0)
    for batch in scored.iter_batches(batch_size=None, batch_format="pyarrow"):
        if batch.num_rows:
            yield _split(batch, columns)


def predict_file(predictor: Predictor, input_path: str | Path, out: str | Path, *, executor: str = "auto",
                 workers: int | None = None, log: Callable[[str], None] = lambda m: None, **kwargs: Any
                 ) -> PredictSummary:
    """:func:`mfray.predict.stream.predict_file` with the executor chosen: "local" (this process), "ray"
    (Ray Data actors) or "auto" (Ray from :data:`RAY_MIN_ROWS` input rows)."""
    import functools

    if executor not in ("auto", "local", "ray"):
        raise MfrayError(f"executor {executor!r}: choose auto, local or ray")
    src = Path(input_path)
    if executor == "auto":
        executor = "ray" if src.exists() and estimated_rows(src) >= RAY_MIN_ROWS else "local"
    scored = functools.partial(ray_scored_chunks, workers=workers, log=log) if executor == "ray" else None
    return write_predictions(predictor, src, out, scored=scored, executor=executor, **kwargs)
