"""Fixtures of tests/results (the synthetic study lives in results_synth.py, importable by name)."""

from __future__ import annotations

import pytest
from results_synth import records

from mfray.results import ResultsStore


@pytest.fixture(scope="session")
def synth_store(tmp_path_factory) -> ResultsStore:
    store = ResultsStore(tmp_path_factory.mktemp("results"))
    assert store.append_runs(records()) == 60
    return store
