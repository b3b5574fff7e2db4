"""Offline schema check of the KubeRay manifests (RayCluster, RayJob) under deploy/kuberay/.

    from tests.deploy.k8s_schema import check_manifest
    errors = check_manifest(yaml.safe_load(text))   # [] when the manifest is valid

Two layers:

* Kubernetes core objects inside the custom resources (every pod template, a custom head Service) are checked
  by kubernetes-validate against the upstream OpenAPI schema of each version in ``K8S_VERSIONS``, in strict
  mode: an unknown key (``contianers``), a wrong type or a missing required field (a container without
  ``name``) fails.
* The KubeRay fields around them are checked against the field lists below, read from ray-project/kuberay
  ``ray-operator/apis/ray/v1/raycluster_types.go`` and ``rayjob_types.go`` (the ray.io/v1 CRDs; ``authOptions``
  needs KubeRay >= 1.5.1). The newest fields there (``networkPolicy``, ``tlsOptions``, ``historyServerOptions``,
  ``upgradeStrategy``, group ``priority``) are left out on purpose, so a manifest cannot silently depend on an
  operator newer than the one the README asks for: add a field here together with the KubeRay version that
  introduced it. Sub-objects our manifests never set (autoscaler, GCS fault tolerance, deletion strategy) are
  only checked to be objects.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import kubernetes_validate

# The oldest Kubernetes minor we claim to support and the newest schema kubernetes-validate==1.37.0 ships.
K8S_VERSIONS = ("1.29", "1.37")


@dataclass(frozen=True)
class Obj:
    """A mapping with exactly these keys allowed (``required`` ones must be present)."""

    fields: Mapping[str, Any]
    required: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class ListOf:
    item: Any


@dataclass(frozen=True)
class MapOf:
    """A mapping from any string key to values of one type (``map[string]string`` in Go)."""

    value: Any


@dataclass(frozen=True)
class OneOf:
    values: frozenset[str]


@dataclass(frozen=True)
class Core:
    """A Kubernetes core/v1 type (``PodTemplateSpec`` or a top-level kind), checked with the upstream schema."""

    name: str


OPAQUE = Obj({})  # marker: any mapping (see the module docstring)
INT32 = int

POD_TEMPLATE = Core("PodTemplateSpec")
SERVICE = Core("Service")

AUTH_OPTIONS = Obj({"mode": OneOf(frozenset({"disabled", "token"})), "secretName": str,
                    "enableK8sTokenAuth": bool})

HEAD_GROUP = Obj(
    {"template": POD_TEMPLATE, "headService": SERVICE, "enableIngress": bool, "resources": MapOf(str),
     "labels": MapOf(str), "rayStartParams": MapOf(str),
     "serviceType": OneOf(frozenset({"ClusterIP", "NodePort", "LoadBalancer", "ExternalName"}))},
    required=frozenset({"template"}),
)

WORKER_GROUP = Obj(
    {"suspend": bool, "groupName": str, "replicas": INT32, "minReplicas": INT32, "maxReplicas": INT32,
     "idleTimeoutSeconds": INT32, "resources": MapOf(str), "labels": MapOf(str), "rayStartParams": MapOf(str),
     "template": POD_TEMPLATE, "scaleStrategy": Obj({"workersToDelete": ListOf(str)}), "numOfHosts": INT32},
    required=frozenset({"groupName", "template"}),
)

RAY_CLUSTER_SPEC = Obj(
    {"authOptions": AUTH_OPTIONS,
     "suspend": bool, "managedBy": OneOf(frozenset({"ray.io/kuberay-operator", "kueue.x-k8s.io/multikueue"})),
     "autoscalerOptions": OPAQUE, "headServiceAnnotations": MapOf(str), "enableInTreeAutoscaling": bool,
     "gcsFaultToleranceOptions": OPAQUE, "headGroupSpec": HEAD_GROUP, "rayVersion": str,
     "workerGroupSpecs": ListOf(WORKER_GROUP)},
    required=frozenset({"headGroupSpec"}),
)

RAY_JOB_SPEC = Obj(
    {"activeDeadlineSeconds": INT32, "backoffLimit": INT32, "rayClusterSpec": RAY_CLUSTER_SPEC,
     "submitterPodTemplate": POD_TEMPLATE, "metadata": MapOf(str), "clusterSelector": MapOf(str),
     "submitterConfig": Obj({"backoffLimit": INT32}),
     "managedBy": OneOf(frozenset({"ray.io/kuberay-operator", "kueue.x-k8s.io/multikueue"})),
     "deletionStrategy": OPAQUE, "entrypoint": str, "runtimeEnvYAML": str, "jobId": str,
     "submissionMode": OneOf(frozenset({"K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"})),
     "entrypointResources": str, "entrypointNumCpus": float, "entrypointNumGpus": float,
     "ttlSecondsAfterFinished": INT32, "shutdownAfterJobFinishes": bool, "suspend": bool},
)

METADATA = Obj({"name": str, "namespace": str, "labels": MapOf(str), "annotations": MapOf(str)},
               required=frozenset({"name"}))

SPECS = {"RayCluster": RAY_CLUSTER_SPEC, "RayJob": RAY_JOB_SPEC}

# The head Service is named after the resource, and Service names must be DNS-1035 labels.
DNS_1035 = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")


def _core(value: Any, name: str, path: str) -> list[str]:
    if not isinstance(value, Mapping):
        return [f"{path}: expected an object, got {type(value).__name__}"]
    # kubernetes-validate reloads the schema on every call; most templates repeat across the tests.
    return [f"{path}{error}" for error in _core_cached(json.dumps(value, sort_keys=True), name)]


@functools.lru_cache(maxsize=256)
def _core_cached(value_json: str, name: str) -> tuple[str, ...]:
    value = json.loads(value_json)
    if name == "PodTemplateSpec":
        obj = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "check"}, "template": value}
        wrapped = True
    else:
        obj = {"apiVersion": "v1", "kind": name, **value}
        wrapped = False
    errors = []
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            parts = list(e.absolute_path)[1 if wrapped else 0:]  # drop the wrapper's "template"
            inner = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)
            errors.append(f"{inner}: {e.message} (Kubernetes {version} {name})")
    return tuple(errors)


def _check(value: Any, spec: Any, path: str) -> list[str]:
    if isinstance(spec, Core):
        return _core(value, spec.name, path)
    if isinstance(spec, Obj):
        if not isinstance(value, Mapping):
            return [f"{path}: expected an object, got {type(value).__name__}"]
        if spec is OPAQUE:
            return []
        errors = [f"{path}.{key}: unknown field" for key in value if key not in spec.fields]
        errors += [f"{path}.{key}: required field is missing" for key in sorted(spec.required - set(value))]
        for key, sub in value.items():
            if key in spec.fields:
                errors += _check(sub, spec.fields[key], f"{path}.{key}")
        return errors
    if isinstance(spec, ListOf):
        if not isinstance(value, list):
            return [f"{path}: expected a list, got {type(value).__name__}"]
        return [e for i, item in enumerate(value) for e in _check(item, spec.item, f"{path}[{i}]")]
    if isinstance(spec, MapOf):
        if not isinstance(value, Mapping):
            return [f"{path}: expected an object, got {type(value).__name__}"]
        return [e for key, sub in value.items() for e in _check(sub, spec.value, f"{path}.{key}")]
    if isinstance(spec, OneOf):
        return [] if isinstance(value, str) and value in spec.values else [f"{path}: {value!r} is not one of {sorted(spec.values)}"]
    # Scalars. YAML booleans are ints in Python, and a quoted number is a string: both are type errors here.
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool)) if spec is float else (
        type(value) is spec)
    return [] if ok else [f"{path}: expected {spec.__name__}, got {type(value).__name__} {value!r}"]


def _semantics(cluster: Mapping[str, Any], path: str) -> list[str]:
    """The checks KubeRay's own validation adds to the schema: replica bounds and unique group names."""
    errors = []
    groups = [g for g in cluster.get("workerGroupSpecs", []) if isinstance(g, Mapping)]
    names = [g.get("groupName") for g in groups]
    errors += [f"{path}.workerGroupSpecs: groupName {n!r} repeats" for n in sorted(set(names)) if names.count(n) > 1]
    for i, g in enumerate(groups):
        lo, n, hi = g.get("minReplicas", 0), g.get("replicas", 0), g.get("maxReplicas", 2**31 - 1)
        if all(type(x) is int for x in (lo, n, hi)) and not 0 <= lo <= n <= hi:
            errors.append(f"{path}.workerGroupSpecs[{i}]: needs 0 <= minReplicas <= replicas <= maxReplicas")
    return errors


