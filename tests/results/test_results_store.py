"""ResultsStore: one part per run, written once, atomically; parts with different params union."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import UTC, datetime

import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from results_synth import VERSIONS, records

from mfray.results import BASE_SCHEMA, ResultsError, ResultsStore, RunRecord, flatten_params
from mfray.results import store as store_mod


def _rec(**kw) -> RunRecord:
    base = dict(study="s1", task="aid1445:hf/DR", dataset="aid1445", setting="transductive", strategy="label",
                model="gnn", readout="st", split_seed=0, metrics={"test": {"r2": 0.5, "mae": 0.3}},
                params={"lr": 1e-3, "model": {"hidden_dim": 64}}, n_train_hf=120, versions=VERSIONS,
                finished_at=datetime(2025, 1, 1, tzinfo=UTC))
    return RunRecord(**(base | kw))


def _files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_append_is_idempotent(tmp_path):
    store = ResultsStore(tmp_path)
    r = _rec()
    assert store.append_run(r) is True
    assert store.append_run(r) is False
    # a new record object with the same identity (a restarted study) is the same run
    assert store.append_run(_rec(metrics={"test": {"r2": 0.9}})) is False
    assert _files(tmp_path) == [f"study=s1/run-{r.run_key}.parquet"]
    df = store.read()
    assert df.height == 2 and sorted(df["metric"]) == ["mae", "r2"]
    assert df["value"].to_list() == [0.3, 0.5]  # sorted by metric; the first write stands
    assert store.has_run(r.run_key) and store.has_run(r.run_key, study="s1")
    assert store.studies() == ["s1"] and store.run_keys() == [r.run_key]


def test_run_key_identity():
    r = _rec()
    assert r.run_key == _rec(metrics={"valid": {"r2": 0.1}}, trial_id="x", n_train_hf=3).run_key
    for change in ({"split_seed": 1}, {"strategy": "base"}, {"readout": None}, {"model": "rf"},
                   {"setting": "inductive"}, {"params": {"lr": 1e-2}}, {"config_hash": "c0ffee"}, {"study": "s2"}):
        assert _rec(**change).run_key != r.run_key, change
    assert r.resolved_config_hash == _rec(params={"model": {"hidden_dim": 64}, "lr": 1e-3}).resolved_config_hash


def test_schema_and_types(tmp_path):
    store = ResultsStore(tmp_path)
    started = datetime(2025, 3, 1, 12, 0)  # naive -> UTC
    store.append_run(_rec(metrics={"test": {"r2": 0.5}, "valid": {"r2": 0.6}, "train": {"r2": 0.9}},
                          best_epoch=7, trial_id="trial_3", started_at=started,
                          params={"lr": 1e-3, "model": {"hidden_dim": 64, "dims": [64, 32]}, "opt": None}))
    df = store.read()
    base = [f.name for f in BASE_SCHEMA]
    assert df.columns[: len(base)] == base
    assert df.columns[len(base):] == ["params_lr", "params_model__dims", "params_model__hidden_dim", "params_opt"]
    assert df["fold"].to_list() == ["test", "train", "valid"]
    assert df.schema["split_seed"] == pl.Int64 and df.schema["best_epoch"] == pl.Int64
    assert df.schema["started_at"] == pl.Datetime("us", "UTC")
    row = df.row(0, named=True)
    assert row["started_at"] == datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    assert row["params_model__dims"] == "[64,32]" and row["params_opt"] is None
    assert row["trial_id"] == "trial_3" and row["best_epoch"] == 7 and row["n_train_hf"] == 120
    assert row["torch"] == "2.13.0" and row["git_sha"] == "abc123"


def test_empty_store_reads_base_schema(tmp_path):
    store = ResultsStore(tmp_path / "nothing")
    df = store.read()
    assert df.height == 0 and df.columns == [f.name for f in BASE_SCHEMA]
    assert store.studies() == [] and not store.has_run("x")
    assert store.read("s1").height == 0


def test_different_params_concatenate(tmp_path):
    store = ResultsStore(tmp_path)
    store.append_run(_rec(params={"lr": 1, "model": {"hidden_dim": 64}}))
    store.append_run(_rec(strategy="base", params={"lr": 1e-3, "dropout": 0.1}))
    store.append_run(_rec(model="rf", readout=None, strategy="base",
                          params={"n_estimators": 100, "max_depth": None}))
    store.append_run(_rec(study="s2", params={"lr": "auto"}))
    df = store.read("s1")
    assert df.height == 6
    assert {"params_lr", "params_dropout", "params_model__hidden_dim", "params_n_estimators",
            "params_max_depth"} <= set(df.columns)
    assert df.schema["params_lr"] == pl.Float64  # int + float relax to float
    assert df.filter(pl.col("model") == "rf")["params_lr"].null_count() == 2
    assert store.read().schema["params_lr"] == pl.String  # with "auto" in s2: relaxed to string
    assert store.studies() == ["s1", "s2"]


def test_plain_polars_and_pyarrow_read_it(tmp_path):
    store = ResultsStore(tmp_path)
    store.append_runs(records(study="synth")[:8])
    store.append_runs(records(study="other")[:4])
    n = 12 * 3
    # a glob takes its schema from the first part: other parts' extra params_* columns need a say
    df = pl.scan_parquet(tmp_path / "**" / "*.parquet", hive_partitioning=True, missing_columns="insert",
                         extra_columns="ignore").collect()
    assert df.height == n and set(df["study"]) == {"synth", "other"}
    assert [f.name for f in BASE_SCHEMA] == df.columns[: len(BASE_SCHEMA)]
    one = pl.read_parquet(tmp_path / "study=other")
    assert one.height == 12 and set(one["study"]) == {"other"}
    dset = ds.dataset(tmp_path, format="parquet", partitioning="hive")
    t = dset.to_table(filter=ds.field("study") == "synth")
    assert t.num_rows == 24
    schema = pa.unify_schemas([f.physical_schema for f in dset.get_fragments()], promote_options="permissive")
    full = ds.dataset(tmp_path, format="parquet", partitioning="hive", schema=schema).to_table()
    assert full.num_rows == n and "params_fit_intercept" in full.column_names


def _broken_write(table, sink, **kw):
    sink.write(b"PAR1 partial bytes")
    raise OSError("disk full")


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    store = ResultsStore(tmp_path)
    monkeypatch.setattr(store_mod.pq, "write_table", _broken_write)
    with pytest.raises(OSError, match="disk full"):
        store.append_run(_rec())
    assert _files(tmp_path) == []  # no part, no temp file
    monkeypatch.undo()
    assert store.append_run(_rec()) is True and store.read().height == 2


def test_killed_writer_leaves_no_visible_part(tmp_path):
    # a writer killed mid-write (os._exit: no clean-up runs) leaves only a dot-temp file that readers skip
    code = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(__import__('pathlib').Path(__file__).parent)!r})
        from results_synth import records
        from mfray.results import ResultsStore, store as m
        def die(table, sink, **kw):
            sink.write(b"PAR1 half a file"); sink.flush(); os._exit(9)
        m.pq.write_table = die
        ResultsStore({str(tmp_path)!r}).append_run(records()[0])
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 9, out.stderr
    left = _files(tmp_path)
    assert len(left) == 1 and left[0].startswith("study=synth/.run-") and left[0].endswith(".tmp")
    store = ResultsStore(tmp_path)
    rec = records()[0]
    assert not store.has_run(rec.run_key) and store.read().height == 0 and store.studies() == []
    assert not list(tmp_path.rglob("*.parquet"))  # nothing a parquet glob would pick up
    assert store.append_run(rec) is True and store.read().height == 3
    assert store.clean_temp() == 1
    assert _files(tmp_path) == [f"study=synth/run-{rec.run_key}.parquet"]


@pytest.mark.parametrize("bad, match", [
    ({"study": "a/b"}, "study name"),
    ({"study": "study=x"}, "study name"),
    ({"setting": "semi"}, "setting"),
    ({"metrics": {"test2": {"r2": 1.0}}}, "fold"),
    ({"metrics": {"test": {"r2": "high"}}}, "not a number"),
    ({"metrics": {}}, "at least one metric"),
    ({"split_seed": 1.0}, "split_seed"),
    ({"task": ""}, "task"),
    ({"params": {"model": {"layers": object()}}}, "model.layers"),
])
def test_bad_records_are_refused(bad, match):
    with pytest.raises(ResultsError, match=match):
        _rec(**bad)


def test_flatten_params():
    flat = flatten_params({"lr": 0.1, "model": {"enc": {"dim": 8}, "act": "relu"}, "seeds": (1, 2), "ok": True})
    assert flat == {"params_lr": 0.1, "params_model__enc__dim": 8, "params_model__act": "relu",
                    "params_seeds": "[1,2]", "params_ok": True}


def test_results_layer_imports_no_torch_or_ray(tmp_path):
    code = ("import sys, mfray.results, mfray.results.report, mfray.cli.report; "
            "print(sorted(m for m in ('torch', 'ray', 'matplotlib', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
