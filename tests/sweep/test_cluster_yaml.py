"""cluster.yaml is a valid Ray cluster-launcher config (the JSON schema that ships inside Ray)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def schema():
    return json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())


@pytest.fixture(scope="module")
def cluster():
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def test_cluster_yaml_matches_rays_schema(schema, cluster):
    jsonschema.validate(cluster, schema)


def test_cluster_yaml_has_cpu_head_and_autoscaling_gpu_workers(cluster):
    assert cluster["provider"]["type"] == "aws"
    head = cluster["available_node_types"][cluster["head_node_type"]]
    assert head["resources"].get("CPU") == 0, "the head runs the driver, not trials"
    workers = [t for name, t in cluster["available_node_types"].items() if name != cluster["head_node_type"]]
    assert len(workers) == 1
    gpu = workers[0]
    assert gpu["node_config"]["InstanceType"].startswith(("g", "p"))
    assert gpu["min_workers"] == 0 < gpu["max_workers"]
    setup = " ".join(cluster["setup_commands"] + cluster["worker_setup_commands"] + cluster["head_setup_commands"])
    assert "torch==2.13.0" in setup and "pip install --quiet -e ." in setup
    text = (ROOT / "cluster.yaml").read_text()
    assert text.startswith("#") and "ray up cluster.yaml" in text and "What to edit" in text


def test_schema_check_is_real(schema, cluster):
    bad = copy.deepcopy(cluster)
    bad["available_node_types"]["worker.gpu"]["min_workers"] = "zero"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
    bad = copy.deepcopy(cluster)
    bad["not_a_key"] = 1
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_cluster_local_yaml_rehearses_the_same_shape(schema, cluster):
    local = yaml.safe_load((ROOT / "cluster.local.yaml").read_text())
    jsonschema.validate(local, schema)
    assert local["provider"]["type"] == "fake_multinode"
    head = local["available_node_types"][local["head_node_type"]]
    assert head["resources"].get("CPU") == 0 and head["max_workers"] == 0  # like cluster.yaml's head
    workers = [t for name, t in local["available_node_types"].items() if name != local["head_node_type"]]
    assert len(workers) == 1 and workers[0]["min_workers"] == 0 < workers[0]["max_workers"]
    text = (ROOT / "cluster.local.yaml").read_text()
    assert text.startswith("#") and "RAY_FAKE_CLUSTER=1" in text and "--num-cpus=0" in text and "What to edit" in text