def check_manifest(doc: Any) -> list[str]:
    """Returns every schema error of one RayCluster or RayJob document (an empty list when it is valid)."""
    if not isinstance(doc, Mapping):
        return [f"manifest: expected an object, got {type(doc).__name__}"]
    kind = doc.get("kind")
    if doc.get("apiVersion") != "ray.io/v1" or kind not in SPECS:
        return [f"manifest: expected apiVersion ray.io/v1 and kind in {sorted(SPECS)}, "
                f"got {doc.get('apiVersion')!r} {kind!r}"]
    top = Obj({"apiVersion": str, "kind": str, "metadata": METADATA, "spec": SPECS[kind]},
              required=frozenset({"apiVersion", "kind", "metadata", "spec"}))
    errors = _check(doc, top, kind)
    name = doc.get("metadata", {}).get("name") if isinstance(doc.get("metadata"), Mapping) else None
    if isinstance(name, str) and not DNS_1035.fullmatch(name):
        errors.append(f"{kind}.metadata.name: {name!r} is not a DNS-1035 label (lowercase, <= 63 characters)")
    spec = doc.get("spec")
    if kind == "RayJob" and isinstance(spec, Mapping):
        if "rayClusterSpec" not in spec and "clusterSelector" not in spec:
            errors.append(f"{kind}.spec: needs rayClusterSpec or clusterSelector")
        spec = spec.get("rayClusterSpec")
        path = f"{kind}.spec.rayClusterSpec"
    else:
        path = f"{kind}.spec"
    if isinstance(spec, Mapping) and isinstance(spec.get("workerGroupSpecs", []), list):
        errors += _semantics(spec, path)
    return errors
