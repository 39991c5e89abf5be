"""The cloud–edge–device simulation's inputs: a topology and a workload, read from YAML
and checked, every mistake named with its file and line.

Topology (``scenarios/cloud_edge_topology.yaml`` is the default, with its sources)::

    device_classes:
      a100: {kind: gpu, vendor: nvidia, tflops: 19.5, memory_gib: 40, price_per_hour: 4.10}
    sites:
      - {name: cloud-eu, tier: cloud}
      - {name: phone-paris, tier: device}
    links:
      - {a: phone-paris, b: edge-paris, latency_ms: 8, bandwidth_mbps: 50}
    devices:
      - {site: cloud-eu, class: a100, count: 8}

``tflops`` is the class's fp32 figure; ``tflops_fp16`` (and the other precisions) may be
given as for ``devices.yaml``. ``price_per_hour`` is what an hour of one device costs.
Link latencies are one way; bandwidth counts both directions alike.

Workload (``scenarios/cloud_edge_workload.yaml``)::

    duration_s: 60
    models:
      - {name: detector, gflops: 16.5, input_kib: 150, output_kib: 8, memory_mib: 60,
         precision: fp16}
    streams:
      - {origin: camera-lyon, model: detector, rate_per_s: 10, deadline_ms: 100}

Calls of a stream arrive as a Poisson process of ``rate_per_s``. A model may list where
its graph can be cut, for the split policy (``placement.choose_split``)::

      - {name: bottlefit, gflops: 8.2, ..., cuts: [{after: bottleneck, head_gflops: 0.6,
         activation_kib: 9}]}
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx
import yaml

from anypu.devices import Device
from anypu.errors import ConfigError
from anypu.placement import PRECISION_RELATIVE, TIERS

__all__ = [
    "DEFAULT_TOPOLOGY",
    "DEFAULT_WORKLOAD",
    "Cut",
    "Model",
    "Scenario",
    "Stream",
    "load_scenario",
]

_HERE = Path(__file__).resolve().parent / "scenarios"
DEFAULT_TOPOLOGY = _HERE / "cloud_edge_topology.yaml"
DEFAULT_WORKLOAD = _HERE / "cloud_edge_workload.yaml"
_KINDS = ("cpu", "gpu", "npu", "tpu", "xpu")


@dataclass(frozen=True)
class Cut:
    """Where a model's graph may be cut: the head's FLOPs and what crosses."""

    after: str
    head_flops: float
    activation_bytes: int


@dataclass(frozen=True)
class Model:
    name: str
    flops: float
    input_bytes: int
    output_bytes: int
    memory_bytes: int
    precision: str = "fp32"
    cuts: tuple[Cut, ...] = ()


@dataclass(frozen=True)
class Stream:
    origin: str
    model: str
    rate_per_s: float
    deadline_s: float


@dataclass
class Scenario:
    """Sites (name -> tier), the network, devices by site, prices, models and streams."""

    tiers: dict[str, str]
    network: nx.Graph[str]
    devices: dict[str, list[Device]]  # site -> its devices
    price_per_s: dict[str, float]  # device id -> price of one second
    models: dict[str, Model] = field(default_factory=dict)
    streams: list[Stream] = field(default_factory=list)
    duration_s: float = 60.0


class _Where:
    """Positions of a YAML document's entries, for messages that name the line."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.root = yaml.compose(text)

    def line(self, *keys: str | int) -> int:
        node: Any = self.root
        for key in keys:
            if isinstance(node, yaml.MappingNode):
                match = next((v for k, v in node.value if k.value == key), None)
                if match is None:
                    break
                node = match
            elif isinstance(node, yaml.SequenceNode) and isinstance(key, int):
                if key >= len(node.value):
                    break
                node = node.value[key]
            else:
                break
        return int(node.start_mark.line) + 1 if node is not None else 1

    def error(self, message: str, *keys: str | int) -> ConfigError:
        return ConfigError(f"{self.path}:{self.line(*keys)}: {message}")


