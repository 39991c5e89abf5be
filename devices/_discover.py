"""Everything a node offers: every available probe's devices plus declared simulated ones."""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from anypu.devices._amd import AmdProbe
from anypu.devices._apple import AppleProbe
from anypu.devices._ascend import AscendProbe
from anypu.devices._cambricon import CambriconProbe
from anypu.devices._cpu import CpuProbe
from anypu.devices._enflame import EnflameProbe
from anypu.devices._hygon import HygonProbe
from anypu.devices._iluvatar import IluvatarProbe
from anypu.devices._intel import IntelProbe
from anypu.devices._kunlunxin import KunlunxinProbe
from anypu.devices._metax import MetaxProbe
from anypu.devices._model import Device, format_bytes
from anypu.devices._mthreads import MooreThreadsProbe
from anypu.devices._nvidia import NvidiaProbe
from anypu.devices._probe import Probe, Reading
from anypu.devices._simulated import load_devices_file

__all__ = [
    "PROBES",
    "cap_at_host",
    "collect_readings",
    "discover",
    "make_probes",
]

log = logging.getLogger(__name__)

#: The registry: one class per vendor.  A new vendor is one ``Probe`` subclass added here.
PROBES: tuple[type[Probe], ...] = (
    CpuProbe,
    NvidiaProbe,
    AmdProbe,
    HygonProbe,
    IntelProbe,
    AppleProbe,
    AscendProbe,
    CambriconProbe,
    MooreThreadsProbe,
    MetaxProbe,
    IluvatarProbe,
    KunlunxinProbe,
    EnflameProbe,
)

_TRAILING_NUMBER = re.compile(r"^(.*?)(\d+)$")


def make_probes(probes: Iterable[Probe | type[Probe]] = PROBES) -> list[Probe]:
    """Instances of the given probes (classes are constructed with their defaults)."""
    return [item() if isinstance(item, type) else item for item in probes]


def _unique_ids(devices: Sequence[Device]) -> list[Device]:
    """Ids unique on the node, in order: real devices keep theirs, unless taken already.

    Simulated devices, and real ones whose id an earlier probe already used (two vendors
    both numbering from ``gpu0``), get the lowest free number of their prefix, so a
    simulated GPU on a host with one real GPU becomes ``gpu1``.
    """
    reserved = {device.device_id for device in devices if not device.simulated}
    used: set[str] = set()
    result: list[Device] = []
    for device in devices:
        if device.simulated or device.device_id in used:
            match = _TRAILING_NUMBER.match(device.device_id)
            prefix = match.group(1) if match else device.device_id
            number = 0
            while f"{prefix}{number}" in used or f"{prefix}{number}" in reserved:
                number += 1
            device = dataclasses.replace(device, device_id=f"{prefix}{number}")
        used.add(device.device_id)
        result.append(device)
    return result


def cap_at_host(devices: Sequence[Device], host_memory: int) -> list[Device]:
    """Simulated devices offered at no more memory than the host has.

    A simulated device's jobs run on this host's CPU and memory, so a declared 64 GiB NPU
    on a 23 GiB host must not take a 25 GiB job: each is offered (and its workers capped
    at) ``min(declared, host)``; the declared size stays in ``extra["declared_memory"]``.
    Declared devices that together exceed the host are said at start (a WARNING).
    """
    simulated = [d for d in devices if d.simulated]
    declared = sum(d.memory_bytes for d in simulated)
    if not simulated or host_memory <= 0 or declared <= host_memory:
        return list(devices)
    capped = {
        d.device_id: f"{d.device_id} {format_bytes(d.memory_bytes)}"
        for d in simulated
        if d.memory_bytes > host_memory
    }
    log.warning(
        "declared devices claim %s of memory, but this host has %s, where their jobs run:"
        " each is offered at most %s%s; jobs on them together can still exceed the host",
        format_bytes(declared),
        format_bytes(host_memory),
        format_bytes(host_memory),
        f" ({', '.join(capped.values())} capped)" if capped else "",
    )
    return [
        dataclasses.replace(
            d,
            memory_bytes=host_memory,
            extra={**d.extra, "declared_memory": str(d.memory_bytes)},
        )
        if d.device_id in capped
        else d
        for d in devices
    ]


def discover(
    devices_file: str | Path | None = None,
    probes: Iterable[Probe | type[Probe]] = PROBES,
    host_memory: int | None = None,
) -> list[Device]:
    """Every device this node offers, with ids unique on the node.

    Runs each available probe (a probe that fails mid-way is logged and skipped, so a
    broken driver never stops the agent from offering its CPU), then appends the
    simulated devices of ``devices_file``.  With ``include_host: false`` in that file no
    probe runs.  Errors in the file raise ``ConfigError``.  Pass probe *instances* to
    keep them for ``collect_readings`` afterwards.  Simulated devices are capped at
    ``host_memory`` (default: this host's, as the CPU probe reads it; see
    ``cap_at_host``).
    """
    declared = load_devices_file(devices_file) if devices_file is not None else None
    found: list[Device] = []
    if declared is None or declared.include_host:
        missing: list[str] = []
        for probe in make_probes(probes):
            if not probe.available():
                missing.append(f"{probe.name} ({probe.unavailable_reason})")
                continue
            try:
                devices = probe.probe()
            except Exception:  # a vendor tool or library failing must not take the node down
                log.exception("probe %s failed; its devices are not offered", probe.name)
                continue
            log.info("probe %s: %s", probe.name, "; ".join(d.describe() for d in devices))
            probe.found = devices
            found.extend(devices)
        if missing:  # one line: a dozen vendors found nothing on most machines
            log.info("probes that found nothing: %s", "; ".join(missing))
    if declared is not None:
        found.extend(declared.devices)
        if host_memory is None:
            host_memory = CpuProbe().memory_bytes()
    return cap_at_host(_unique_ids(found), host_memory or 0)


def collect_readings(probes: Iterable[Probe]) -> dict[str, Reading]:
    """Every probe's readings merged, for a heartbeat; a failing probe contributes none."""
    merged: dict[str, Reading] = {}
    for probe in probes:
        try:
            merged.update(probe.readings())
        except Exception:  # a heartbeat must go out even when one vendor tool misbehaves
            log.warning("probe %s: reading failed", probe.name, exc_info=True)
    return merged
