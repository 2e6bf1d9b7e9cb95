"""Shared test fixtures. Tests run on CPU in seconds; real-data tests skip when ../shared/data is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


@pytest.fixture(scope="session")
def demo_spec():
    from mfray.data.specs import load_spec

    return load_spec(REPO / "data_specs" / "aid1445.toml")


@pytest.fixture(scope="session")
def demo_store(tmp_path_factory, demo_spec):
    """The bundled AID 1445 demo featurised once per session (in-process executor)."""
    from mfray.run.featurize import featurize_dataset

    root = tmp_path_factory.mktemp("stores")
    return featurize_dataset(demo_spec, root, executor="local", progress=False, log=lambda m: None).store


def write_spec(path: Path, body: str) -> Path:
    path.write_text(body)
    return path
