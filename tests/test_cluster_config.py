"""ray-cluster.yaml passes the cluster launcher's own validation (what `ray up` runs)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parent.parent


def load() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "ray-cluster.yaml").read_text())
    return data


def test_cluster_config_passes_ray_up_validation() -> None:
    config = prepare_config(load())
    validate_config(config)
    assert config["head_node_type"] in config["available_node_types"]
    workers = config["available_node_types"]["ray.worker.default"]
    assert workers["min_workers"] >= 1 and workers["max_workers"] <= config["max_workers"]


def test_every_node_installs_goka_ray_from_the_mounted_checkout() -> None:
    config = prepare_config(load())
    assert config["file_mounts"]["~/goka-ray"] == "."
    install = [c for c in config["setup_commands"] if "pip install" in c and "goka-ray" in c]
    assert install and "-e ~/goka-ray" in install[0]
    # metrics of the partition actors are scraped from every node
    starts = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    assert sum("--metrics-export-port" in c for c in starts) == 2


def test_the_head_detects_a_lost_node_in_about_three_seconds() -> None:
    """The GCS health checks the multi-node tests and bench.node_loss run with."""
    import json
    import shlex

    (start,) = [c for c in prepare_config(load())["head_start_ray_commands"] if "--head" in c]
    (option,) = [a for a in shlex.split(start) if a.startswith("--system-config=")]
    checks = json.loads(option.split("=", 1)[1])
    assert checks == {
        "health_check_period_ms": 1000,
        "health_check_timeout_ms": 1000,
        "health_check_failure_threshold": 3,
    }


def test_the_on_prem_variant_in_the_comments_validates_too() -> None:
    config = load()
    for key in ("available_node_types", "head_node_type", "max_workers"):
        config.pop(key)
    config["provider"] = {
        "type": "local",
        "head_ip": "10.0.0.10",
        "worker_ips": ["10.0.0.11", "10.0.0.12"],
    }
    config["auth"] = {"ssh_user": "ubuntu", "ssh_private_key": "~/.ssh/id_rsa"}
    prepared = prepare_config(config)
    validate_config(prepared)
    (node_type,) = prepared["available_node_types"].values()
    assert node_type["min_workers"] == node_type["max_workers"] == 2  # the two worker_ips


def test_validation_is_real_a_broken_config_is_rejected() -> None:
    config = copy.deepcopy(load())
    config["available_node_types"]["ray.worker.default"]["min_workerz"] = 1
    with pytest.raises(Exception, match="min_workerz"):
        validate_config(prepare_config(config))
