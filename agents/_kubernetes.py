"""A Kubernetes node's own account of its devices (``anypu agent --kubernetes``).

An agent in a pod offers what its probes find there (NVML, ``npu-smi``…, the devices
the pod was given), but only as far as Kubernetes hands those devices out: what the
node's device plugins advertise (``status.allocatable``: ``nvidia.com/gpu``,
``huawei.com/Ascend910``, ``amd.com/gpu``… — ``KUBERNETES_RESOURCES``), what its DRA
drivers publish (``resource.k8s.io`` ResourceSlices for the node: each device with its
product name and memory), and what HAMi registered (its ``hami.io/node-nvidia-register``
annotation: each physical GPU, where ``allocatable`` counts HAMi's virtual ones). So:

- a probed accelerator Kubernetes lists is offered, carrying what Kubernetes calls it
  (``extra["kubernetes_resource"]``, the DRA device's name and product, HAMi's split);
- one Kubernetes does not list is **not** offered (its scheduler would give it to other
  pods): the agent says so;
- one Kubernetes lists that this pod does not see is not offered either, and the agent
  says how to claim it (the DaemonSet's ``resources.limits`` or its ResourceClaim);
- the CPU is offered at most to the node's allocatable cores, memory at most to its
  allocatable memory;
- the node's labels become the agent's (``--label`` wins), so label selectors see
  ``topology.kubernetes.io/zone``, ``nvidia.com/gpu.product``…;
- the node is read again every ``REREAD_EVERY_S`` (``KubernetesWatch``), and the agent
  joins the scheduler anew when what it may offer or its labels changed.

``node_inventory`` is pure over the API's JSON (as recorded in tests);
``read_node`` fetches it with the ``kubernetes`` client (in-cluster service account,
or a kubeconfig).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from anypu.agents._inventory import InventoryChanged
from anypu.devices import Device, default_cpu_slicing
from anypu.errors import ConfigError

__all__ = [
    "DRA_DRIVERS",
    "KUBERNETES_RESOURCES",
    "REREAD_EVERY_S",
    "KubernetesAccelerator",
    "KubernetesWatch",
    "NodeInventory",
    "node_inventory",
    "offered_devices",
    "read_node",
]

log = logging.getLogger("anypu.agent")

#: How often ``--kubernetes`` reads its node again (``--kubernetes-reread``).
REREAD_EVERY_S = 60.0


@dataclass(frozen=True)
class DevicePluginResource:
    """An extended resource a vendor's device plugin advertises, and what it counts.
    ``prefix``: the name is a prefix, its rest the model (``huawei.com/Ascend910B``)."""

    name: str
    kind: str
    vendor: str
    prefix: bool = False


#: Device plugins' resource names (vendors' plugins, and HAMi's where it renames them).
KUBERNETES_RESOURCES: tuple[DevicePluginResource, ...] = (
    DevicePluginResource("nvidia.com/gpu", "gpu", "nvidia"),
    DevicePluginResource("amd.com/gpu", "gpu", "amd"),
    DevicePluginResource("gpu.intel.com/i915", "gpu", "intel"),
    DevicePluginResource("gpu.intel.com/xe", "gpu", "intel"),
    DevicePluginResource("huawei.com/Ascend", "npu", "huawei", prefix=True),
    DevicePluginResource("cambricon.com/mlu", "npu", "cambricon"),
    DevicePluginResource("cambricon.com/vmlu", "npu", "cambricon"),
    DevicePluginResource("hygon.com/dcunum", "gpu", "hygon"),
    DevicePluginResource("iluvatar.ai/vgpu", "gpu", "iluvatar"),
    DevicePluginResource("kunlunxin.com/xpu", "npu", "kunlunxin"),
    DevicePluginResource("metax-tech.com/gpu", "gpu", "metax"),
    DevicePluginResource("metax-tech.com/sgpu", "gpu", "metax"),
    DevicePluginResource("mthreads.com/vgpu", "gpu", "mthreads"),
    DevicePluginResource("enflame.com/vgcu", "npu", "enflame"),
    DevicePluginResource("enflame.com/gcu", "npu", "enflame"),
)

#: DRA drivers whose ResourceSlices' devices are accelerators: driver -> (kind, vendor).
DRA_DRIVERS: Mapping[str, tuple[str, str]] = {
    "gpu.nvidia.com": ("gpu", "nvidia"),
    "gpu.amd.com": ("gpu", "amd"),
    "gpu.intel.com": ("gpu", "intel"),
}

#: Where HAMi registers each physical device of a node, by vendor.
HAMI_REGISTER = {"nvidia": "hami.io/node-nvidia-register"}


def quantity(text: object) -> float:
    """A Kubernetes resource quantity (``7910m``, ``32853032Ki``, ``80Gi``), by the
    client's own parser."""
    from kubernetes.utils import parse_quantity

    return float(parse_quantity(text))


