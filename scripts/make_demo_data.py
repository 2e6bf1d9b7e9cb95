"""Build the bundled demo dataset data/aid1445/aid1445.parquet from ../shared/data/aid1445.

The source CSVs store embeddings as stringified lists; here they become list<float32> columns, and
the original train/validate/test file becomes a column ``paper_split``. Run once:
    python scripts/make_demo_data.py [SHARED_DATA_DIR]
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]


def main(shared: Path) -> None:
    parts = []
    for name in ("train", "validate", "test"):
        tbl = pacsv.read_csv(shared / "aid1445" / f"{name}.csv")  # BOM handled by Arrow
        cols = {
            "CID": tbl.column("CID").cast(pa.int64()),
            "smiles": tbl.column("neut-smiles"),
            "SD": tbl.column("SD").cast(pa.float64()),
            "SD_zscore": tbl.column("SD Z-score").cast(pa.float64()),
            "DR": tbl.column("DR").cast(pa.float64()),
            "XC50_uM": tbl.column("XC50").cast(pa.float64()),
            "SumPredSD": tbl.column("SumPredSD").cast(pa.float64()),
            "STPredSD": tbl.column("STPredSD").cast(pa.float64()),
        }
        for emb in ("SumEmbeddings", "STEmbeddings"):
            vecs = [ast.literal_eval(s) for s in tbl.column(emb).to_pylist()]
            dim = len(vecs[0])
            cols[emb] = pa.array(vecs, pa.list_(pa.float32(), dim))
        cols["paper_split"] = pa.array([name] * tbl.num_rows)
        parts.append(pa.table(cols))
    out = pa.concat_tables(parts)
    dest = ROOT / "data" / "aid1445" / "aid1445.parquet"
    pq.write_table(out, dest, compression="zstd", compression_level=19)
    print(f"wrote {dest} ({out.num_rows} rows, {dest.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "data")
