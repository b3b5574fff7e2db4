"""`curate serve` deploy files: the Kubernetes Deployment + Service (strict Kubernetes schema and the rules the
service needs), and the container entrypoint of deploy/docker/Dockerfile.serve, run for real.

    .venv/bin/python -m pytest tests/deploy/test_serve_k8s.py -q
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pytest
import yaml

from tests.conftest import REPO
from tests.deploy.k8s_schema import K8S_VERSIONS

SERVE = REPO / "deploy" / "k8s" / "serve.yaml"
DOCKERFILE = REPO / "deploy" / "docker" / "Dockerfile.serve"
TOKEN_ENV = {"CURATE_SERVE_READ_TOKENS", "CURATE_SERVE_SUBMIT_TOKENS"}
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|ACCESS_KEY", re.I)


def _schema_errors(doc: Any) -> list[str]:
    errors = []
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e.absolute_path)
            errors.append(f"{doc.get('kind')}{where}: {e.message} (Kubernetes {version})")
        except Exception as e:  # noqa: BLE001 - an unknown kind/apiVersion is an error of the manifest
            errors.append(f"{doc.get('kind')}: {type(e).__name__}: {e} (Kubernetes {version})")
    return errors


def check_serve(docs: list[Any]) -> list[str]:
    """Every problem of the serve manifests: strict schema, then what the service itself needs."""
    errors = [e for d in docs for e in _schema_errors(d)]
    if errors:  # the rules below read fields whose shape the schema guarantees
        return errors
    by_kind = {d.get("kind"): d for d in docs if isinstance(d, Mapping)}
    if sorted(by_kind) != ["Deployment", "Service"] or len(docs) != 2:
        return [f"expected one Deployment and one Service, got {[d.get('kind') for d in docs]}"]
    dep, svc = by_kind["Deployment"], by_kind["Service"]
    spec = dep.get("spec", {})
    pod = spec.get("template", {})
    labels = pod.get("metadata", {}).get("labels", {})
    if spec.get("replicas") != 1 or spec.get("strategy", {}).get("type") != "Recreate":
        errors.append("Deployment.spec: needs replicas 1 and strategy Recreate (one writer of the SQLite job table)")
    if spec.get("selector", {}).get("matchLabels") != labels:
        errors.append("Deployment.spec.selector.matchLabels: must equal the pod template's labels")
    c = pod["spec"]["containers"][0]
    env = {e.get("name"): e for e in c.get("env", [])}
    for name, e in env.items():
        if (name in TOKEN_ENV or SECRET_NAME.search(str(name))) and "value" in e:
            errors.append(f"containers[0].env.{name}: a secret inline; take it from a Secret (valueFrom.secretKeyRef)")
    for name in sorted(TOKEN_ENV):
        if "secretKeyRef" not in env.get(name, {}).get("valueFrom", {}):
            errors.append(f"containers[0].env.{name}: missing, or not from a Secret (the service binds 0.0.0.0 "
                          "and refuses to start without tokens)")
    root = env.get("CURATE_RUNS_ROOT", {}).get("value", "")
    mounts = [m.get("mountPath", "") for m in c.get("volumeMounts", [])]
    if not (re.match(r"^[a-z0-9]+://", root) or any(root.startswith(m.rstrip("/") + "/") for m in mounts)):
        errors.append(f"containers[0].env.CURATE_RUNS_ROOT: {root!r} is neither under a mounted volume {mounts} "
                      "nor a bucket URL")
    if not str(c.get("image", "")).startswith("REGISTRY/"):
        errors.append("containers[0].image: use the REGISTRY/ placeholder like the other deploy files")
    if not pod.get("spec", {}).get("securityContext", {}).get("runAsNonRoot"):
        errors.append("Deployment pod securityContext.runAsNonRoot: must be true")
    sspec = svc.get("spec", {})
    if sspec.get("type") != "ClusterIP":
        errors.append(f"Service.spec.type: {sspec.get('type')!r}, expected ClusterIP "
                      "(publish through an Ingress with TLS)")
    if sspec.get("selector") != labels:
        errors.append("Service.spec.selector: must equal the pod template's labels")
    ports = {p.get("name"): p.get("containerPort") for p in c.get("ports", [])}
    for p in sspec.get("ports", []):
        target = p.get("targetPort")
        if target not in ports and target not in ports.values():
            errors.append(f"Service.spec.ports.targetPort: {target!r} names no container port {ports}")
    return errors


def _docs() -> list[Any]:
    return list(yaml.safe_load_all(SERVE.read_text()))


def test_serve_manifests_pass_strict_schema_and_service_rules() -> None:
    assert check_serve(_docs()) == []


def _dep(docs: list[Any]) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == "Deployment")


def _container(docs: list[Any]) -> dict[str, Any]:
    return _dep(docs)["spec"]["template"]["spec"]["containers"][0]


def _env(docs: list[Any], name: str) -> dict[str, Any]:
    return next(e for e in _container(docs)["env"] if e["name"] == name)


def _inline_token(docs: list[Any]) -> None:
    e = _env(docs, "CURATE_SERVE_READ_TOKENS")
    e.pop("valueFrom")
    e["value"] = "read-token-0123456789abcdef"


BROKEN: dict[str, tuple[Callable[[list[Any]], Any], str]] = {
    "typo-containers": (lambda d: _dep(d)["spec"]["template"]["spec"].update(contianers=[]), "contianers"),
    "ports-as-mapping": (lambda d: _container(d).update(ports={"http": 8000}), "containers[0].ports"),
    "inline-token": (_inline_token, "CURATE_SERVE_READ_TOKENS: a secret inline"),
    "no-submit-token": (lambda d: _container(d)["env"].remove(_env(d, "CURATE_SERVE_SUBMIT_TOKENS")),
                        "CURATE_SERVE_SUBMIT_TOKENS: missing"),
    "selector-mismatch": (lambda d: d[1]["spec"].update(selector={"app": "other"}), "Service.spec.selector"),
    "load-balancer": (lambda d: d[1]["spec"].update(type="LoadBalancer"), "expected ClusterIP"),
    "wrong-target-port": (lambda d: d[1]["spec"]["ports"][0].update(targetPort="web"), "names no container port"),
    "runs-root-off-volume": (lambda d: _env(d, "CURATE_RUNS_ROOT").update(value="/srv/runs"), "neither under"),
    "two-replicas": (lambda d: _dep(d)["spec"].update(replicas=2), "replicas 1"),
    "replicas-as-string": (lambda d: _dep(d)["spec"].update(replicas="1"), "spec.replicas"),
}


@pytest.mark.parametrize("mutation", sorted(BROKEN))
def test_check_rejects_a_broken_serve_manifest(mutation: str) -> None:
    docs = copy.deepcopy(_docs())
    mutate, where = BROKEN[mutation]
    mutate(docs)
    errors = check_serve(docs)
    assert any(where in e for e in errors), errors


def _entrypoint() -> list[str]:
    line = next(ln for ln in DOCKERFILE.read_text().splitlines() if ln.startswith("ENTRYPOINT "))
    return json.loads(line.removeprefix("ENTRYPOINT "))


def test_serve_image_reuses_the_cpu_image_and_installs_nothing() -> None:
    text = DOCKERFILE.read_text()
    assert "ARG BASE=REGISTRY/curation-mix:0.1.0\nFROM ${BASE}" in text
    assert not re.search(r"^RUN ", text, re.M)  # the pins stay exactly the CPU image's
    assert not re.search(r"^ENV .*TOKEN", text, re.M)  # tokens only at run time
    assert _entrypoint()[:2] == ["/bin/sh", "-c"]


def _start(env: dict[str, str], tmp: Path, *args: str) -> subprocess.Popen:
    # The entrypoint as the container runs it, with this checkout's `curate` on PATH and a free port.
    from tests.curation.service.conftest import free_port

    port = free_port()
    cmd = _entrypoint()
    cmd[2] = cmd[2].replace("--host 0.0.0.0 --port 8000", f"--host 0.0.0.0 --port {port}")
    full = {**os.environ, "PATH": f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}", "PYTHONPATH": str(REPO),
            "CURATE_RUNS_ROOT": str(tmp / "runs"), "CURATE_STATE_DIR": str(tmp / "state"), **env}
    for k in TOKEN_ENV - set(env):
        full.pop(k, None)
    p = subprocess.Popen([*cmd, *args], env=full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    p.port = port  # type: ignore[attr-defined]
    return p


def test_entrypoint_refuses_to_start_without_tokens(tmp_path: Path) -> None:
    (tmp_path / "runs").mkdir()
    p = _start({}, tmp_path)
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 2 and "refusing to bind 0.0.0.0 without tokens" in " ".join(out.split()), out


@pytest.mark.slow
def test_entrypoint_serves_the_runs_root_with_tokens_from_env(tmp_path: Path) -> None:
    (tmp_path / "runs").mkdir()
    read, submit = "read-token-0123456789abcdef", "submit-token-0123456789abcdef"
    p = _start({"CURATE_SERVE_READ_TOKENS": read, "CURATE_SERVE_SUBMIT_TOKENS": submit}, tmp_path)
    url = f"http://127.0.0.1:{p.port}"  # type: ignore[attr-defined]
    try:
        deadline = time.time() + 60
        while True:
            try:
                if httpx.get(url + "/static/style.css", timeout=2).status_code == 200:  # the probe's path
                    break
            except httpx.HTTPError:
                pass
            assert p.poll() is None and time.time() < deadline, p.stdout.read() if p.poll() is not None else "slow"
            time.sleep(0.3)
        assert httpx.get(url + "/api/runs", timeout=10).status_code == 401
        r = httpx.get(url + "/api/runs", headers={"Authorization": f"Bearer {read}"}, timeout=10)
        assert r.status_code == 200 and r.json()["root"] == str((tmp_path / "runs").resolve())
    finally:
        p.terminate()
        p.wait(timeout=30)