@dataclass(frozen=True)
class KubernetesAccelerator:
    """Accelerators of one kind and vendor as Kubernetes lists them on the node."""

    kind: str
    vendor: str
    count: int
    #: What hands them out: a device plugin's resource name, or ``dra:<driver>``.
    resource: str
    model: str = ""
    #: Each device's memory where Kubernetes says (DRA, HAMi, GPU feature discovery).
    memory_bytes: int = 0
    #: The DRA devices' names, or HAMi's device ids.
    names: tuple[str, ...] = ()
    #: HAMi's virtual devices per physical one (its ``deviceSplitCount``); 0: none.
    split: int = 0


@dataclass(frozen=True)
class NodeInventory:
    node: str
    labels: dict[str, str]
    cpu_cores: float
    memory_bytes: int
    accelerators: tuple[KubernetesAccelerator, ...]
    notes: tuple[str, ...] = field(default=())


def _device_plugin(name: str) -> tuple[DevicePluginResource, str] | None:
    for resource in KUBERNETES_RESOURCES:
        if name == resource.name or (resource.prefix and name.startswith(resource.name)):
            return resource, name[len(resource.name) :] if resource.prefix else ""
    return None


def _attribute(device: Mapping[str, Any], name: str) -> str:
    value = (device.get("attributes") or {}).get(name) or {}
    for kind in ("string", "version", "int", "bool"):
        if kind in value:
            return str(value[kind])
    return ""


def _dra(slices: Sequence[Mapping[str, Any]], node: str) -> list[KubernetesAccelerator]:
    found: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for piece in slices:
        spec = piece.get("spec") or {}
        if spec.get("nodeName") not in (node, None) or spec.get("driver") not in DRA_DRIVERS:
            continue
        for device in spec.get("devices") or []:
            if _attribute(device, "type") not in ("", "gpu"):
                continue  # a MIG partition or a channel: not a whole device
            found.setdefault(DRA_DRIVERS[spec["driver"]], []).append(device)
    accelerators = []
    for (kind, vendor), devices in found.items():
        memory = ((devices[0].get("capacity") or {}).get("memory") or {}).get("value", 0)
        driver = next(d for d, kv in DRA_DRIVERS.items() if kv == (kind, vendor))
        accelerators.append(
            KubernetesAccelerator(
                kind,
                vendor,
                len(devices),
                f"dra:{driver}",
                model=_attribute(devices[0], "productName"),
                memory_bytes=int(quantity(memory)),
                names=tuple(str(d.get("name", "")) for d in devices),
            )
        )
    return accelerators


def _hami(annotations: Mapping[str, str], vendor: str) -> list[dict[str, Any]]:
    text = annotations.get(HAMI_REGISTER.get(vendor, ""), "")
    if not text:
        return []
    try:
        devices = json.loads(text)
    except ValueError:
        return []  # an older HAMi's colon-separated form: counted by allocatable alone
    return [d for d in devices if isinstance(d, dict) and d.get("health", True)]


def node_inventory(
    node: Mapping[str, Any], slices: Sequence[Mapping[str, Any]] = ()
) -> NodeInventory:
    """What Kubernetes says node ``node`` (a ``GET /api/v1/nodes/NAME`` answer) offers,
    with its DRA ResourceSlices (``GET /apis/resource.k8s.io/v1/resourceslices``)."""
    metadata = node.get("metadata") or {}
    name = str(metadata.get("name", ""))
    labels = {str(k): str(v) for k, v in (metadata.get("labels") or {}).items()}
    annotations = metadata.get("annotations") or {}
    allocatable = (node.get("status") or {}).get("allocatable") or {}
    notes: list[str] = []
    accelerators = _dra(slices, name)
    by_dra = {(a.kind, a.vendor) for a in accelerators}
    for resource_name, amount in sorted(allocatable.items()):
        known = _device_plugin(resource_name)
        if known is None:
            continue
        resource, model = known
        count = int(quantity(amount))
        if count < 1 or (resource.kind, resource.vendor) in by_dra:
            continue
        memory, split = 0, 0
        names: tuple[str, ...] = ()
        registered = _hami(annotations, resource.vendor)
        if registered:
            split = int(registered[0].get("count", 0))
            names = tuple(str(d.get("id", "")) for d in registered)
            memory = int(registered[0].get("devmem", 0)) << 20  # MiB
            model = model or str(registered[0].get("type", ""))
            notes.append(
                f"{name}: {resource_name} {count} counts HAMi's virtual devices: {len(registered)}"
                f" physical, each split {split} ways"
            )
            count = len(registered)
        elif resource.vendor == "nvidia":  # GPU feature discovery's labels
            model = labels.get("nvidia.com/gpu.product", "")
            memory = int(quantity(labels.get("nvidia.com/gpu.memory", 0))) << 20
        accelerators.append(
            KubernetesAccelerator(
                resource.kind, resource.vendor, count, resource_name, model, memory, names, split
            )
        )
    return NodeInventory(
        node=name,
        labels=labels,
        cpu_cores=quantity(allocatable.get("cpu", 0)),
        memory_bytes=int(quantity(allocatable.get("memory", 0))),
        accelerators=tuple(accelerators),
        notes=tuple(notes),
    )


