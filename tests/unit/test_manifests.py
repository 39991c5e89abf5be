"""The Kubernetes manifests in deploy/kubernetes: each resource valid against Kubernetes'
OpenAPI schemas (``kubernetes-validate``, offline, strict: unknown fields refused), the
agent DaemonSets as their generator writes them, and the wiring between them."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).parent.parent.parent
KUBE = ROOT / "deploy" / "kubernetes"
#: The Kubernetes versions validated against: the oldest with resource.k8s.io/v1 DRA
#: and the newest the validator knows.
VERSIONS = ("1.34.0", kubernetes_validate.latest_version())


def _resources() -> list[tuple[str, dict]]:
    kustomization = yaml.safe_load((KUBE / "kustomization.yaml").read_text())
    found = []
    for name in kustomization["resources"]:
        for document in yaml.safe_load_all((KUBE / name).read_text()):
            if document:
                found.append((name, document))
    return found


def _generator():
    spec = importlib.util.spec_from_file_location("deploy_kubernetes_agents", KUBE / "agents.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_is_valid_against_the_kubernetes_schemas(version):
    resources = _resources()
    kinds = {r["kind"] for _, r in resources}
    assert {
        "StatefulSet",
        "Service",
        "DaemonSet",
        "ClusterRole",
        "NetworkPolicy",
        "Secret",
    } <= kinds
    for name, resource in resources:
        try:
            kubernetes_validate.validate(resource, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(
                f"{name}: {resource['kind']} {resource['metadata']['name']}: {error.message}"
            )


def test_the_kustomization_lists_every_manifest_in_the_folder():
    listed = set(yaml.safe_load((KUBE / "kustomization.yaml").read_text())["resources"])
    present = {p.name for p in KUBE.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present


def test_the_agent_daemonsets_are_as_their_generator_writes_them():
    generator = _generator()
    for agent in generator.CLASSES:
        path = KUBE / f"agent-daemonset-{agent.name}.yaml"
        assert path.read_text() == generator.render(agent), (
            f"{path.name} differs from deploy/kubernetes/agents.py: run it"
        )


def test_the_pieces_refer_to_each_other():
    resources = {(r["kind"], r["metadata"]["name"]): r for _, r in _resources()}
    scheduler = resources[("StatefulSet", "anypu-scheduler")]["spec"]["template"]["spec"]
    ports = {p["name"] for p in scheduler["containers"][0]["ports"]}
    service = resources[("Service", "anypu-scheduler")]["spec"]
    assert {p["targetPort"] for p in service["ports"]} == ports
    assert resources[("StatefulSet", "anypu-scheduler")]["spec"]["volumeClaimTemplates"]
    role = resources[("ClusterRole", "anypu-agent")]["rules"]
    assert {"nodes", "resourceslices"} == {r for rule in role for r in rule["resources"]}
    for kind, name in resources:
        if kind != "DaemonSet":
            continue
        pod = resources[(kind, name)]["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == "anypu-agent"
        container = pod["containers"][0]
        assert "--kubernetes" in container["args"]
        secrets = {
            e["valueFrom"]["secretKeyRef"]["name"]
            for e in container["env"]
            if "secretKeyRef" in e.get("valueFrom", {})
        }
        assert secrets == {"anypu-join"}
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_the_validator_refuses_what_kubernetes_would():
    (resource,) = [r for _, r in _resources() if r["kind"] == "StatefulSet"]
    broken = yaml.safe_load(yaml.safe_dump(resource))
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["paht"] = "/"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[-1], strict=True)
    broken = yaml.safe_load(yaml.safe_dump(resource))
    broken["spec"]["replicas"] = "one"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[-1], strict=True)
