"""Write the agent DaemonSets, one per accelerator class, from ``CLASSES``.

``python deploy/kubernetes/agents.py`` rewrites ``agent-daemonset-<class>.yaml``;
``tests/unit/test_manifests.py`` fails when a committed one differs from what this
writes (edit the table or the template here, not the YAML). Each class's DaemonSet runs
on the nodes its selector picks, claims the device plugin's resource it names, and
starts ``anypu agent --kubernetes`` there (which offers only what the node hands out).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

HERE = Path(__file__).parent


@dataclass(frozen=True)
class AgentClass:
    name: str
    #: Node labels the class's nodes carry (set by the vendor's feature discovery).
    node_selector: dict[str, str]
    #: The device plugin's resource and how many of a node's devices the pod claims.
    resource: str = ""
    count: int = 0
    tier: str = "cloud"
    note: str = ""


CLASSES = (
    AgentClass(
        "nvidia",
        {"nvidia.com/gpu.present": "true"},
        "nvidia.com/gpu",
        8,
        note="GPU feature discovery's label; claim as many GPUs as the nodes have",
    ),
    AgentClass(
        "ascend",
        {"accelerator": "huawei-Ascend910"},
        "huawei.com/Ascend910",
        8,
        note="the Ascend device plugin's node label and resource",
    ),
    AgentClass(
        "cpu",
        {"anypu.io/cpu-agent": "true"},
        note="label the CPU-only nodes that should offer their cores",
    ),
)


def daemonset(agent: AgentClass) -> dict:
    limits: dict[str, object] = {"memory": "16Gi"}
    if agent.resource:
        limits[agent.resource] = agent.count
    env = [
        {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {
            "name": "ANYPU_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": "anypu-join", "key": "token"}},
        },
        {
            "name": "ANYPU_CA_HASH",
            "valueFrom": {"secretKeyRef": {"name": "anypu-join", "key": "ca-hash"}},
        },
    ]
    labels = {"app.kubernetes.io/name": "anypu", "app.kubernetes.io/component": "agent"}
    pod_labels = {**labels, "anypu.io/agent-class": agent.name}
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {
            "name": f"anypu-agent-{agent.name}",
            "namespace": "anypu",
            "labels": dict(labels),
        },
        "spec": {
            "selector": {"matchLabels": dict(pod_labels)},
            "template": {
                "metadata": {
                    "labels": dict(pod_labels),
                    # The convention Prometheus' kubernetes_sd relabelling examples read.
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": "8081",
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": {
                    "serviceAccountName": "anypu-agent",
                    "nodeSelector": agent.node_selector,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 10001},
                    "containers": [
                        {
                            "name": "agent",
                            "image": "anypu",
                            "args": [
                                "agent",
                                "--scheduler=anypu-scheduler.anypu.svc:7070",
                                f"--tier={agent.tier}",
                                "--name=$(NODE_NAME)",
                                "--kubernetes",
                                "--direct-address=$(POD_IP):7080",
                                "--health-address=0.0.0.0:8081",
                                "--cache-dir=/var/cache/anypu",
                            ],
                            "env": env,
                            "ports": [
                                {"name": "direct", "containerPort": 7080, "protocol": "TCP"},
                                {"name": "health", "containerPort": 8081, "protocol": "TCP"},
                            ],
                            "livenessProbe": {
                                "httpGet": {"path": "/healthz", "port": "health"},
                                "periodSeconds": 10,
                            },
                            "readinessProbe": {
                                "httpGet": {"path": "/readyz", "port": "health"},
                                "periodSeconds": 5,
                            },
                            "resources": {
                                "requests": {"cpu": "1", "memory": "2Gi"},
                                "limits": limits,
                            },
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "capabilities": {"drop": ["ALL"]},
                            },
                            "volumeMounts": [{"name": "cache", "mountPath": "/var/cache/anypu"}],
                        }
                    ],
                    "volumes": [{"name": "cache", "emptyDir": {"sizeLimit": "20Gi"}}],
                },
            },
        },
    }


def render(agent: AgentClass) -> str:
    header = (
        f"# Written by deploy/kubernetes/agents.py (edit it, not this file): agents on\n"
        f"# {agent.name} nodes; {agent.note}.\n"
    )
    return header + yaml.safe_dump(daemonset(agent), sort_keys=False)


def main() -> int:
    for agent in CLASSES:
        (HERE / f"agent-daemonset-{agent.name}.yaml").write_text(render(agent))
    return 0


if __name__ == "__main__":
    sys.exit(main())
