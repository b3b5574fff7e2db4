"""KubeRay manifests: a schema check that can fail (k8s_schema.py), and the security rules every cluster keeps.

    .venv/bin/python -m pytest tests/deploy/test_kuberay.py -q
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO
from tests.deploy.k8s_schema import check_manifest

KUBERAY = REPO / "deploy" / "kuberay"
MANIFESTS = sorted(KUBERAY.glob("*.yaml"))
SECRET_ENV = {"RAY_AUTH_TOKEN", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}


def _load(name: str) -> dict[str, Any]:
    return yaml.safe_load((KUBERAY / name).read_text())


def _cluster_spec(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]


def _templates(cluster: dict[str, Any]) -> list[dict[str, Any]]:
    return [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster.get("workerGroupSpecs", [])]


def _containers(cluster: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for t in _templates(cluster) for c in t["spec"]["containers"]]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_passes_schema_check(path: Path) -> None:
    docs = list(yaml.safe_load_all(path.read_text()))
    assert docs and all(check_manifest(d) == [] for d in docs), [check_manifest(d) for d in docs]


def _head_container(doc: dict) -> dict:
    return doc["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]


def _worker(doc: dict, i: int = 0) -> dict:
    return doc["spec"]["workerGroupSpecs"][i]


def _typo_containers(doc: dict) -> None:
    spec = doc["spec"]["headGroupSpec"]["template"]["spec"]
    spec["contianers"] = spec.pop("containers")


def _typo_in_container(doc: dict) -> None:
    _head_container(doc)["volumeMount"] = _head_container(doc).pop("volumeMounts")


# Each mutation of the valid RayCluster must be caught, at the path named next to it.
BROKEN: dict[str, tuple[Callable[[dict], Any], str]] = {
    "typo-containers": (_typo_containers, "headGroupSpec.template.spec"),
    "typo-in-container": (_typo_in_container, "containers[0]"),
    "container-without-name": (lambda d: _worker(d)["template"]["spec"]["containers"][0].pop("name"),
                               "workerGroupSpecs[0].template.spec.containers[0]"),
    "env-as-mapping": (lambda d: _head_container(d).update(env={"RAY_AUTH_MODE": "token"}), "containers[0].env"),
    "bad-quantity": (lambda d: _head_container(d)["resources"]["limits"].update(cpu=[4]), "limits.cpu"),
    "unknown-crd-field": (lambda d: d["spec"].update(workerGroupSpec=[]), "spec.workerGroupSpec: unknown field"),
    "unknown-group-field": (lambda d: _worker(d).update(replica=2), "workerGroupSpecs[0].replica: unknown"),
    "replicas-as-string": (lambda d: _worker(d).update(replicas="4"), "workerGroupSpecs[0].replicas: expected int"),
    "start-param-not-string": (lambda d: d["spec"]["headGroupSpec"]["rayStartParams"].update({"num-cpus": 0}),
                               "rayStartParams.num-cpus: expected str"),
    "auth-mode-typo": (lambda d: d["spec"]["authOptions"].update(mode="tokens"), "authOptions.mode"),
    "no-head": (lambda d: d["spec"].pop("headGroupSpec"), "headGroupSpec: required field is missing"),
    "replicas-over-max": (lambda d: _worker(d).update(replicas=99), "minReplicas <= replicas <= maxReplicas"),
    "duplicate-group": (lambda d: d["spec"]["workerGroupSpecs"].append(copy.deepcopy(_worker(d))), "repeats"),
    "bad-name": (lambda d: d["metadata"].update(name="Curation_Cluster"), "DNS-1035"),
    "bad-head-service": (lambda d: d["spec"]["headGroupSpec"].update(headService={"spec": {"portz": []}}),
                         "headGroupSpec.headService.spec: Additional properties"),
    "wrong-api-version": (lambda d: d.update(apiVersion="ray.io/v1alpha1"), "expected apiVersion ray.io/v1"),
}


@pytest.mark.parametrize("mutation", sorted(BROKEN))
def test_schema_check_rejects_broken_raycluster(mutation: str) -> None:
    doc = _load("raycluster.yaml")
    mutate, where = BROKEN[mutation]
    mutate(doc)
    errors = check_manifest(doc)
    assert any(where in e for e in errors), errors


def test_schema_check_accepts_a_valid_head_service() -> None:
    doc = _load("raycluster.yaml")
    doc["spec"]["headGroupSpec"]["headService"] = {
        "metadata": {"annotations": {"example.com/owner": "curation"}},
        "spec": {"ports": [{"name": "dashboard", "port": 8265, "targetPort": 8265}]},
    }
    assert check_manifest(doc) == []


def test_schema_check_rejects_broken_rayjob() -> None:
    doc = _load("rayjob-quickstart.yaml")
    doc["spec"]["submissionMode"] = "K8sMode"
    doc["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["contianers"] = []
    errors = "\n".join(check_manifest(doc))
    assert "spec.submissionMode: 'K8sMode' is not one of" in errors
    assert "rayClusterSpec.workerGroupSpecs[0].template.spec" in errors and "contianers" in errors


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_every_ray_container_uses_token_auth_and_secret_credentials(path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    cluster = _cluster_spec(doc)
    assert cluster["authOptions"]["mode"] == "token"  # the operator makes the token Secret and shares it
    for c in _containers(cluster):
        assert {"name": "RAY_AUTH_MODE", "value": "token"} in c["env"] and c["image"].startswith("REGISTRY/")
        assert c["resources"]["limits"] == c["resources"]["requests"]
        for env in c["env"]:  # credentials come from Secrets, never as literal values in the manifest
            assert env["name"] not in SECRET_ENV or set(env) == {"name", "valueFrom"}, env


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_dashboard_is_never_exposed_outside_the_cluster(path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    head = _cluster_spec(doc)["headGroupSpec"]
    assert head.get("serviceType", "ClusterIP") == "ClusterIP" and not head.get("enableIngress", False)
    host = head["rayStartParams"]["dashboard-host"]
    # A RayJob needs the pod IP: the operator polls the job through the head service. Otherwise loopback only.
    assert host == ("0.0.0.0" if doc["kind"] == "RayJob" else "127.0.0.1")


def test_rayjob_runs_a_bundled_pipeline() -> None:
    job = _load("rayjob-quickstart.yaml")
    assert job["metadata"]["name"] and job["spec"]["shutdownAfterJobFinishes"] is True
    entry = job["spec"]["entrypoint"].split()
    assert entry[:2] == ["curate", "run"] and (REPO / entry[2]).is_file()


def test_raycluster_has_cpu_and_optional_gpu_workers() -> None:
    groups = {g["groupName"]: g for g in _load("raycluster.yaml")["spec"]["workerGroupSpecs"]}
    cpu, gpu = groups["cpu-workers"], groups["gpu-workers"]
    assert cpu["replicas"] >= 1 and gpu["minReplicas"] == 0  # GPU pods only when asked for
    gpu_container = gpu["template"]["spec"]["containers"][0]
    assert gpu_container["image"].endswith("-gpu") and gpu_container["resources"]["limits"]["nvidia.com/gpu"]
    assert "nvidia.com/gpu" not in cpu["template"]["spec"]["containers"][0]["resources"]["limits"]