def offered_devices(
    inventory: NodeInventory, found: Sequence[Device]
) -> tuple[list[Device], list[str]]:
    """The probed devices ``found`` this agent offers, as far as Kubernetes hands them
    out (see the module's docstring), and a line for each one held back or capped."""
    notes = list(inventory.notes)
    offered: list[Device] = []
    node = inventory.node
    for device in found:
        if device.kind == "cpu":
            offered.append(_cpu_within(device, inventory, notes))
            continue
        listed = next(
            (
                a
                for a in inventory.accelerators
                if (a.kind, a.vendor) == (device.kind, device.vendor)
            ),
            None,
        )
        if listed is None:
            notes.append(
                f"{device.device_id} ({device.vendor} {device.model}) is not offered: node {node}"
                " lists no such device to Kubernetes (its scheduler could give it to another"
                " pod); install its device plugin or DRA driver"
            )
            continue
        taken = sum(1 for d in offered if (d.kind, d.vendor) == (device.kind, device.vendor))
        if taken >= listed.count:
            notes.append(
                f"{device.device_id} is not offered: node {node} lists {listed.count}"
                f" {listed.resource}, and this pod sees more"
            )
            continue
        extra = {**device.extra, "kubernetes_resource": listed.resource}
        if listed.model:
            extra["kubernetes_model"] = listed.model
        if taken < len(listed.names):
            extra["kubernetes_device"] = listed.names[taken]
        if listed.split:
            extra["hami_split"] = str(listed.split)
        offered.append(dataclasses.replace(device, extra=extra))
    for listed in inventory.accelerators:
        seen = sum(1 for d in offered if (d.kind, d.vendor) == (listed.kind, listed.vendor))
        if seen < listed.count:
            claim = (
                "its ResourceClaim"
                if listed.resource.startswith("dra:")
                else f"resources.limits {listed.resource}: {listed.count} in its DaemonSet"
            )
            notes.append(
                f"node {node} has {listed.count} {listed.vendor} {listed.kind}(s)"
                f" ({listed.resource}{', ' + listed.model if listed.model else ''}) and this"
                f" agent's pod sees {seen}: claim them ({claim}) to offer them"
            )
    return offered, notes


class KubernetesWatch:
    """Reads the node again every ``every_s``; when what it hands out changes (a device
    plugin's count, a DRA device, the allocatable CPU) or its labels do,
    ``changed(shape(offered), why, labels)``. ``labels`` are the node's as the agent
    offers them (``own`` win: its ``--label`` flags). A read that fails keeps the last
    inventory and says so."""

    def __init__(
        self,
        read: Callable[[], tuple[dict[str, Any], list[dict[str, Any]]]],
        found: Sequence[Device],
        offered: Sequence[Device],
        shape: Callable[[list[Device]], list[Device]],
        every_s: float = REREAD_EVERY_S,
        labels: Mapping[str, str] | None = None,
        own: Mapping[str, str] | None = None,
    ) -> None:
        """``labels``: the node's as first read; ``own``: labels that win over them."""
        self.read = read
        self.found = list(found)
        self.offered = list(offered)
        self.shape = shape
        self.every_s = every_s
        self.own = dict(own or {})
        self.labels = {**(labels or {}), **self.own}

    def once(self) -> tuple[list[Device], str, dict[str, str]] | None:
        """Read the node now: the new offer, why, and the labels; None when the same."""
        node, slices = self.read()
        inventory = node_inventory(node, slices)
        offered, notes = offered_devices(inventory, self.found)
        labels = {**inventory.labels, **self.own}
        if offered == self.offered and labels == self.labels:
            return None
        for note in notes:
            log.warning("%s", note)
        before = {d.device_id: d for d in self.offered}
        after = {d.device_id: d for d in offered}
        parts = [f"{d} now offered" for d in sorted(set(after) - set(before))]
        parts += [f"{d} no longer offered" for d in sorted(set(before) - set(after))]
        parts += [f"{d} changed" for d in sorted(set(after) & set(before)) if after[d] != before[d]]
        parts += _label_changes(self.labels, labels)
        self.offered, self.labels = offered, labels
        return offered, f"Kubernetes node {inventory.node}: {', '.join(parts)}", labels

    def watch(self, stop: threading.Event, changed: InventoryChanged) -> None:
        while not stop.wait(self.every_s):
            try:
                news = self.once()
            except ConfigError as error:
                log.warning("%s; keeping the last inventory", error)
                continue
            if news is not None:
                changed(self.shape(news[0]), news[1], news[2])


