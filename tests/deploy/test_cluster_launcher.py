"""Ray cluster-launcher configs (`ray up` YAML) pass Ray's own schema, the one `ray up` applies.

    .venv/bin/python -m pytest tests/deploy/test_cluster_launcher.py -q

`prepare_config` merges the provider defaults and `validate_config` checks the result against
ray/autoscaler/ray-schema.json of the installed Ray, exactly as `ray up` does before it launches anything.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.conftest import REPO

CONFIGS = sorted((REPO / "deploy" / "cluster-launcher").glob("*.yaml"))


def _ray_up_check(config: dict[str, Any]) -> dict[str, Any]:
    from ray.autoscaler._private.util import prepare_config, validate_config

    full = prepare_config(copy.deepcopy(config))
    validate_config(full)
    return full


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_passes_ray_up_schema(path: Path) -> None:
    config = yaml.safe_load(path.read_text())
    full = _ray_up_check(config)
    assert full["head_node_type"] in full["available_node_types"]
    assert sum(t.get("min_workers", 0) for t in full["available_node_types"].values()) <= full["max_workers"]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_uses_token_auth_and_keeps_the_dashboard_on_loopback(path: Path) -> None:
    config = yaml.safe_load(path.read_text())
    assert "~/.ray/auth_token" in config["file_mounts"]  # the token from `ray get-auth-token --generate`
    starts = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    for cmd in (c for c in starts if "ray start" in c):
        assert "RAY_AUTH_MODE=token ray start" in cmd, cmd
    head = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head and "0.0.0.0" not in head
    images = [config["docker"]["image"]] + [
        t["docker"]["worker_image"] for t in config["available_node_types"].values() if "docker" in t]
    assert all(i.startswith("REGISTRY/curation-mix:") for i in images)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda c: c["available_node_types"]["cpu_worker"].update(min_worker=1), "'min_worker' was unexpected"),
        (lambda c: c.update(max_worker=4), "'max_worker' was unexpected"),
        (lambda c: c["available_node_types"]["gpu_worker"].pop("node_config"), "'node_config' is a required"),
        (lambda c: c["docker"].update(imag="x"), "'imag' was unexpected"),
    ],
    ids=["node-type-typo", "top-level-typo", "no-node-config", "docker-typo"],
)
def test_ray_up_schema_rejects_broken_config(mutate: Any, message: str) -> None:
    config = yaml.safe_load(CONFIGS[0].read_text())
    mutate(config)
    with pytest.raises(jsonschema.ValidationError, match=message):
        _ray_up_check(config)


def test_ray_up_rejects_unknown_head_node_type() -> None:
    config = yaml.safe_load(CONFIGS[0].read_text())
    config["head_node_type"] = "ray.head.default"
    with pytest.raises(ValueError, match="head_node_type"):
        _ray_up_check(config)
