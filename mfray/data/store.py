"""The graph store: featurised molecules, their labels, splits and quarantined rows, on disk.

Layout of one store (``<root>/<dataset>/<key>/``, ``key`` hashing the source content, the
standardiser and the graph schema; see :func:`store_key`)::

    manifest.json        counts, specs, versions, timings: the store is complete iff this exists
    spec.toml            the resolved dataset spec it was built from
    graphs/part-*.parquet  one row per molecule: mol_id, n_atoms, per-atom and per-bond property lists
    molecules.parquet    mol_id, smiles (standardised), input_smiles, source_id, n_rows
    labels.parquet       one row per (input row, fidelity, target): the measurements with provenance
                         and ``censor`` (0 fitted, +1 the value is a lower bound, -1 an upper bound)
    task_labels.parquet  one row per (mol_id, fidelity, target): labels combined by the duplicates policy,
                         with ``censor`` (fitted values win over bounds; see :func:`_aggregate`)
    artifacts.parquet    mol_id + precomputed LF predictions / embeddings (fixed_size_list<float32>)
    splits.parquet       mol_id, seed, fold (train/valid/test)
    quarantine.parquet   every rejected input row: file, file_row, source_id, smiles, stage, code, reason

Invariant, checked on every write: rows read = rows stored + rows quarantined.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mfray.chem.graph import ATOM_PROPERTIES, BOND_PROPERTIES, GRAPH_SCHEMA, text_key
from mfray.data.sources.base import parse_label_column
from mfray.data.specs import DatasetSpec
from mfray.data.splits import FOLDS, SPLIT_SCHEMA, make_splits
from mfray.utils.errors import DataError
from mfray.utils.hashing import hash_obj
from mfray.utils.io import write_json_atomic

MANIFEST = "manifest.json"
STORE_FORMAT = 1
#: molecules per graph shard (a shard is the unit of parallel reading)
SHARD_ROWS = 131072

QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("row", pa.int64()), pa.field("file", pa.string()), pa.field("file_row", pa.int64()),
        pa.field("source_id", pa.string()), pa.field("smiles", pa.string()), pa.field("stage", pa.string()),
        pa.field("code", pa.string()), pa.field("reason", pa.string()),
    ]
)


def default_root() -> Path:
    """Where stores live unless ``--out`` says otherwise: ``$MFRAY_CACHE/graphs`` or ~/.cache/mfray/graphs."""
    base = os.environ.get("MFRAY_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "mfray")
    return Path(base) / "graphs"


def store_key(spec: DatasetSpec, source_fingerprint: dict[str, Any], extractor_spec: dict[str, Any]) -> str:
    """Cache key of a store: what it was built from. The featuriser preset is not in it: presets are
    applied to the stored properties at collate time, so one store serves every preset."""
    return hash_obj(
        {
            "format": STORE_FORMAT,
            "source": spec.source_identity(),
            "fingerprint": source_fingerprint,
            "extractor": extractor_spec,
            "fidelities": spec.fidelities,
            "duplicates": spec.duplicates,
            "molecule_key": spec.molecule_key,
            "split": spec.split.model_dump(mode="json"),
        }
    )


@dataclass
class FinalizeResult:
    manifest: dict[str, Any]
    path: Path


def _to_mol_ids(df: pl.DataFrame, molecule_key: str) -> pl.Series:
    if molecule_key == "structure":
        return df["key"]
    sid = df["source_id"]
    as_int = sid.cast(pl.Int64, strict=False)
    # ids are compared as text, exactly: integers are their own mol_id only when every id is written the
    # way the integer prints ('7', '-3'), so '007'/'7', '+1'/'1' and '-0'/'0' stay different molecules
    if as_int.null_count() == sid.null_count() and (as_int.cast(pl.String) == sid).all():
        return as_int
    return pl.Series("mol_id", [None if s is None else text_key(s) for s in sid.to_list()], dtype=pl.Int64)


def _quarantine_frame(df: pl.DataFrame, stage: str, code: pl.Expr | str, reason: pl.Expr | str) -> pl.DataFrame:
    return df.select(
        pl.col("row"), pl.col("file"), pl.col("file_row"), pl.col("source_id"), pl.col("smiles"),
        pl.lit(stage).alias("stage"),
        (pl.lit(code) if isinstance(code, str) else code).alias("code"),
        (pl.lit(reason) if isinstance(reason, str) else reason).alias("reason"),
    )


def _combine(labels: pl.DataFrame, keys: list[str], agg: pl.Expr) -> pl.DataFrame:
    """One label per ``keys`` group, aware of bounds: fitted values (censor 0) win and are combined by
    ``agg``; a group of bounds only keeps the tightest one (the smallest upper bound, the largest lower
    bound). A group of bounds in both directions without a fitted value gets a null value (``_aggregate``
    drops and counts it)."""
    fitted = labels.filter(pl.col("censor") == 0)
    f = fitted.sort("row").group_by(keys).agg(agg, pl.col("n").sum(), pl.lit(0, pl.Int8).alias("censor"))
    bounds = labels.filter(pl.col("censor") != 0).join(f.select(keys), on=keys, how="anti")
    b = bounds.group_by(keys).agg(
        pl.when(pl.col("censor").n_unique() > 1).then(None)
        .when(pl.col("censor").first() < 0).then(pl.col("value").min())
        .otherwise(pl.col("value").max()).alias("value"),
        pl.col("n").sum(), pl.col("censor").first().cast(pl.Int8))
    return pl.concat([f, b.select(f.columns)])


def _aggregate(labels: pl.DataFrame, policy: str) -> tuple[pl.DataFrame, int]:
    """Task labels by the duplicates policy, and how many were dropped as bounds in both directions."""
    keys = ["mol_id", "fidelity", "target"]
    labels = labels.with_columns(pl.lit(1, pl.UInt32).alias("n"))
    if policy == "mfpcba":
        per_id = _combine(labels, [*keys, "source_id"], pl.col("value").mean())
        out = _combine(per_id.with_columns(pl.lit(0, pl.Int64).alias("row")), keys, pl.col("value").max())
    else:
        agg = {
            "mean": pl.col("value").mean(), "median": pl.col("value").median(), "max": pl.col("value").max(),
            "min": pl.col("value").min(), "first": pl.col("value").first(), "quarantine": pl.col("value").first(),
        }[policy]
        out = _combine(labels, keys, agg)
    conflicting = out.filter(pl.col("value").is_null()).height
    return out.filter(pl.col("value").is_not_null()), conflicting


def _predefined_splits(rows: pl.DataFrame, split_ids: pl.Series, seeds: list[int]) -> tuple[pa.Table, dict[str, Any]]:
    """The folds that come with the data, the same for every seed: a molecule's fold is its rows' fold.
    Molecules of the split fidelity without a fold, or whose rows name two folds, stay out of the split
    (counted in the manifest)."""
    per = (rows.filter(pl.col("fold").is_not_null()).group_by("mol_id")
           .agg(pl.col("fold").unique().alias("folds")))
    conflicting = per.filter(pl.col("folds").list.len() > 1)["mol_id"]
    per = per.filter(pl.col("folds").list.len() == 1).select("mol_id", pl.col("folds").list.first().alias("fold"))
    want = pl.DataFrame({"mol_id": split_ids})
    folded = want.join(per, on="mol_id", how="inner").sort("mol_id")
    no_fold = want.join(per, on="mol_id", how="anti").join(pl.DataFrame({"mol_id": conflicting}), on="mol_id", how="anti")
    code = {f: i for i, f in enumerate(FOLDS)}
    parts = []
    for seed in seeds:
        parts.append(pa.table({
            "mol_id": pa.array(folded["mol_id"].to_numpy(), pa.int64()),
            "seed": pa.array(np.full(folded.height, seed, dtype=np.int64)),
            "fold": pa.DictionaryArray.from_arrays(pa.array([code[f] for f in folded["fold"].to_list()], pa.int8()),
                                                   pa.array(FOLDS)),
        }, schema=SPLIT_SCHEMA))
    table = pa.concat_tables(parts) if parts else SPLIT_SCHEMA.empty_table()
    counts = folded.group_by("fold").len()
    info = {"molecules_by_fold": dict(zip(counts["fold"].to_list(), counts["len"].to_list())),
            "without_fold": int(no_fold.height), "in_two_folds": int(conflicting.len())}
    return table, info


def finalize(
    featurized_files: list[str], spec: DatasetSpec, out_dir: Path, *, key: str,
    extractor_spec: dict[str, Any], source_fingerprint: dict[str, Any], timings: dict[str, float] | None = None,
) -> FinalizeResult:
    """Turn featurised row files into a complete store in ``out_dir`` (which must be empty/new).

    Decides molecule ids, quarantines bad rows (with reasons), applies the duplicates policy, writes
    one graph row per molecule, the label tables, artifacts and splits, then the manifest.
    """
    t0 = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    schema = pq.read_schema(featurized_files[0])
    label_cols = [c for c in schema.names if c.startswith("label:")]
    censor_cols = [c for c in schema.names if c.startswith("censor:")]
    artifact_cols = [c for c in schema.names if c.startswith("artifact:")]
    fold_col = ["fold"] if "fold" in schema.names else []
    meta_cols = ["row", "file", "file_row", "source_id", "smiles", "reject", "std_smiles", "key",
                 "reject_code", "reject_reason", *label_cols, *censor_cols, *fold_col]
    meta = pl.read_parquet(featurized_files, columns=meta_cols).sort("row")
    rows_read = meta.height
    if meta["row"].n_unique() != rows_read:
        raise DataError("internal error: duplicate row numbers in featurised rows")

    quarantine: list[pl.DataFrame] = []
    # 1. rows rejected at read time or by standardisation/featurisation
    bad = meta.filter(pl.col("reject_code").is_not_null())
    quarantine.append(_quarantine_frame(
        bad, "read/standardize", pl.col("reject_code"), pl.col("reject_reason")
    ).with_columns(pl.when(pl.col("code") == "bad_value").then(pl.lit("read")).otherwise(pl.lit("standardize")).alias("stage")))
    ok = meta.filter(pl.col("reject_code").is_null())

    # 2. rows without any label
    if label_cols:
        no_label = pl.all_horizontal([pl.col(c).is_null() for c in label_cols])
        nl = ok.filter(no_label)
        quarantine.append(_quarantine_frame(nl, "labels", "no_label", f"no value in any label column ({', '.join(label_cols)})"))
        ok = ok.filter(~no_label)

    # 3. molecule ids
    ok = ok.with_columns(_to_mol_ids(ok, spec.molecule_key).alias("mol_id"))
    missing_id = ok.filter(pl.col("mol_id").is_null())
    quarantine.append(_quarantine_frame(missing_id, "ids", "missing_id", "no value in the id column (molecule_key = 'id')"))
    ok = ok.filter(pl.col("mol_id").is_not_null())
    if spec.molecule_key == "id":
        first = ok.group_by("mol_id").agg(pl.col("std_smiles").sort_by("row").first().alias("first_smiles"),
                                          pl.col("row").min().alias("first_row"))
        ok = ok.join(first, on="mol_id", how="left")
        clash = ok.filter(pl.col("std_smiles") != pl.col("first_smiles"))
        quarantine.append(_quarantine_frame(
            clash, "ids", "id_conflict",
            pl.format("id {} is also used for a different structure {} (input row {})",
                      pl.col("source_id"), pl.col("first_smiles"), pl.col("first_row") + 1),
        ))
        ok = ok.filter(pl.col("std_smiles") == pl.col("first_smiles")).drop("first_smiles", "first_row")

    # 4. labels (long), duplicates policy
    def long_labels(frame: pl.DataFrame) -> pl.DataFrame:
        parts = []
        for c in label_cols:
            fid, target = parse_label_column(c)  # type: ignore[misc]
            cc = "censor:" + c.split(":", 1)[1]
            censor = pl.col(cc).fill_null(0) if cc in censor_cols else pl.lit(0)
            parts.append(frame.filter(pl.col(c).is_not_null()).select(
                "mol_id", pl.lit(fid).alias("fidelity"), pl.lit(target).alias("target"),
                pl.col(c).alias("value"), censor.cast(pl.Int8).alias("censor"), "source_id", "file", "file_row", "row"))
        if not parts:
            return pl.DataFrame(schema={"mol_id": pl.Int64, "fidelity": pl.String, "target": pl.String,
                                        "value": pl.Float64, "censor": pl.Int8, "source_id": pl.String,
                                        "file": pl.String, "file_row": pl.Int64, "row": pl.Int64})
        return pl.concat(parts)

    labels = long_labels(ok)
    if spec.duplicates == "quarantine":
        conflicts = (labels.group_by(["mol_id", "fidelity", "target"])
                     .agg(pl.struct("value", "censor").n_unique().alias("nv"), pl.col("row").sort().alias("rows"))
                     .filter(pl.col("nv") > 1))
        if conflicts.height:
            exploded = conflicts.explode("rows").rename({"rows": "row"}).with_columns(
                pl.format("conflicting values for {}/{} of one molecule (input rows {})", pl.col("fidelity"),
                          pl.col("target"), pl.col("row")).alias("why"))
            # name all rows of each conflicting group in the reason
            rows_txt = conflicts.select("mol_id", "fidelity", "target",
                                        pl.col("rows").list.eval(pl.element() + 1).cast(pl.List(pl.String)).list.join(", ").alias("rows_txt"))
            exploded = exploded.join(rows_txt, on=["mol_id", "fidelity", "target"]).with_columns(
                pl.format("conflicting values for {}/{} of one molecule (input rows {}); set duplicates = "
                          "'mean'/'median'/'max'/'first' in the spec to combine them",
                          pl.col("fidelity"), pl.col("target"), pl.col("rows_txt")).alias("why"))
            why = exploded.group_by("row").agg(pl.col("why").first())
            clash = ok.join(why, on="row", how="inner")
            quarantine.append(_quarantine_frame(clash, "labels", "conflicting_labels", pl.col("why")))
            ok = ok.join(why.select("row"), on="row", how="anti")
            labels = long_labels(ok)
    task_labels, bound_conflicts = _aggregate(labels, spec.duplicates)
    task_labels = task_labels.select("mol_id", "fidelity", "target", "value", "n", "censor").sort(
        ["fidelity", "target", "mol_id"])

    quarantined = pl.concat([q.cast({"code": pl.String, "reason": pl.String}) for q in quarantine]).sort("row")
    rows_stored = ok.height
    if rows_stored + quarantined.height != rows_read:
        raise DataError(
            f"internal error: rows read {rows_read} != stored {rows_stored} + quarantined {quarantined.height}"
        )

    # 5. molecules: first row of each mol_id
    firsts = ok.sort("row").group_by("mol_id", maintain_order=True).agg(
        pl.col("row").first(), pl.col("std_smiles").first().alias("smiles"),
        pl.col("smiles").first().alias("input_smiles"), pl.col("source_id").first(), pl.len().alias("n_rows"))
    molecules = firsts.select("mol_id", "smiles", "input_smiles", "source_id", "n_rows")

    # 6. graph shards: stream the featurised files, keeping first rows, in input order
    keep = firsts.select("row", "mol_id")
    graph_dir = out_dir / "graphs"
    graph_dir.mkdir(exist_ok=True)
    graph_cols = ["row", "n_atoms", *ATOM_PROPERTIES, "edge_index", *BOND_PROPERTIES]
    writer = None
    shard = 0
    n_in_shard = 0
    keep_rows = pa.array(keep["row"].to_numpy())
    row_to_id = dict(zip(keep["row"].to_list(), keep["mol_id"].to_list()))
    for f in sorted(featurized_files):
        pf = pq.ParquetFile(f)
        for batch in pf.iter_batches(batch_size=65536, columns=graph_cols):
            tbl = pa.Table.from_batches([batch])
            tbl = tbl.filter(pc.is_in(tbl.column("row"), value_set=keep_rows))
            if tbl.num_rows == 0:
                continue
            ids = pa.array([row_to_id[r] for r in tbl.column("row").to_pylist()], pa.int64())
            tbl = tbl.drop_columns(["row"]).add_column(0, "mol_id", ids).cast(GRAPH_SCHEMA)
            start = 0
            while start < tbl.num_rows:
                if writer is None:
                    path = graph_dir / f"part-{shard:05d}.parquet"
                    writer = pq.ParquetWriter(str(path), GRAPH_SCHEMA, compression="zstd", compression_level=9,
                                              use_dictionary=True, write_statistics=["mol_id"])
                take = min(SHARD_ROWS - n_in_shard, tbl.num_rows - start)
                writer.write_table(tbl.slice(start, take), row_group_size=32768)
                n_in_shard += take
                start += take
                if n_in_shard >= SHARD_ROWS:
                    writer.close()
                    writer, shard, n_in_shard = None, shard + 1, 0
    if writer is not None:
        writer.close()
    if not any(graph_dir.iterdir()):
        pq.write_table(GRAPH_SCHEMA.empty_table(), graph_dir / "part-00000.parquet")
    total_bytes = sum(p.stat().st_size for p in graph_dir.glob("*.parquet"))

    # 7. artifacts: first non-null per molecule, embeddings as fixed-size lists
    artifact_info: dict[str, Any] = {}
    if artifact_cols:
        art = pl.read_parquet(featurized_files, columns=["row", *artifact_cols]).join(ok.select("row", "mol_id"), on="row")
        art = art.sort("row").group_by("mol_id", maintain_order=True).agg(
            [pl.col(c).drop_nulls().first() for c in artifact_cols])
        tbl = art.to_arrow()
        cols = {"mol_id": tbl.column("mol_id")}
        for c in artifact_cols:
            name = c.split(":", 1)[1]
            col = tbl.column(c)
            if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
                lengths = set(pl.from_arrow(col).list.len().drop_nulls().unique().to_list())
                if len(lengths) > 1:
                    raise DataError(f"artifact {name!r}: embeddings of different lengths {sorted(lengths)}")
                dim = lengths.pop() if lengths else 0
                col = col.cast(pa.list_(pa.float32(), dim)) if dim else col
                artifact_info[name] = {"kind": "embedding", "dim": dim}
            else:
                artifact_info[name] = {"kind": "prediction"}
            cols[name] = col
        pq.write_table(pa.table(cols), out_dir / "artifacts.parquet", compression="zstd")

    # 8. splits over the molecules labelled at the split fidelity
    split_fid = spec.split_fidelity
    split_ids = task_labels.filter(pl.col("fidelity") == split_fid)["mol_id"].unique().sort()
    split_smiles = None
    split_info: dict[str, Any] = {}
    if spec.split.kind == "predefined":
        splits, split_info = _predefined_splits(ok, split_ids, spec.split.seeds)
    else:
        if spec.split.kind == "scaffold":
            split_smiles = molecules.join(pl.DataFrame({"mol_id": split_ids}), on="mol_id").sort("mol_id")["smiles"].to_list()
        splits = make_splits(spec.split.kind, split_ids.to_numpy(), spec.split.seeds, spec.split.fractions, split_smiles)

    molecules.write_parquet(out_dir / "molecules.parquet", compression="zstd")
    labels.sort("row").write_parquet(out_dir / "labels.parquet", compression="zstd")
    task_labels.write_parquet(out_dir / "task_labels.parquet", compression="zstd")
    pq.write_table(splits, out_dir / "splits.parquet", compression="zstd")
    qt = quarantined.to_arrow().cast(QUARANTINE_SCHEMA)
    pq.write_table(qt, out_dir / "quarantine.parquet", compression="zstd")

    reasons = quarantined.group_by("code").agg(pl.len().alias("n")).sort("n", descending=True)
    label_counts = task_labels.group_by(["fidelity", "target"]).agg(
        pl.len().alias("molecules"), (pl.col("censor") == 0).sum().alias("fitted"),
        (pl.col("censor") < 0).sum().alias("censored_below"), (pl.col("censor") > 0).sum().alias("censored_above"),
    ).sort(["fidelity", "target"])
    qualified = sorted({":".join(c.split(":")[1:]).replace(":", "/") for c in censor_cols})
    n_mols = molecules.height
    manifest = {
        "format": STORE_FORMAT,
        "dataset": spec.name,
        "key": key,
        "spec_path": spec.spec_path,
        "spec": spec.model_dump(mode="json"),
        "extractor": extractor_spec,
        "source_fingerprint": source_fingerprint,
        "counts": {
            "rows_read": rows_read,
            "rows_stored": rows_stored,
            "rows_quarantined": quarantined.height,
            "molecules": n_mols,
            "rows_merged": rows_stored - n_mols,
            "quarantine_by_code": dict(zip(reasons["code"].to_list(), reasons["n"].to_list())),
            "labelled_molecules": {f"{r['fidelity']}/{r['target']}": r["molecules"] for r in label_counts.to_dicts()},
            # per label: molecules with a fitted value / a bound below which the true value lies / a
            # bound above which it lies ("qualified": the label has a qualifier column)
            "label_censoring": {f"{r['fidelity']}/{r['target']}": {
                "fitted": r["fitted"], "censored_below": r["censored_below"], "censored_above": r["censored_above"],
                "qualified": f"{r['fidelity']}/{r['target']}" in qualified} for r in label_counts.to_dicts()},
            "bound_conflicts_dropped": bound_conflicts,
            "split_molecules": int(len(split_ids)),
            **({"predefined_split": split_info} if split_info else {}),
        },
        "graph_bytes": total_bytes,
        "bytes_per_molecule": round(total_bytes / n_mols, 1) if n_mols else None,
        "artifacts": artifact_info,
        "timings_s": {**(timings or {}), "finalize": round(time.perf_counter() - t0, 3)},
        "versions": _versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    import tomli_w

    (out_dir / "spec.toml").write_text(
        f"# resolved dataset spec of this store (from {spec.spec_path})\n"
        + tomli_w.dumps(spec.model_dump(mode="json", exclude_none=True))
    )
    write_json_atomic(out_dir / MANIFEST, manifest)  # last: the store is complete iff this exists
    return FinalizeResult(manifest=manifest, path=out_dir)


def _versions() -> dict[str, str]:
    import rdkit

    import mfray

    return {"mfray": mfray.__version__, "rdkit": rdkit.__version__, "pyarrow": pa.__version__, "polars": pl.__version__}


class GraphStore:
    """Read access to a finished store.

    Args:
        path: the store folder (the one holding ``manifest.json``).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        mf = self.path / MANIFEST
        if not mf.exists():
            raise DataError(f"{self.path}: not a complete graph store (no {MANIFEST}); run `mfray featurize` again")
        self.manifest: dict[str, Any] = json.loads(mf.read_text())

    def __repr__(self) -> str:
        c = self.manifest["counts"]
        return f"GraphStore({self.manifest['dataset']!r}, molecules={c['molecules']}, path={str(self.path)!r})"

    @property
    def graph_files(self) -> list[str]:
        return sorted(str(p) for p in (self.path / "graphs").glob("part-*.parquet"))

    def graphs(self, mol_ids: np.ndarray | list[int] | None = None, columns: list[str] | None = None) -> pa.Table:
        """Graph rows (all, or those of ``mol_ids`` in the order given)."""
        import pyarrow.dataset as ds

        dset = ds.dataset(self.graph_files, format="parquet")
        if mol_ids is None:
            return dset.to_table(columns=columns)
        ids = pa.array(np.asarray(mol_ids, dtype=np.int64))
        tbl = dset.to_table(columns=columns, filter=ds.field("mol_id").isin(ids))
        order = pc.index_in(ids, value_set=tbl.column("mol_id"))
        if order.null_count:
            missing = np.asarray(ids)[np.asarray(pc.is_null(order))][:5].tolist()
            raise DataError(f"{self.path}: molecule ids not in the store, e.g. {missing}")
        return tbl.take(order)

    def table(self, name: str) -> pl.DataFrame:
        p = self.path / f"{name}.parquet"
        if not p.exists():
            raise DataError(f"{self.path}: store has no {name} table")
        return pl.read_parquet(p)

    def split_ids(self, seed: int) -> dict[str, np.ndarray]:
        s = self.table("splits").filter(pl.col("seed") == seed)
        if s.height == 0:
            seeds = self.table("splits")["seed"].unique().sort().to_list()
            raise DataError(f"{self.path}: no split for seed {seed}; stored seeds: {seeds}")
        return {f: s.filter(pl.col("fold") == f)["mol_id"].to_numpy() for f in ("train", "valid", "test")}
