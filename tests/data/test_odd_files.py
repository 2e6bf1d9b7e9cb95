"""Issue 13, class 4: empty and odd input files give one clear message (exit 2), never a traceback."""

from __future__ import annotations

import decimal
import gzip
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mfray.cli.main import main

from test_bad_input import featurize, spec_text


def _spec(tmp_path, path, name="odd", extra=""):
    text = spec_text(path).replace('name = "bad"', f'name = "{name}"')
    if extra:
        text = text.replace('id_column = "id"', f'id_column = "id"\n{extra}')
    (tmp_path / f"{name}.toml").write_text(text)
    return tmp_path / f"{name}.toml"


def _table(**cols):
    base = {"id": ["1", "2"], "smiles": ["CCO", "CCN"], "lf": [1.0, 2.0], "hf": [2.0, 3.0]}
    return pa.table({**base, **cols})


def _fails(tmp_path, spec, capsys, *message):
    code = main(["featurize", str(spec), "--out", str(tmp_path / "out"), "--local"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    for m in message:
        assert m in err, err
    return err


def test_header_only_csv(tmp_path, capsys):
    (tmp_path / "h.csv").write_text("id,smiles,lf,hf\n")
    _fails(tmp_path, _spec(tmp_path, "h.csv"), capsys, "has no data rows", "h.csv")


def test_zero_row_parquet(tmp_path, capsys):
    pq.write_table(_table().slice(0, 0), tmp_path / "e.parquet")
    _fails(tmp_path, _spec(tmp_path, "e.parquet"), capsys, "has no data rows", "e.parquet")


def test_gzip_truncated_past_the_first_block(tmp_path, capsys):
    body = "id,smiles,lf,hf\n" + "".join(f"{i},{'C' * (i % 20 + 1)}O,{i},{i}\n" for i in range(1, 200_000))
    gz = gzip.compress(body.encode())
    (tmp_path / "t.csv.gz").write_bytes(gz[: len(gz) // 2])
    _fails(tmp_path, _spec(tmp_path, "t.csv.gz"), capsys, "t.csv.gz: the compressed file is truncated or corrupt after",
           "rows were read")


def test_parquet_with_corrupt_pages(tmp_path, capsys):
    pq.write_table(pa.table({"id": [str(i) for i in range(5000)], "smiles": ["CCO"] * 5000, "lf": [1.0] * 5000,
                             "hf": [2.0] * 5000}), tmp_path / "c.parquet")
    data = bytearray((tmp_path / "c.parquet").read_bytes())
    for i in range(200, 2000, 7):
        data[i] ^= 0xFF
    (tmp_path / "c.parquet").write_bytes(bytes(data))
    _fails(tmp_path, _spec(tmp_path, "c.parquet"), capsys, "c.parquet: corrupt Parquet data")


def test_parquet_with_list_typed_ids(tmp_path, capsys):
    pq.write_table(_table(id=[[1, 2], [3]]), tmp_path / "l.parquet")
    _fails(tmp_path, _spec(tmp_path, "l.parquet"), capsys, "l.parquet: id column 'id' has type list",
           "ids must be text or whole numbers")


def test_parquet_label_of_the_wrong_type_names_the_file(tmp_path, capsys):
    pq.write_table(_table(lf=[{"a": 1}, {"a": 2}]), tmp_path / "s.parquet")
    _fails(tmp_path, _spec(tmp_path, "s.parquet"), capsys, "s.parquet: column 'lf' has type struct")


def test_relative_path_that_is_a_symlink_loop(tmp_path, capsys):
    os.symlink("loop2.csv", tmp_path / "loop1.csv")
    os.symlink("loop1.csv", tmp_path / "loop2.csv")
    _fails(tmp_path, _spec(tmp_path, "loop1.csv"), capsys, "loop1.csv: data file 'main' of dataset 'odd' is a "
                                                           "symbolic link that leads nowhere")


def test_utf16_file_says_encoding(tmp_path, capsys):
    (tmp_path / "u.csv").write_bytes("id,smiles,lf,hf\n1,CCO,1,2\n".encode("utf-16"))
    _fails(tmp_path, _spec(tmp_path, "u.csv"), capsys, "u.csv: the file is UTF-16", "encoding = 'utf-16'")
    # and with the encoding declared it reads
    store = featurize(_spec(tmp_path, "u.csv", name="u16", extra='encoding = "utf-16"'), tmp_path).store
    assert store.manifest["counts"]["molecules"] == 1


def test_decimal_label_column_is_numeric(tmp_path):
    pq.write_table(_table(lf=pa.array([decimal.Decimal("1.50"), decimal.Decimal("2.25")], pa.decimal128(5, 2))),
                   tmp_path / "d.parquet")
    labels = featurize(_spec(tmp_path, "d.parquet"), tmp_path).store.table("task_labels")
    assert sorted(labels.filter(labels["fidelity"] == "lf")["value"].to_list()) == [1.5, 2.25]
