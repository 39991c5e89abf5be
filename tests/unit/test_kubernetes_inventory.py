"""A Kubernetes node's account of its devices, from API answers as the server gives them
(``tests/data/kubernetes``: shaped after public captures of device-plugin, GPU feature
discovery, HAMi and NVIDIA DRA driver nodes; no API server runs here)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from anypu.agents._kubernetes import (
    KUBERNETES_RESOURCES,
    node_inventory,
    offered_devices,
    quantity,
)
from anypu.devices import Device

DATA = Path(__file__).parent.parent / "data" / "kubernetes"
GIB = 1 << 30


def _load(name: str) -> dict:
    return json.loads((DATA / name).read_text())


def _gpu(index: int, vendor: str = "nvidia", kind: str = "gpu", model: str = "A100") -> Device:
    return Device(f"{kind}{index}", kind, vendor, model, 40 * GIB, 19.5, f"cuda:{index}")


CPU = Device("cpu0", "cpu", "intel", "Xeon", 64 * GIB, 0.63, "cpu", slices=63, threads=4)


def test_quantities_are_read_as_the_api_writes_them():
    assert quantity("95690m") == pytest.approx(95.69)
    assert quantity("1166232576Ki") == 1166232576 * 1024
    assert quantity("81559Mi") == 81559 * 2**20
    assert quantity("8") == 8


def test_a_device_plugin_node_with_gpu_feature_discovery_labels():
    inventory = node_inventory(_load("node-gpu.json"))
    assert inventory.node == "gpu-node-1"
    assert inventory.labels["topology.kubernetes.io/zone"] == "eu-central-1a"
    assert inventory.cpu_cores == pytest.approx(95.69)
    assert inventory.memory_bytes == 1166232576 * 1024
    (gpus,) = inventory.accelerators
    assert (gpus.kind, gpus.vendor, gpus.count, gpus.resource) == (
        "gpu",
        "nvidia",
        8,
        "nvidia.com/gpu",
    )
    assert gpus.model == "NVIDIA-A100-SXM4-40GB" and gpus.memory_bytes == 40960 << 20


def test_hami_counts_its_virtual_gpus_and_registers_the_physical_ones():
    inventory = node_inventory(_load("node-hami.json"))
    (gpus,) = inventory.accelerators  # gpumem and gpucores are not devices
    assert gpus.count == 2 and gpus.split == 10
    assert gpus.memory_bytes == 32 * GIB and gpus.model == "NVIDIA-Tesla V100-PCIE-32GB"
    assert gpus.names[0] == "GPU-00552014-5c87-89ac-b1a6-7b53aa24b0ec"
    assert any("20 counts HAMi's virtual devices: 2 physical" in n for n in inventory.notes)


def test_dra_resource_slices_of_this_node_only():
    inventory = node_inventory(_load("node-dra.json"), _load("resourceslices-dra.json")["items"])
    (gpus,) = inventory.accelerators
    assert (gpus.resource, gpus.count, gpus.names) == ("dra:gpu.nvidia.com", 2, ("gpu-0", "gpu-1"))
    assert gpus.model == "NVIDIA H100 80GB HBM3" and gpus.memory_bytes == 81559 << 20


def test_every_device_plugin_resource_maps_to_a_kind_and_vendor():
    inventory = node_inventory(_load("node-every-plugin.json"))
    found = {(a.resource, a.kind, a.vendor, a.count) for a in inventory.accelerators}
    assert ("huawei.com/Ascend910B", "npu", "huawei", 8) in found
    assert ("amd.com/gpu", "gpu", "amd", 8) in found
    assert next(a for a in inventory.accelerators if a.vendor == "huawei").model == "910B"
    assert {a.resource for a in inventory.accelerators} == set(
        _load("node-every-plugin.json")["status"]["allocatable"]
    ) - {"cpu", "memory", "pods", "example.com/foo"}
    vendors = {r.vendor for r in KUBERNETES_RESOURCES}
    assert vendors == {a.vendor for a in inventory.accelerators}  # every vendor in the table


def test_the_agent_offers_what_it_sees_as_far_as_kubernetes_hands_it_out():
    inventory = node_inventory(_load("node-gpu.json"))
    found = [CPU, _gpu(0), _gpu(1), _gpu(0, "huawei", "npu", "Ascend910B")]
    offered, notes = offered_devices(inventory, found)
    assert [d.device_id for d in offered] == ["cpu0", "gpu0", "gpu1"]
    assert offered[1].extra["kubernetes_resource"] == "nvidia.com/gpu"
    assert offered[1].extra["kubernetes_model"] == "NVIDIA-A100-SXM4-40GB"
    # The NPU is not Kubernetes' to hand out: held back, and said.
    assert any("npu0 (huawei Ascend910B) is not offered" in n for n in notes)
    # Six of the node's eight GPUs are not in this pod: said with how to claim them.
    assert any(
        "has 8 nvidia gpu(s)" in n and "sees 2" in n and "resources.limits nvidia.com/gpu" in n
        for n in notes
    )


def test_a_pod_seeing_more_than_the_node_lists_offers_only_what_is_listed():
    inventory = node_inventory(_load("node-hami.json"))
    offered, notes = offered_devices(inventory, [_gpu(i) for i in range(3)])
    assert [d.device_id for d in offered] == ["gpu0", "gpu1"]
    assert offered[0].extra["hami_split"] == "10"
    assert offered[1].extra["kubernetes_device"] == "GPU-0fc3eda5-e98b-a25b-5b0d-cf5c855d1448"
    assert any("gpu2 is not offered: node hami-node-1 lists 2" in n for n in notes)


def test_the_cpu_is_offered_within_what_the_node_allocates():
    inventory = dataclasses.replace(node_inventory(_load("node-hami.json")), cpu_cores=8.5)
    (cpu,), notes = offered_devices(inventory, [CPU])
    assert cpu.slices * cpu.threads <= 8
    assert cpu.memory_bytes == 65478396 * 1024  # the node's allocatable, under the probe's
    assert any("allocates 8.5 CPU(s) to pods" in n for n in notes)
    small = dataclasses.replace(CPU, slices=2, threads=1)
    (cpu,), _ = offered_devices(inventory, [small])
    assert (cpu.slices, cpu.threads) == (2, 1)


def test_the_node_read_again_tells_what_changed_and_keeps_the_last_on_failure():
    from anypu.agents._kubernetes import KubernetesWatch
    from anypu.errors import ConfigError

    node = _load("node-gpu.json")
    answers = [(node, [])]
    found = [CPU, _gpu(0)]
    offered, _ = offered_devices(node_inventory(node), found)
    labels = node_inventory(node).labels
    watch = KubernetesWatch(
        lambda: answers[-1], found, offered, lambda d: d, 0.01, labels, own={"site": "shop-7"}
    )
    assert watch.once() is None  # nothing changed
    gone = json.loads(json.dumps(node))
    gone["status"]["allocatable"].pop("nvidia.com/gpu")  # its device plugin went away
    answers.append((gone, []))
    devices, why, now_labelled = watch.once()
    assert [d.device_id for d in devices] == ["cpu0"]
    assert why == "Kubernetes node gpu-node-1: gpu0 no longer offered"
    assert now_labelled == {**labels, "site": "shop-7"}
    assert watch.once() is None
    # Relabelled (kubectl label node …): the agent's labels follow; its own still win.
    relabelled = json.loads(json.dumps(gone))
    zone = "topology.kubernetes.io/zone"
    relabelled["metadata"]["labels"] |= {zone: "zone-b", "site": "from-node", "pool": "a"}
    answers.append((relabelled, []))
    devices, why, now_labelled = watch.once()
    assert [d.device_id for d in devices] == ["cpu0"]
    assert now_labelled[zone] == "zone-b" and now_labelled["pool"] == "a"
    assert now_labelled["site"] == "shop-7"
    assert why == (
        f"Kubernetes node gpu-node-1: label pool=a added, label {zone}={labels[zone]} -> zone-b"
    )

    import threading

    def fail() -> tuple:
        raise ConfigError("--kubernetes: the API server did not answer")

    watch.read = fail
    stop, seen = threading.Event(), []
    thread = threading.Thread(target=watch.watch, args=(stop, lambda d, w, _=None: seen.append(w)))
    thread.start()
    threading.Event().wait(0.1)
    stop.set()
    thread.join(5)
    assert seen == [] and [d.device_id for d in watch.offered] == ["cpu0"]
