"""``anypu status``: a terminal summary of a scheduler, in the manner of ``ray status``.

The command asks the scheduler over the wire (nodes, recent and live jobs, and its usage
summary, which the dashboard and ``/metrics`` show too, so the three agree); formatting
is pure.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from anypu.devices import format_bytes
from anypu.protos.messages import TIERS, ClusterUsage, JobInfo, NodeInfo

if TYPE_CHECKING:  # grpc is imported only when a command connects
    from anypu.sdk._transport import GrpcTransport

__all__ = ["format_status", "status_command", "status_document"]

_LIVE = ("pending", "placed", "running")
_DONE = ("succeeded", "failed", "cancelled")
_RULE = "-" * 72


def _live(jobs: Sequence[JobInfo], live: Sequence[JobInfo] | None) -> list[JobInfo]:
    """Live jobs: fetched separately when given (recent jobs may miss old running ones)."""
    return list(live) if live is not None else [j for j in jobs if j.state in _LIVE]


def status_document(
    address: str,
    nodes: Sequence[NodeInfo],
    jobs: Sequence[JobInfo],
    live: Sequence[JobInfo] | None = None,
    usage: ClusterUsage | None = None,
) -> dict[str, Any]:
    """What ``anypu status --json`` prints: nodes, usage, recent and pending jobs."""
    current = _live(jobs, live)
    usage = usage or ClusterUsage()
    return {
        "scheduler": address,
        "nodes": [asdict(n) for n in nodes],
        "usage": [row.as_dict() for row in usage.rows],
        "fragmentation": usage.fragmentation,
        "jobs": [j.as_dict() for j in jobs],
        "pending": [j.as_dict() for j in current if j.state == "pending"],
    }


def format_status(
    address: str,
    nodes: Sequence[NodeInfo],
    jobs: Sequence[JobInfo],
    live: Sequence[JobInfo] | None = None,
    usage: ClusterUsage | None = None,
) -> str:
    """Nodes by tier with their devices, usage per tier and kind, jobs, pending and why."""
    current = _live(jobs, live)
    usage = usage or ClusterUsage()
    # slices with at least one job bound, per device (jobs may queue on one slice)
    reserved = {(r.node_id, r.device_id): r.reserved_slices for r in usage.reserved}
    lines = [f"======== anypu status: scheduler {address} ========", "Nodes", _RULE]
    if not nodes:
        lines.append(
            " (none joined yet: start one with `anypu agent --scheduler HOST:PORT --token T`)"
        )
    for tier in TIERS:
        in_tier = [n for n in nodes if n.tier == tier]
        if not in_tier:
            continue
        states = Counter(n.state for n in in_tier)
        summary = ", ".join(f"{count} {state}" for state, count in sorted(states.items()))
        lines.append(f" {tier} ({len(in_tier)}): {summary}")
        for node in in_tier:
            site = f" site={node.site}" if node.site else ""
            warm = len(node.warm_digests)
            rtt = (
                f", rtt {node.rtt_p50_s * 1e3:.1f} ms (p95 {node.rtt_p95_s * 1e3:.1f})"
                if node.rtt_age_s >= 0
                else ""
            )
            if node.bandwidth_age_s >= 0:
                rtt += f", {node.bandwidth_bps * 8 / 1e6:.0f} Mbit/s up"
            lines.append(
                f"   {node.node_id:<14} {node.state:<12}{site}  heartbeat"
                f" {node.last_heartbeat_age_s:.1f}s ago{rtt}, {node.running_jobs} running,"
                f" {warm} warm model{'s' if warm != 1 else ''}"
            )
            measured = {u.device_id: u for u in node.usage if u.measured}
            for d in node.devices:
                taken = reserved.get((node.node_id, d.device_id), 0)
                reading = measured.get(d.device_id)
                now = (
                    f", {reading.utilisation:.0%} busy, {format_bytes(reading.memory_used_bytes)}"
                    " in use (measured)"
                    if reading is not None
                    else ""
                )
                if not d.shared:
                    lines.append(
                        f"     {d.device_id:<6} {d.describe()}  [{taken}/{d.slices} slices"
                        f" reserved{now}]"
                    )
                    continue
                shares = [r for r in node.reservations if r.device_id == d.device_id]
                memory, milli = node.reserved_on(d.device_id)
                lines.append(
                    f"     {d.device_id:<6} {d.describe()}  [{len(shares)}/{d.slices} seats,"
                    f" {format_bytes(memory)} of {format_bytes(d.memory_bytes)} and"
                    f" {milli / 10:.0f}% of compute reserved,"
                    f" {format_bytes(max(0, d.memory_bytes - memory))} free{now}]"
                )
                for share in shares:
                    lines.append(
                        f"       seat {share.slice_index}: job {share.job_id}"
                        f" {format_bytes(share.memory_bytes)}, {share.milli / 10:.1f}% of compute"
                    )
    rows = usage.rows
    lines += ["", "Usage (ready nodes: reserved / total)", _RULE]
    if not rows:
        lines.append(" (no ready nodes)")
    for r in rows:
        sim = f", {r.simulated} simulated" if r.simulated else ""
        lines.append(
            f" {r.tier:<7}{r.kind:<5}{r.devices} device{'s' if r.devices != 1 else ''}{sim}"
        )
        lines.append(
            f"   {r.reserved_slices}/{r.slices} slices"
            f"   {format_bytes(r.reserved_memory_bytes)}/{format_bytes(r.memory_bytes)} memory"
            f"   {r.reserved_tflops:.1f}/{r.tflops:.1f} TFLOPS"
        )
    if rows:
        lines.append(
            f" fragmentation: {usage.fragmentation:.0%} of free memory is on partly"
            " reserved devices"
        )
    live_counts = Counter(j.state for j in current)
    done_counts = Counter(j.state for j in jobs if j.state in _DONE)
    lines += ["", "Jobs", _RULE]
    lines.append(" live: " + ", ".join(f"{live_counts[s]} {s}" for s in _LIVE))
    lines.append(f" last {len(jobs)}: " + ", ".join(f"{done_counts[s]} {s}" for s in _DONE))
    # Newest first: says which placement policy (or cost solver) the scheduler runs.
    latest = next((j.placement.solver for j in jobs if j.placement and j.placement.solver), "")
    if latest:
        lines.append(f" latest placement by: {latest}")
    pending = [j for j in current if j.state == "pending"]
    if pending:
        lines += ["", "Pending", _RULE]
    for job in pending:
        why = "unschedulable: no node can hold it" if job.unschedulable else "waiting for capacity"
        name = f" {job.name}" if job.name else ""
        lines.append(f" {job.job_id}{name} ({why})")
        for node_id, reason in sorted(job.pending_reasons.items()):
            lines.append(f"   {node_id}: {reason}")
    return "\n".join(lines)


def _connect(args: argparse.Namespace) -> tuple[str, GrpcTransport]:
    """The scheduler the command names (flags, else ``ANYPU_*``) and a transport to it."""
    from anypu.comm import client_ca
    from anypu.sdk._transport import GrpcTransport

    token = args.token or os.environ.get("ANYPU_TOKEN", "")
    address = args.scheduler or os.environ.get("ANYPU_ADDRESS", "127.0.0.1:7070")
    ca_hash = args.ca_hash or os.environ.get("ANYPU_CA_HASH", "")
    return address, GrpcTransport(address, token, client_ca(address, ca_hash))


def node_command(args: argparse.Namespace, stop: threading.Event) -> int:
    """``anypu node remove NAME``: forget a node that is not connected."""
    _, transport = _connect(args)
    try:
        removed = transport.remove_node(args.name)
    finally:
        transport.close()
    print(f"removed node {removed.node_id} ({removed.tier}, was {removed.state})")
    return 0


def status_command(args: argparse.Namespace, stop: threading.Event) -> int:
    """``anypu status``: ask the scheduler, print the summary (or ``--json``)."""
    address, transport = _connect(args)
    try:
        nodes = transport.list_nodes(timeout=5)
        jobs = transport.list_jobs(limit=args.jobs)
        # live jobs on their own: the recent ones may miss a long-running job
        live = [
            j
            for state in ("pending", "placed", "running")
            for j in transport.list_jobs(10_000, state)
        ]
        usage = transport.usage()
    finally:
        transport.close()
    if args.json:
        print(json.dumps(status_document(address, nodes, jobs, live, usage)))
        return 0
    print(format_status(address, nodes, jobs, live, usage))
    return 0
