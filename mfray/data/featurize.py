"""Featurise raw record tables: standardise each SMILES and extract its graph, row by row.

:func:`featurize_table` is the one function both executors call: the local loop (tests, small data)
and the Ray Data ``map_batches`` pipeline (:mod:`mfray.run.featurize`). It keeps every input row:
rows that fail get ``reject_code``/``reject_reason`` and empty graph lists.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from mfray.chem.graph import GRAPH_SCHEMA, GraphExtractor
from mfray.chem.standardize import Standardizer, StandardizerConfig
from mfray.data.specs import DatasetSpec

GRAPH_COLUMNS = [f.name for f in GRAPH_SCHEMA if f.name != "mol_id"]


def extractor_for(spec: DatasetSpec) -> GraphExtractor:
    return GraphExtractor(Standardizer(StandardizerConfig.from_dict(spec.standardize.resolved())))


def featurize_table(raw: pa.Table, extractor: GraphExtractor) -> pa.Table:
    """Append ``std_smiles``, ``key``, ``reject_code``, ``reject_reason`` and graph columns.

    Rows already rejected at read time (``reject`` not null) are not parsed; their reason is kept.
    """
    smiles = raw.column("smiles").to_pylist()
    pre = raw.column("reject").to_pylist()
    todo = [s if r is None else None for s, r in zip(smiles, pre)]
    out = extractor([s for s, r in zip(todo, pre) if r is None])
    # scatter results back to all rows (read-time rejects get empty graphs)
    n = raw.num_rows
    idx = [i for i, r in enumerate(pre) if r is None]
    cols = out.graph_columns()
    if len(idx) == n:
        ok, std, key, code, reason = out.ok, out.smiles, out.key, out.reject_code, out.reject_reason
        graph = cols
    else:
        ok = [False] * n
        std: list = [None] * n
        key: list = [None] * n
        code: list = ["bad_value"] * n
        reason: list = list(pre)
        for j, i in enumerate(idx):
            ok[i], std[i], key[i], code[i], reason[i] = (
                out.ok[j], out.smiles[j], out.key[j], out.reject_code[j], out.reject_reason[j]
            )
        pos: list[int | None] = [None] * n
        for j, i in enumerate(idx):
            pos[i] = j
        take = pa.array(pos, pa.int64())
        graph = {}
        for k, arr in cols.items():
            if k == "n_atoms":
                graph[k] = pc.fill_null(pc.take(arr, take), 0)
            else:
                taken = pc.take(arr, take)
                graph[k] = pc.if_else(pc.is_null(taken), pa.scalar([], arr.type), taken)
    res = raw.append_column("std_smiles", pa.array(std, pa.string()))
    res = res.append_column("key", pa.array(key, pa.int64()))
    res = res.append_column("reject_code", pa.array(code, pa.string()))
    res = res.append_column("reject_reason", pa.array(reason, pa.string()))
    for k in GRAPH_COLUMNS:
        res = res.append_column(k, graph[k])
    return res