def _label_changes(before: Mapping[str, str], after: Mapping[str, str]) -> list[str]:
    """``label zone=a -> b``, ``label gpu=x added``, ``label old removed``."""
    parts = [f"label {k}={after[k]} added" for k in sorted(set(after) - set(before))]
    parts += [f"label {k} removed" for k in sorted(set(before) - set(after))]
    parts += [
        f"label {k}={before[k]} -> {after[k]}"
        for k in sorted(set(after) & set(before))
        if after[k] != before[k]
    ]
    return parts


def _cpu_within(device: Device, inventory: NodeInventory, notes: list[str]) -> Device:
    cores = int(math.floor(inventory.cpu_cores))
    threads = device.slices * device.threads
    memory = device.memory_bytes
    if inventory.memory_bytes and memory > inventory.memory_bytes:
        memory = inventory.memory_bytes
    if cores < 1 or threads <= cores:
        return dataclasses.replace(device, memory_bytes=memory)
    slices, per_slice = default_cpu_slicing(cores)
    per_thread = device.tflops / max(1, threads)
    notes.append(
        f"{device.device_id}: node {inventory.node} allocates {inventory.cpu_cores:g} CPU(s) to"
        f" pods: offered as {slices} slice(s) of {per_slice} thread(s), not {threads} threads"
    )
    return dataclasses.replace(
        device,
        slices=slices,
        threads=per_slice,
        tflops=round(per_thread * slices * per_slice, 6),
        memory_bytes=memory,
    )


def read_node(
    node_name: str = "", kubeconfig: str = ""
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The node's object and its DRA ResourceSlices from the API server: in a pod with
    its service account (no ``kubeconfig``), else from ``kubeconfig`` (or
    ``KUBECONFIG``/``~/.kube/config``). ``node_name``: default ``NODE_NAME`` (set it
    from the Downward API's ``spec.nodeName``), else this host's name."""
    try:
        from kubernetes import client, config
        from kubernetes.client.exceptions import ApiException
        from kubernetes.config.config_exception import ConfigException
    except ImportError:
        raise ConfigError(
            "--kubernetes needs the kubernetes client: pip install 'anypu[kubernetes]'"
        ) from None
    name = node_name or os.environ.get("NODE_NAME", "") or socket.gethostname()
    try:
        if not kubeconfig and os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config()
        else:
            config.load_kube_config(config_file=kubeconfig or None)
    except (ConfigException, OSError) as error:
        raise ConfigError(
            f"--kubernetes: no way to reach the API server ({error}): run in a pod with a"
            " service account, or give --kubeconfig FILE"
        ) from None
    api = client.ApiClient()
    try:
        node = _json(client.CoreV1Api(api).read_node(name, _preload_content=False))
    except ApiException as error:
        raise ConfigError(_refusal(error, f"node {name}", "get nodes")) from None
    except Exception as error:  # urllib3's connection errors
        raise ConfigError(f"--kubernetes: the API server did not answer: {error}") from None
    slices: list[dict[str, Any]] = []
    for version in ("ResourceV1Api", "ResourceV1beta2Api", "ResourceV1beta1Api"):
        resource_api = getattr(client, version, None)
        if resource_api is None:
            continue
        try:
            answer = resource_api(api).list_resource_slice(
                field_selector=f"spec.nodeName={name}", _preload_content=False
            )
        except ApiException as error:
            if error.status == 404:
                continue  # this version is not served (or DRA is off): try the next
            if error.status in (401, 403):
                log.warning("%s", _refusal(error, "ResourceSlices", "list resourceslices"))
                break
            raise ConfigError(_refusal(error, "ResourceSlices", "list resourceslices")) from None
        slices = list(_json(answer).get("items") or [])
        break
    return node, slices


def _json(answer: Any) -> dict[str, Any]:
    """An answer read raw (``_preload_content=False``): the API's JSON as it sent it."""
    data = getattr(answer, "data", None)
    if data is None:
        data = answer.read()
    parsed: dict[str, Any] = json.loads(data)
    return parsed


def _refusal(error: Any, what: str, verb: str) -> str:
    if error.status == 404:
        return (
            f"--kubernetes: the API server has no {what}: set NODE_NAME from the Downward"
            " API (spec.nodeName) or give --kubernetes-node"
        )
    if error.status in (401, 403):
        return (
            f"--kubernetes: the API server refused to {verb} ({error.status} {error.reason}):"
            " give the agent's service account the ClusterRole in deploy/kubernetes"
        )
    return f"--kubernetes: reading {what} failed: {error.status} {error.reason}"
