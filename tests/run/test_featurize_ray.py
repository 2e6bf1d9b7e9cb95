"""The Ray Data featurise pipeline gives the same store as the in-process one."""

import pyarrow as pa
import pytest

from mfray.run.featurize import featurize_dataset

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_executor_equals_local(ray_local, demo_spec, demo_store, tmp_path):
    res = featurize_dataset(demo_spec, tmp_path, executor="ray", num_workers=2, batch_size=128,
                            progress=False, log=lambda m: None)
    assert not res.cache_hit
    assert res.store.manifest["counts"] == demo_store.manifest["counts"]
    a = res.store.graphs().sort_by("mol_id")
    b = demo_store.graphs().sort_by("mol_id")
    assert a.equals(b)
    assert res.store.table("splits").sort(["seed", "mol_id"]).equals(demo_store.table("splits").sort(["seed", "mol_id"]))