def _read(path: Path) -> tuple[dict[str, Any], _Where]:
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror}") from None
    try:
        data = yaml.safe_load(text)
        where = _Where(path, text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: expected a mapping at the top")
    return data, where


def _number(
    where: _Where, value: object, what: str, *keys: str | int, positive: bool = False
) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise where.error(f"{what} must be a finite number, got {value!r}", *keys)
    if value < 0 or (positive and value == 0):
        bound = "greater than 0" if positive else "0 or more"
        raise where.error(f"{what} must be {bound}, got {value!r}", *keys)
    return float(value)


def _entries(data: Mapping[str, Any], where: _Where, key: str) -> list[dict[str, Any]]:
    entries = data.get(key)
    if not isinstance(entries, list) or not entries:
        raise where.error(f"'{key}' must be a non-empty list", key)
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise where.error(f"{key}[{i}] must be a mapping, got {entry!r}", key, i)
    return entries


def _topology(path: Path) -> Scenario:
    data, where = _read(path)
    classes = data.get("device_classes")
    if not isinstance(classes, dict) or not classes:
        raise where.error(
            "'device_classes' must map class names to their figures", "device_classes"
        )
    tiers: dict[str, str] = {}
    for i, site in enumerate(_entries(data, where, "sites")):
        name, tier = site.get("name"), site.get("tier")
        if not isinstance(name, str) or not name:
            raise where.error("a site needs a name", "sites", i)
        if name in tiers:
            raise where.error(f"site {name!r} is listed twice", "sites", i)
        if tier not in TIERS:
            raise where.error(
                f"site {name!r}: tier must be one of {list(TIERS)}, got {tier!r}", "sites", i
            )
        tiers[name] = str(tier)
    graph: nx.Graph[str] = nx.Graph()
    graph.add_nodes_from(tiers)
    zero: nx.Graph[str] = nx.Graph()
    for i, link in enumerate(_entries(data, where, "links")):
        ends = (link.get("a"), link.get("b"))
        for end in ends:
            if end not in tiers:
                raise where.error(
                    f"link names unknown site {end!r}; sites are {sorted(tiers)}", "links", i
                )
        a, b = str(ends[0]), str(ends[1])
        if a == b:
            raise where.error(f"link from {a!r} to itself", "links", i)
        latency = _number(where, link.get("latency_ms"), "latency_ms", "links", i, "latency_ms")
        bandwidth = _number(
            where,
            link.get("bandwidth_mbps"),
            "bandwidth_mbps",
            "links",
            i,
            "bandwidth_mbps",
            positive=True,
        )
        if latency == 0:
            if a in zero and b in zero and nx.has_path(zero, a, b):
                raise where.error(
                    f"link {a}–{b} closes a cycle of zero-latency links: give one of them a"
                    " latency (sites joined at no cost are one site)",
                    "links",
                    i,
                )
            zero.add_edge(a, b)
        graph.add_edge(a, b, latency_s=latency / 1e3, bandwidth_bps=bandwidth * 1e6 / 8)
    devices: dict[str, list[Device]] = {s: [] for s in tiers}
    prices: dict[str, float] = {}
    for i, entry in enumerate(_entries(data, where, "devices")):
        at, name = entry.get("site"), entry.get("class")
        if at not in tiers:
            raise where.error(
                f"devices at unknown site {at!r}; sites are {sorted(tiers)}", "devices", i
            )
        spec = classes.get(name) if isinstance(name, str) else None
        if not isinstance(spec, dict):
            raise where.error(
                f"unknown device class {name!r}; classes are {sorted(classes)}", "devices", i
            )
        count = entry.get("count", 1)
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise where.error(f"count must be a whole number ≥ 1, got {count!r}", "devices", i)
        for n in range(count):
            device = _device(where, str(name), spec, f"{at}/{name}{n}")
            devices[str(at)].append(device)
            prices[device.device_id] = float(spec.get("price_per_hour", 0.0)) / 3600
    return Scenario(tiers, graph, devices, prices)


def _device(where: _Where, name: str, spec: dict[str, Any], device_id: str) -> Device:
    kind = spec.get("kind")
    if kind not in _KINDS:
        raise where.error(
            f"class {name}: kind must be one of {list(_KINDS)}, got {kind!r}",
            "device_classes",
            name,
        )
    tflops = _number(
        where, spec.get("tflops"), f"class {name}: tflops", "device_classes", name, positive=True
    )
    memory = _number(
        where,
        spec.get("memory_gib"),
        f"class {name}: memory_gib",
        "device_classes",
        name,
        positive=True,
    )
    _number(
        where,
        spec.get("price_per_hour", 0.0),
        f"class {name}: price_per_hour",
        "device_classes",
        name,
    )
    extra = {}
    for precision in PRECISION_RELATIVE:
        figure = spec.get(f"tflops_{precision}")
        if figure is not None:
            value = _number(
                where,
                figure,
                f"class {name}: tflops_{precision}",
                "device_classes",
                name,
                positive=True,
            )
            extra[f"tflops_{precision}"] = str(value)
    return Device(
        device_id,
        str(kind),
        str(spec.get("vendor", "")),
        name,
        int(memory * (1 << 30)),
        tflops,
        "cpu",
        extra=extra,
    )


def load_scenario(topology: Path = DEFAULT_TOPOLOGY, workload: Path = DEFAULT_WORKLOAD) -> Scenario:
    """Read and check both files (the module docstring); ``ConfigError`` names the line."""
    scenario = _topology(topology)
    data, where = _read(workload)
    scenario.duration_s = _number(
        where, data.get("duration_s", 60), "duration_s", "duration_s", positive=True
    )
    for i, entry in enumerate(_entries(data, where, "models")):
        name = entry.get("name")
        if not isinstance(name, str) or not name or name in scenario.models:
            raise where.error(f"a model needs a name of its own, got {name!r}", "models", i)
        precision = entry.get("precision", "fp32")
        if precision not in PRECISION_RELATIVE:
            raise where.error(
                f"model {name}: precision must be one of {sorted(PRECISION_RELATIVE)}", "models", i
            )
        scenario.models[name] = Model(
            name,
            _number(where, entry.get("gflops"), f"model {name}: gflops", "models", i, positive=True)
            * 1e9,
            int(
                _number(where, entry.get("input_kib", 0), f"model {name}: input_kib", "models", i)
                * 1024
            ),
            int(
                _number(where, entry.get("output_kib", 0), f"model {name}: output_kib", "models", i)
                * 1024
            ),
            int(
                _number(
                    where,
                    entry.get("memory_mib"),
                    f"model {name}: memory_mib",
                    "models",
                    i,
                    positive=True,
                )
                * (1 << 20)
            ),
            str(precision),
            _cuts(where, entry, name, i),
        )
    for i, entry in enumerate(_entries(data, where, "streams")):
        origin, model = entry.get("origin"), entry.get("model")
        if origin not in scenario.tiers:
            raise where.error(
                f"stream from unknown site {origin!r}; sites are {sorted(scenario.tiers)}",
                "streams",
                i,
            )
        if model not in scenario.models:
            raise where.error(
                f"stream of unknown model {model!r}; models are {sorted(scenario.models)}",
                "streams",
                i,
            )
        rate = _number(
            where, entry.get("rate_per_s"), "rate_per_s", "streams", i, "rate_per_s", positive=True
        )
        deadline = _number(
            where,
            entry.get("deadline_ms"),
            "deadline_ms",
            "streams",
            i,
            "deadline_ms",
            positive=True,
        )
        scenario.streams.append(Stream(str(origin), str(model), rate, deadline / 1e3))
    return scenario


def _cuts(where: _Where, entry: dict[str, Any], name: str, i: int) -> tuple[Cut, ...]:
    """A model's ``cuts``: each ``{after, head_gflops, activation_kib}``, the head less
    than the whole model."""
    cuts = entry.get("cuts", [])
    if not isinstance(cuts, list):
        raise where.error(f"model {name}: cuts must be a list", "models", i, "cuts")
    out = []
    for j, cut in enumerate(cuts):
        at = ("models", i, "cuts", j)
        if not isinstance(cut, dict) or not isinstance(cut.get("after"), str):
            raise where.error(
                f"model {name}: cuts[{j}] must be a mapping with 'after' (where it is cut),"
                " head_gflops and activation_kib",
                *at,
            )
        what = f"model {name}: cut after {cut['after']}"
        head = _number(where, cut.get("head_gflops"), f"{what}: head_gflops", *at, positive=True)
        if head * 1e9 >= float(entry["gflops"]) * 1e9:
            raise where.error(
                f"{what}: head_gflops ({head:g}) must be less than the model's gflops"
                f" ({entry['gflops']:g})",
                *at,
            )
        kib = _number(
            where, cut.get("activation_kib"), f"{what}: activation_kib", *at, positive=True
        )
        out.append(Cut(cut["after"], head * 1e9, int(kib * 1024)))
    return tuple(out)
