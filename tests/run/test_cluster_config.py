"""ray_cluster.yaml is a valid Ray autoscaler config with the shape the design asks for."""

import copy

import yaml

from ray.autoscaler._private.util import prepare_config, validate_config


def test_cluster_yaml_validates_and_has_the_designed_pools(repo):
    raw = yaml.safe_load((repo / "ray_cluster.yaml").read_text())
    cfg = prepare_config(copy.deepcopy(raw))  # fills defaults as `ray up` does
    validate_config(cfg)  # Ray's own JSON schema + consistency checks
    nodes = raw["available_node_types"]
    assert raw["head_node_type"] == "head"
    assert nodes["head"]["resources"] == {"CPU": 0}  # the head does no work
    assert nodes["cpu_worker"]["min_workers"] == 0 and "GPU" not in nodes["cpu_worker"]["resources"]
    assert nodes["gpu_worker"]["min_workers"] == 0 and nodes["gpu_worker"]["resources"]["GPU"] >= 1
    assert sum(n.get("max_workers", 0) for n in nodes.values()) <= raw["max_workers"]
    start = " ".join(raw["head_start_ray_commands"])
    assert "--num-cpus=0" in start and "RAY_AUTH_MODE=token" in start
    assert any("requirements.lock" in c for c in raw["setup_commands"])
