"""A Ray cluster's nodes as one agent's devices (``anypu agent --backend ray``).

The inventory is Ray's own: each alive node of ``ray.nodes()`` offers its CPUs and the
accelerators its resources declare (``RAY_ACCELERATORS``: Ray's resource names, the
kind and vendor each stands for), of the model its ``accelerator_type:…`` resource or
label names. A short task pinned to each new node (``probe_node``) runs that node's own
device probes (``anypu.devices.discover``: NVML, ``npu-smi``…), which give the memory
and throughput Ray does not list; an accelerator Ray declares but the node's probes do
not find (declared resources, as on a machine without one) is offered as *simulated*
on that node's CPU, with the memory and TFLOPS of a probed sibling, of its model's table
entry, or else ``ASSUMED_MEMORY``/``ASSUMED_TFLOPS``, and every listing says so.

Each device is named ``<node>-<kind><i>`` (the first 8 hex digits of its Ray node id) and
carries where it is in ``extra``: ``ray_node_id``, ``ray_node_ip``, ``ray_resource``
(what a slice's actor claims a share of), ``ray_accelerator_type``, and the node's labels
as ``label.<key>``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from anypu.devices import Device, default_cpu_slicing, nvidia_tflops

__all__ = [
    "ASSUMED_MEMORY",
    "ASSUMED_TFLOPS",
    "RAY_ACCELERATORS",
    "RayAccelerator",
    "alive_nodes",
    "probe_node",
    "ray_node_devices",
]

log = logging.getLogger("anypu.agent")


@dataclass(frozen=True)
class RayAccelerator:
    """A Ray resource that counts accelerators: the device kind and vendor it means
    (``vendor_prefixes``: accelerator types that name another vendor)."""

    resource: str
    kind: str
    vendor: str
    vendor_prefixes: tuple[tuple[str, str], ...] = ()


#: Ray's accelerator resources (its accelerator managers' resource names).
RAY_ACCELERATORS: tuple[RayAccelerator, ...] = (
    RayAccelerator("GPU", "gpu", "nvidia", (("AMD-", "amd"), ("Intel-", "intel"))),
    RayAccelerator("NPU", "npu", "huawei"),
    RayAccelerator("HPU", "xpu", "habana"),
    RayAccelerator("TPU", "tpu", "google"),
    RayAccelerator("neuron_cores", "npu", "aws"),
)

#: What an accelerator Ray declares is taken to hold when nothing else says (no probed
#: sibling, no table entry): logged at each inventory, shown in ``extra["assumed"]``.
ASSUMED_MEMORY = 16 << 30
ASSUMED_TFLOPS = 10.0

_ACCELERATOR_TYPE = "accelerator_type:"


def alive_nodes(nodes: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The alive nodes of a ``ray.nodes()`` listing, by node id."""
    return sorted((n for n in nodes if n.get("Alive")), key=lambda n: str(n["NodeID"]))


def _accelerator_type(node: Mapping[str, Any]) -> str:
    resources = node.get("Resources") or {}
    for key in resources:
        if key.startswith(_ACCELERATOR_TYPE):
            return key[len(_ACCELERATOR_TYPE) :]
    labels = node.get("Labels") or {}
    return str(labels.get("ray.io/accelerator-type", ""))


def _labels(node: Mapping[str, Any]) -> dict[str, str]:
    return {f"label.{k}": str(v) for k, v in sorted((node.get("Labels") or {}).items())}


