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


def test_kuberay_rayjob_has_the_shape_kuberay_and_mfray_need(repo):
    """A structural check of deploy/kuberay_rayjob.yaml (no Kubernetes here to apply it to): the fields
    KubeRay's RayJob requires, string rayStartParams, consistent replica bounds and resources, the same
    token auth and storage secrets on every pod, and an entrypoint that is a real mfray study command."""
    import shlex

    import ray

    doc = yaml.safe_load((repo / "deploy" / "kuberay_rayjob.yaml").read_text())
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayJob" and doc["metadata"]["name"]
    spec = doc["spec"]
    argv = shlex.split(spec["entrypoint"])
    assert argv[:5] == ["python", "-m", "mfray", "study", "run"]
    assert (repo / argv[5]).is_file()  # the study it runs is in the repository
    storage = argv[argv.index("--storage") + 1]
    assert storage.split("://")[0] in ("s3", "gs")  # every pod must reach it: an object store
    assert spec["shutdownAfterJobFinishes"] is True
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == ray.__version__ and cluster["enableInTreeAutoscaling"] is True
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"  # the head schedules, it does not train
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    assert set(groups) == {"cpu", "gpu"}
    pods = [head["template"]["spec"], *(g["template"]["spec"] for g in groups.values())]
    images = set()
    for g in groups.values():
        assert 0 <= g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]
    for group in [head, *groups.values()]:
        assert all(isinstance(v, str) for v in group["rayStartParams"].values())  # KubeRay wants strings
    for pod in pods:
        (c,) = pod["containers"]
        images.add(c["image"])
        assert c["resources"]["requests"] == c["resources"]["limits"]  # Ray reads the limits
        env = {e["name"]: e for e in c["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token"
        assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "ray-auth"
        assert env["MFRAY_CACHE"]["value"] == c["volumeMounts"][0]["mountPath"]
        assert {m["name"] for m in c["volumeMounts"]} <= {v["name"] for v in pod["volumes"]}
        assert c["envFrom"][0]["secretRef"]["name"] == "mfray-storage"
    assert len(images) == 1  # head and workers run the same mfray
    gpu = groups["gpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert gpu["nvidia.com/gpu"] == "1"
    assert "nvidia.com/gpu" not in groups["cpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]