def ray_node_devices(
    node: Mapping[str, Any], found: Sequence[Device] = ()
) -> tuple[list[Device], list[str]]:
    """The devices Ray node ``node`` (one entry of ``ray.nodes()``) offers, given what
    its own probes ``found`` there; and a line for each thing assumed.

    CPU: the node's ``CPU`` resource, sliced as an agent slices its own cores
    (``default_cpu_slicing``), at the probed per-thread throughput, holding the node's
    ``memory`` resource. Accelerators: ``count`` of each ``RAY_ACCELERATORS`` resource
    (fractions of one are not offered: Ray hands them out, and a whole one is what a
    slice's share is cut from); the probed devices of that kind first, then simulated.
    """
    node_id = str(node["NodeID"])
    short = node_id[:8]
    resources: Mapping[str, float] = node.get("Resources") or {}
    base = {
        "ray_node_id": node_id,
        "ray_node_ip": str(node.get("NodeManagerAddress", "")),
        **_labels(node),
    }
    devices: list[Device] = []
    notes: list[str] = []
    cpus = int(resources.get("CPU", 0))
    probed_cpu = next((d for d in found if d.kind == "cpu"), None)
    if cpus >= 1:
        slices, threads = default_cpu_slicing(cpus)
        per_thread = 0.01  # no probe answered: a slow CPU's figure, said below
        model, vendor = "cpu", "unknown"
        if probed_cpu is not None:
            per_thread = probed_cpu.tflops / max(1, probed_cpu.slices * probed_cpu.threads)
            model, vendor = probed_cpu.model, probed_cpu.vendor
        else:
            notes.append(f"Ray node {short}: its CPU was not probed; taken at 0.01 TFLOPS a thread")
        devices.append(
            Device(
                device_id=f"{short}-cpu0",
                kind="cpu",
                vendor=vendor,
                model=model,
                memory_bytes=int(resources.get("memory", 0)),
                tflops=round(per_thread * slices * threads, 6),
                torch_device="cpu",
                slices=slices,
                threads=threads,
                extra={**base, "ray_resource": "CPU"},
            )
        )
    accelerator_type = _accelerator_type(node)
    for accelerator in RAY_ACCELERATORS:
        count = int(resources.get(accelerator.resource, 0))
        if count < 1:
            continue
        vendor = accelerator.vendor
        for prefix, other in accelerator.vendor_prefixes:
            if accelerator_type.startswith(prefix):
                vendor = other
        probed = [d for d in found if d.kind == accelerator.kind][:count]
        extra = {
            **base,
            "ray_resource": accelerator.resource,
            "ray_accelerator_type": accelerator_type,
        }
        for index in range(count):
            device_id = f"{short}-{accelerator.kind}{index}"
            if index < len(probed):
                device = dataclasses.replace(
                    probed[index],
                    device_id=device_id,
                    extra={**probed[index].extra, **extra},
                )
            else:
                device = _declared(
                    device_id, accelerator, vendor, accelerator_type, probed, extra, notes
                )
            devices.append(device)
    return devices, notes


def _declared(
    device_id: str,
    accelerator: RayAccelerator,
    vendor: str,
    accelerator_type: str,
    probed: Sequence[Device],
    extra: dict[str, str],
    notes: list[str],
) -> Device:
    """An accelerator Ray declares that the node's probes did not find: simulated."""
    model = accelerator_type or accelerator.resource
    known = nvidia_tflops(model) if vendor == "nvidia" else None
    assumed = "memory,tflops"
    if probed:
        memory, tflops, assumed = probed[0].memory_bytes, probed[0].tflops, ""
        what = "the memory and TFLOPS of a probed sibling"
    elif known is not None:
        memory, tflops, assumed = ASSUMED_MEMORY, known[0], "memory"
        what = "fp32 TFLOPS from the table and assumed memory"
    else:
        memory, tflops = ASSUMED_MEMORY, ASSUMED_TFLOPS
        what = "assumed memory and TFLOPS"
    notes.append(
        f"{device_id}: Ray declares a {accelerator.resource} ({model}) its node's probes did"
        f" not find: offered simulated on that node's CPU, with {what}"
        f" ({memory / 2**30:.0f} GiB, {tflops:g} TFLOPS)"
    )
    return Device(
        device_id=device_id,
        kind=accelerator.kind,
        vendor=vendor,
        model=model,
        memory_bytes=memory,
        tflops=tflops,
        torch_device="cpu",
        simulated=True,
        extra={**extra, "assumed": assumed} if assumed else extra,
    )


def probe_node() -> list[Device]:
    """The devices this machine's probes find (run as a Ray task on each new node)."""
    from anypu.devices import discover

    return discover()
