"""The node agent's shell: the stream, the slice workers, the threads and the clock.

What the agent decides lives in ``AgentState`` (``agents/_state.py``: events in,
instructions out); this class turns the stream's messages, the workers' answers, direct
calls and a 50 ms tick into its events and carries out its instructions.  The agent opens
one stream to the scheduler, sends a Join with its inventory, then answers Launch and
Cancel messages and reports JobStarted / JobResult. If the stream breaks it reconnects
with jittered exponential backoff, re-joins with the attempts it is still running (so
the scheduler keeps them), and sends results it finished while disconnected.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import logging
import os
import random
import secrets
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from anypu import _codec
from anypu.agents._cache import DEFAULT_CACHE_BYTES, ArtifactCache
from anypu.agents._cgroups import HostCgroups, WorkerCgroup, host_cgroups
from anypu.agents._inventory import InventoryWatch
from anypu.agents._link import SchedulerLink
from anypu.agents._peers import PeerProber
from anypu.agents._probes import BandwidthProber, ProbeConfig
from anypu.agents._ray import RayCluster, RaySliceWorker
from anypu.agents._state import (
    AgentIdentity,
    AgentState,
    AgentStateConfig,
    AnswerCall,
    BandwidthMeasured,
    CallArrived,
    CancelAtWorker,
    Fetch,
    Fetched,
    GrantAtWorker,
    Instruction,
    LeasedRunDone,
    LeasedRunsUnsent,
    PeerMeasured,
    RevokeAtWorker,
    RunCall,
    RunningJob,
    SchedulerSaid,
    Send,
    StreamBroke,
    Submit,
    Tick,
    WorkerAnswered,
)
from anypu.agents._state import Event as AgentEvent
from anypu.agents._workers import (
    SliceJob,
    SliceWorker,
    ThreadSliceWorker,
    run_dispatched_here,
)
from anypu.devices import Device, Probe, Reading, collect_readings, format_bytes
from anypu.errors import AuthenticationError, ConfigError
from anypu.protos import messages as m

__all__ = ["Agent", "AgentConfig"]

log = logging.getLogger("anypu.agent")

Worker = SliceWorker | ThreadSliceWorker | RaySliceWorker
_TICK_S = 0.05
_READ_EVERY_S = 1.0
_WATCH_EVERY_S = 0.25
# A client hears of its lease on its own connection, possibly before the grant reaches this
# agent on the scheduler's stream: a call under a lease not yet heard of waits this long
# for it, rather than fall back to placement. Ended leases are answered at once.
_GRANT_WAIT_S = 1.0


@dataclass
class AgentConfig:
    name: str
    tier: str
    devices: list[Device]
    token: str = ""
    site: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    cache_dir: str = ""
    #: Model artifacts kept on disk at most (least recently used deleted first).
    cache_bytes: int = DEFAULT_CACHE_BYTES
    #: The probes that found this node's devices: read for every heartbeat (none: the
    #: heartbeat says what the busy slices say).
    probes: tuple[Probe, ...] = ()
    max_backoff_s: float = 2.0
    #: "process" (one worker process per slice) or "thread" (the embedded mode only: the
    #: user's own process already runs their model, so isolation buys nothing there).
    isolation: str = "process"
    #: Give each host-memory worker process a cgroup v2 of its own where the agent may
    #: create one (``_cgroups``), on top of its rlimits.
    cgroups: bool = True
    #: Take calls directly under leases the scheduler grants (see ``scheduler._leases``)
    #: in this process: needs the embedded mode's in-process link.
    direct_runs: bool = False
    #: Or over gRPC: serve DirectService at this HOST:PORT (port 0: any free one), which
    #: clients must be able to reach. "" serves none (an agent behind NAT).
    direct_address: str = ""
    #: What clients and other agents are told to dial for it (a forwarded port, a NAT's
    #: public address); "": the address it listens at.
    direct_advertise: str = ""
    #: (certificate file, key file) of this node: serve those calls over TLS, as a node
    #: enrolled with a TLS scheduler must (clients check the certificate names this node).
    direct_tls: tuple[str, str] | None = None
    #: Serve the Open Inference Protocol here (``_gateway``): REST at this HOST:PORT,
    #: gRPC on the direct address. "": not a gateway.
    gateway_http: str = ""
    #: Bandwidth probes to the scheduler (``_probes``): how often and within what budget.
    #: Sent only over a link that can (gRPC); ``ProbeConfig(interval_s=0)`` sends none.
    bandwidth_probes: ProbeConfig = field(default_factory=ProbeConfig)
    state: AgentStateConfig = field(default_factory=AgentStateConfig)
    #: Follows what the node offers (``_inventory``: calls ``changed(devices, why,
    #: labels)`` when it changes; a Ray cluster's nodes, a Kubernetes node's devices
    #: and labels).
    inventory_watch: InventoryWatch | None = None
    #: Serve ``/healthz`` and ``/readyz`` here for a kubelet's probes (``_health``); "": none.
    health_address: str = ""
    #: Run jobs as actors of this Ray cluster (``_ray.RayCluster``; ``--backend ray``)
    #: instead of worker processes of this machine: ``devices`` are its nodes'.
    ray: RayCluster | None = None


@dataclass
class _Waiting:
    """A direct call's caller, parked until its slice answers."""

    done: threading.Event = field(default_factory=threading.Event)
    result: m.JobResult | None = None


def job_memory(device: Device, pid: int, reading: Reading | None) -> int | None:
    """A job's own memory: what the vendor reports for its worker process on the device
    (NVML per process), else, for a job whose memory is host memory (a CPU, a simulated
    device), the worker process's resident set; None when neither is known."""
    if reading is not None and pid in reading.process_memory:
        return reading.process_memory[pid]
    if device.holds_host_memory:
        try:
            with open(f"/proc/{pid}/statm") as statm:
                return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return None
    return None


def _worker_cgroup(cgroups: HostCgroups | None, device: Device, index: int) -> WorkerCgroup | None:
    if cgroups is None or not device.holds_host_memory:
        return None
    try:
        return cgroups.worker(device.device_id, index)
    except OSError as error:
        log.warning(
            "no cgroup for %s slice %d (%s): its jobs are capped by RLIMIT_DATA only",
            device.device_id,
            index,
            error,
        )
        return None


def _stimulus(message: m.SchedulerMessage) -> str:
    """A stimulus id naming what the scheduler asked, for the log lines it causes."""
    if isinstance(message, m.Launch):
        return f"launch-{message.job_id}-{message.attempt}"
    if isinstance(message, m.Cancel):
        return f"cancel-{message.job_id}-{message.attempt}"
    if isinstance(message, m.LeaseGranted):
        return f"grant-{message.lease.lease_id}"
    if isinstance(message, m.LeaseRevoked):
        return f"revoke-{message.lease_id}"
    if isinstance(message, m.JoinAck):
        return f"join-{message.node_id}-{message.epoch}"
    return type(message).__name__.lower()


class Agent:
    def __init__(self, config: AgentConfig, link: SchedulerLink) -> None:
        self.config = config
        self.link = link
        cache = config.cache_dir or os.path.join(tempfile.gettempdir(), "anypu-cache")
        self.cache = ArtifactCache(Path(cache) / "artifacts", config.cache_bytes)
        self.connected = threading.Event()
        self._stop = threading.Event()
        # Guards the state; the shell's own waits (lease news) share it.
        self._lock = threading.Lock()
        self._lease_news = threading.Condition(self._lock)
        self._fetching: dict[str, threading.Event] = {}
        self._waiting: dict[str, _Waiting] = {}
        self._ticks = itertools.count()
        if config.isolation not in ("process", "thread"):
            raise ConfigError(f"isolation must be 'process' or 'thread', got {config.isolation!r}")
        self._direct_server = None
        self.gateway = None
        if config.gateway_http:
            from anypu.agents._gateway import AgentGateway

            if not config.direct_address:
                raise ConfigError(
                    "--gateway-http needs --direct-address: the gateway's gRPC is served"
                    " there, and its callers' replicas are reached the same way"
                )
            self.gateway = AgentGateway(link, config.name, config.gateway_http, config.direct_tls)
        if config.direct_address:  # before the workers start: a taken port stops us cleanly
            from anypu.agents._direct import DirectServer

            tls = None
            if config.direct_tls is not None:
                cert, key = (Path(p).read_bytes() for p in config.direct_tls)
                tls = (cert, key)
            self._direct_server = DirectServer(
                self._serve_direct,
                config.direct_address,
                # A gateway's calls wait on replicas: threads of their own for them.
                workers=32 if self.gateway else 4,
                tls=tls,
                handlers=(self.gateway.grpc_handler,) if self.gateway else (),
            )
            if self.gateway is not None:
                self.gateway.start()
        self.state = AgentState(
            AgentIdentity(
                name=config.name,
                tier=config.tier,
                devices=tuple(config.devices),
                token=config.token,
                site=config.site,
                labels=dict(config.labels),
                direct_runs=config.direct_runs,
                direct_address=(
                    (config.direct_advertise or self._direct_server.address)
                    if self._direct_server
                    else ""
                ),
            ),
            config.state,
        )
        self.workers: dict[tuple[str, int], Worker] = {}
        self._cgroups = self._host_cgroups(config)
        for device in config.devices:
            for index in range(device.slices):
                self.workers[(device.device_id, index)] = self._make_worker(device, index)
        self._rejoining = ""  # why the stream was ended here to join anew ("": it was not)
        watch = config.inventory_watch or (config.ray.watch if config.ray else None)
        if watch is not None:
            threading.Thread(
                target=watch,
                args=(self._stop, self.replace_devices),
                name="anypu-agent-inventory",
                daemon=True,
            ).start()
        if hasattr(link, "handler"):
            link.handler = self.handle
        if config.direct_runs:
            if not hasattr(link, "direct"):
                raise ConfigError("direct runs need an in-process link to the scheduler")
            link.direct = self.run_leased
        self._readings: dict[str, Reading] = {}
        self._job_memory: tuple[m.JobUsage, ...] = ()
        self.ticked_at = time.monotonic()
        self.broken_because = ""  # why the stream last broke ("": it has not)
        self.health = None
        if config.health_address:
            from anypu.agents._health import HealthServer, agent_registry

            def last_tick() -> float:
                return self.ticked_at

            gateway = self.gateway.gateway if self.gateway is not None else None
            registry = agent_registry(config.name, last_tick, self.readiness, gateway)
            self.health = HealthServer(config.health_address, last_tick, self.readiness, registry)
        self._housekeeper = threading.Thread(
            target=self._housekeeping, name="anypu-agent-heartbeat", daemon=True
        )
        self._housekeeper.start()
        # A vendor tool may take a while (npu-smi): readings never delay a tick.
        self._reader = threading.Thread(
            target=self._read_loop, name="anypu-agent-readings", daemon=True
        )
        self._reader.start()
        self._prober: BandwidthProber | None = None
        probe = getattr(link, "probe", None)
        if probe is not None and config.bandwidth_probes.enabled:
            self._prober = BandwidthProber(
                config.bandwidth_probes,
                probe,
                lambda: self.state.base_rtt_s,
                self._bandwidth_measured,
            )
            self._prober.start()
        self._peer_prober: PeerProber | None = None
        ping, upload = getattr(link, "ping_peer", None), getattr(link, "probe_peer", None)
        if ping is not None and upload is not None and config.bandwidth_probes.enabled:
            self._peer_prober = PeerProber(
                config.bandwidth_probes,
                lambda: self.state.peers,
                ping,
                upload,
                self._peer_measured,
            )
            self._peer_prober.start()

    def readiness(self) -> tuple[bool, str]:
        """Whether the agent has joined and its stream holds, and a line saying so."""
        if self.connected.is_set():
            return True, f"joined as {self.node_id} (epoch {self.epoch})"
        if self.broken_because:
            return False, f"not joined: the stream broke ({self.broken_because[:300]})"
        return False, "not joined yet"

    def _make_worker(self, device: Device, index: int) -> Worker:
        config = self.config
        if config.ray is not None:
            return RaySliceWorker(device, index, self._on_answer, config.ray)
        if config.isolation == "thread":
            return ThreadSliceWorker(device, index, self._on_answer)
        # With a direct address, each slice's process serves its leases too.
        return SliceWorker(
            device,
            index,
            self._on_answer,
            direct_host=config.direct_address.rpartition(":")[0],
            direct_tls=config.direct_tls,
            on_leased_run=self._on_leased_run,
            cgroup=_worker_cgroup(self._cgroups, device, index),
        )

    def replace_devices(
        self, devices: list[Device], why: str, labels: Mapping[str, str] | None = None
    ) -> None:
        """Offer ``devices`` from now on (a Ray cluster's nodes came or went), with
        ``labels`` when given (a Kubernetes node relabelled): the workers of devices gone
        or changed are closed (a job running there answers as its worker does), new
        devices' start, and the agent joins the scheduler anew with them (a job queued on
        a closed slice is placed again: the new Join does not hold it)."""
        with self._lock:
            old = {d.device_id: d for d in self.state.identity.devices}
            new = {d.device_id: d for d in devices}
            workers: dict[tuple[str, int], Worker] = {}
            for key, worker in self.workers.items():
                if old.get(key[0]) == new.get(key[0]) is not None:
                    workers[key] = worker
                else:
                    worker.close()
            for device in devices:
                for index in range(device.slices):
                    if (device.device_id, index) not in workers:
                        workers[(device.device_id, index)] = self._make_worker(device, index)
            # A new dict, not changed in place: the housekeeping threads iterate the old.
            self.workers = workers
            identity = dataclasses.replace(self.state.identity, devices=tuple(devices))
            if labels is not None:
                identity = dataclasses.replace(identity, labels=dict(labels))
            self.state.identity = identity
            self._rejoining = why
        log.info(
            "offering %d device(s) now (%s): joining the scheduler anew with them",
            len(devices),
            why,
        )
        for device in devices:
            log.info("  %s %s", device.device_id, device.describe())
        self.link.close(drain_s=0.5)  # run() joins again, with the new inventory

    def _bandwidth_measured(self, bps: float) -> None:
        self._handle(BandwidthMeasured(bps, time.time()))

    def _peer_measured(self, sample: m.PeerSample) -> None:
        self._handle(PeerMeasured(sample, time.time()))

    @property
    def node_id(self) -> str:
        return self.state.node_id

    @property
    def epoch(self) -> int:
        return self.state.epoch

    # -------------------------------------------------------------- lifecycle

    def wait_ready(self, timeout: float = 60.0) -> bool:
        """Wait until every worker process has started (torch imported)."""
        deadline = time.monotonic() + timeout
        return all(
            w.wait_ready(max(0.0, deadline - time.monotonic())) for w in self.workers.values()
        )

    def stop(self) -> None:
        """Stop serving; tell the scheduler first, so it moves this node's jobs at once.

        The goodbye goes out whether or not the JoinAck has arrived yet: the scheduler
        counts a node as joined when it reads the Join, so an agent stopped between the
        two would otherwise be listed as disconnected, not left. On a link with no stream
        open the message goes nowhere."""
        if not self._stop.is_set():
            try:
                self.link.send(m.Leave("the agent was stopped"))
            except Exception:  # going anyway: the scheduler then finds it lost
                log.info("could not say goodbye to the scheduler", exc_info=True)
        self._stop.set()
        if self._prober is not None:
            self._prober.stop()
        if self._peer_prober is not None:
            self._peer_prober.stop()
        if self._direct_server is not None:
            self._direct_server.stop()
        if self.gateway is not None:
            self.gateway.stop()
        if self.health is not None:
            self.health.stop()
        self.link.close()
        for worker in self.workers.values():
            worker.close()

    def run(self) -> None:
        """Serve until ``stop()``; reconnect whenever the stream breaks."""
        backoff = 0.1
        while not self._stop.is_set():
            reason = "the scheduler ended the stream"
            try:
                for message in self.link.open(self._join()):
                    if isinstance(message, m.JoinAck):
                        backoff = 0.1
                    self.handle(message)
            except (AuthenticationError, ConfigError):
                self.stop()
                raise
            except Exception as error:  # scheduler gone or restarting: try again
                reason = str(error)
            if self._rejoining:
                reason, self._rejoining = f"joining anew: {self._rejoining}", ""
            self.connected.clear()
            if self._stop.is_set():  # stopped on purpose: nothing to report or retry
                break
            self.broken_because = reason
            self._handle(StreamBroke(reason, time.time(), "stream-broke"))
            delay = backoff * (0.5 + random.random())
            self._stop.wait(delay)
            backoff = min(backoff * 2, self.config.max_backoff_s)

    def handle(self, message: m.SchedulerMessage) -> None:
        """One message from the scheduler (the stream's, or the in-process link's)."""
        now = time.time()
        cached = False
        if isinstance(message, m.Launch):
            cached = self.cache.has(message.artifact_digest)
        if (
            isinstance(message, m.HeartbeatEcho)
            and self._prober is not None
            and self._prober.overlapped(message.sent_at, now)
        ):
            log.debug("round trip not kept: a bandwidth probe was on the link meanwhile")
            return
        self._handle(SchedulerSaid(message, now, _stimulus(message), cached))
        if isinstance(message, m.JoinAck):
            self.connected.set()

    def _join(self) -> m.Join:
        in_flight = [a for w in self.workers.values() for a in w.in_flight()]
        with self._lock:
            return self.state.join_message(in_flight, self._warm())

    # -------------------------------------------------------------- events in, instructions out

    def _handle(self, event: AgentEvent) -> list[Instruction]:
        """Feed ``event`` to the state and carry out what it says; returns the instructions."""
        with self._lock:
            instructions = self.state.handle(event)
            if isinstance(event, SchedulerSaid) and isinstance(
                event.message, (m.LeaseGranted, m.LeaseRevoked, m.JoinAck)
            ):
                self._lease_news.notify_all()
        self._execute(instructions)
        return instructions

    def _execute(self, instructions: Iterable[Instruction]) -> None:
        pending = list(instructions)
        broken = False  # once a send fails, later sends wait for the next join
        for index, instruction in enumerate(pending):
            if isinstance(instruction, Send):
                if not broken and not self._send(instruction, pending[index + 1 :]):
                    broken = True
            elif isinstance(instruction, Submit):
                self._submit(instruction.launch, instruction.inputs)
            elif isinstance(instruction, Fetch):
                threading.Thread(
                    target=self._fetch, args=(instruction,), daemon=True, name="anypu-fetch"
                ).start()
            elif isinstance(instruction, AnswerCall):
                waiting = self._waiting.pop(instruction.job_id, None)
                if waiting is not None:
                    waiting.result = instruction.result
                    waiting.done.set()
            elif isinstance(instruction, CancelAtWorker):
                for worker in self.workers.values():
                    if worker.cancel(instruction.job_id, instruction.attempt):
                        break
            elif isinstance(instruction, GrantAtWorker):
                self._grant_at_worker(instruction.lease)
            elif isinstance(instruction, RevokeAtWorker):
                held = self._worker_of(instruction.lease)
                if isinstance(held, SliceWorker):
                    held.revoke(instruction.lease.lease_id)
            # RunCall is carried out by run_leased, which asked for it.

    def _send(self, send: Send, rest: list[Instruction]) -> bool:
        """Send one message; on a broken stream keep unsent run records and say False.

        A result that does not go out stays in the resend window and goes with the next
        join; heartbeats and announcements are simply superseded.
        """
        try:
            self.link.send(send.message)
        except ValueError as error:  # this message can never go; the stream is fine
            log.error("%s [%s]", error, send.stimulus_id)
            return True
        except Exception as error:
            log.info(
                "send failed (%s): %s [%s]", type(send.message).__name__, error, send.stimulus_id
            )
            unsent = [send, *rest]
            runs = tuple(
                run
                for item in unsent
                if isinstance(item, Send) and isinstance(item.message, m.LeasedRuns)
                for run in item.message.runs
            )
            if runs:
                with self._lock:
                    self.state.handle(LeasedRunsUnsent(runs, send.stimulus_id))
            return False
        if isinstance(send.message, m.LeasedRuns):
            time.sleep(0)  # let a caller waiting for the GIL in between batches
        return True

    def _worker_of(self, lease: m.Lease) -> Worker | None:
        return self.workers.get((lease.device_id, lease.slice_index))

    def _grant_at_worker(self, lease: m.Lease) -> None:
        worker = self._worker_of(lease)
        if isinstance(worker, SliceWorker) and worker.direct_host:
            worker.grant(
                {
                    "lease_id": lease.lease_id,
                    "digest": lease.artifact_digest,
                    "artifact_path": str(self.cache.path(lease.artifact_digest)),
                    "node_id": self.node_id,
                }
            )

    # -------------------------------------------------------------- jobs

    def _fetch(self, fetch: Fetch) -> None:
        launch = fetch.launch
        try:
            self._ensure_artifact(launch.artifact_digest, self.cache.path(launch.artifact_digest))
            inputs = launch.inputs
            if launch.inputs_digest:
                inputs = self.link.fetch_blob(launch.inputs_digest)
        except Exception as error:
            self._handle(
                Fetched(
                    launch, b"", str(error) or type(error).__name__, time.time(), fetch.stimulus_id
                )
            )
            return
        self._handle(Fetched(launch, inputs, "", time.time(), fetch.stimulus_id))

    def _ensure_artifact(self, digest: str, path: Path) -> None:
        """Download ``digest`` to ``path`` unless there; concurrent launches share one download."""
        with self._lock:
            pending = self._fetching.get(digest)
            owner = pending is None
            if owner:
                pending = self._fetching[digest] = threading.Event()
        assert pending is not None
        if not owner:
            pending.wait(300)
            if path.exists():
                return
        try:
            if not path.exists():
                data = self.link.fetch_blob(digest)
                if hashlib.sha256(data).hexdigest() != digest:
                    raise ValueError(f"artifact {digest[:12]} arrived corrupted")
                tmp = path.with_suffix(".part")
                tmp.write_bytes(data)
                os.replace(tmp, path)
                with self._lock:
                    busy = {
                        *self._fetching,
                        *(lease.artifact_digest for lease in self.state.leases.values()),
                    }
                self.cache.trim(keep={*busy, *self._warm(), digest})
        finally:
            if owner:
                with self._lock:
                    self._fetching.pop(digest, None)
                pending.set()

    def _submit(self, launch: m.Launch, inputs: bytes) -> None:
        worker = self.workers[(launch.device_id, launch.slice_index)]
        worker.submit(
            SliceJob(
                job_id=launch.job_id,
                attempt=launch.attempt,
                digest=launch.artifact_digest,
                artifact_path=str(self.cache.path(launch.artifact_digest)),
                inputs=inputs,
                timeout_s=launch.timeout_s,
                memory_limit_bytes=launch.memory_limit_bytes,
                compute_milli=launch.compute_milli,
            )
        )

    def run_leased(self, lease_id: str, inputs: bytes | tuple) -> m.JobResult | None:
        """Run one call on a leased slice; None if the lease was revoked (place it anew).

        Called by the client directly (see ``scheduler._leases``). The slice takes it in
        turn with launched jobs; on an idle thread slice the caller's thread runs it.
        ``inputs``: encoded, or the tuple of input tensors themselves (then a thread slice
        returns the outputs as ``JobResult.value``, with nothing encoded either way).
        """
        job_id = "job-" + secrets.token_hex(6)  # the scheduler's form of job id
        waiting = _Waiting()
        with self._lock:
            self._lease_news.wait_for(
                lambda: self.state.lease_settled(lease_id), timeout=_GRANT_WAIT_S
            )
            self._waiting[job_id] = waiting
            instructions = self.state.handle(
                CallArrived(lease_id, job_id, time.time(), f"call-{lease_id}")
            )
        run = instructions[0]
        if not isinstance(run, RunCall):
            self._waiting.pop(job_id, None)
            return None
        worker = self.workers[(run.lease.device_id, run.lease.slice_index)]
        job = SliceJob(
            job_id=job_id,
            attempt=1,
            digest=run.lease.artifact_digest,
            artifact_path=str(self.cache.path(run.lease.artifact_digest)),
            inputs=b"",
            timeout_s=0.0,
            direct=True,
        )
        if isinstance(inputs, bytes):
            job.inputs = inputs
        elif isinstance(worker, ThreadSliceWorker):
            job.args = inputs
        else:
            job.inputs = _codec.encode(inputs, "inputs")
        with run_dispatched_here():
            worker.submit(job)
        waiting.done.wait()
        return waiting.result

    def _serve_direct(self, lease_id: str, inputs: bytes) -> tuple[m.JobResult | None, str]:
        """DirectService at the agent: run the call, and name the slice's own server."""
        result = self.run_leased(lease_id, inputs)
        lease = self.state.leases.get(lease_id)
        worker = self._worker_of(lease) if lease else None
        address = worker.direct_address if isinstance(worker, SliceWorker) else ""
        return result, address if result is not None else ""

    def _on_leased_run(self, run: dict) -> None:
        """A worker process ran a direct call itself: ``run`` holds its lease, job id and
        times, and its outcome's fields."""
        record = m.LeasedRun(
            str(run["lease_id"]),
            str(run["job_id"]),
            float(run["started_at"]),
            float(run["finished_at"]),
            m.Outcome.from_fields(run),
        )
        self._handle(LeasedRunDone(record, f"leased-run-{record.job_id}"))

    @staticmethod
    def _host_cgroups(config: AgentConfig) -> HostCgroups | None:
        if not config.cgroups or config.isolation != "process":
            return None
        if config.ray is not None or not any(d.holds_host_memory for d in config.devices):
            return None
        cgroups, line = host_cgroups()
        log.info("%s", line)
        return cgroups

    def _on_answer(self, result: m.JobResult) -> None:
        sid = f"result-{result.job_id}-{result.attempt}"
        limit = self.link.outputs_inline_bytes
        if limit is not None and len(result.outputs) > limit and result.job_id not in self._waiting:
            result = self._outputs_as_blob(result, sid)
        self._handle(WorkerAnswered(result, time.time(), sid))

    def _outputs_as_blob(self, result: m.JobResult, sid: str) -> m.JobResult:
        """Upload outputs too large for a message; the result then names the blob."""
        size = format_bytes(len(result.outputs))
        digest = hashlib.sha256(result.outputs).hexdigest()
        try:
            self.link.put_blob(digest, result.outputs)
        except Exception as error:
            message = f"the outputs ({size}) could not be delivered to the scheduler: {error}"
            log.warning("job %s attempt %d: %s [%s]", result.job_id, result.attempt, message, sid)
            outcome = m.Outcome.failed(m.FailureCode.OUTPUTS_UNDELIVERABLE, message)
            return replace(result, outcome=outcome, outputs=b"")
        log.info("job %s: outputs (%s) sent as blob %s [%s]", result.job_id, size, digest[:12], sid)
        return replace(result, outputs=b"", outputs_digest=digest)

    # -------------------------------------------------------------- housekeeping

    def _warm(self) -> tuple[str, ...]:
        return tuple(sorted({d for w in self.workers.values() for d in w.warm}))

    def _housekeeping(self) -> None:
        while not self._stop.wait(_TICK_S):
            self.ticked_at = time.monotonic()
            now = time.time()
            running: list[RunningJob] = []
            busy: set[tuple[str, int]] = set()
            for key, worker in self.workers.items():
                failure = worker.check_deadline(now)
                if failure is not None:
                    self._on_answer(failure)
                job = worker.running
                if job is not None:
                    running.append(RunningJob(job.job_id, job.attempt, job.started_at, job.direct))
                    busy.add(key)
            tick = Tick(
                now,
                f"tick-{next(self._ticks)}",
                tuple(running),
                frozenset(busy),
                self._warm(),
                self._readings,
                self._job_memory,
            )
            self._handle(tick)

    def _read_loop(self) -> None:
        """The probes' readings once a second (those whose reading is a cheap library
        call, ``Probe.quick_readings``, four times a second); each running job's own
        memory, and the memory watchdog, four times a second."""
        rounds = itertools.count()
        idle: dict[tuple[str, int], int] = {}  # a slice's worker memory while it is idle
        quick = tuple(probe for probe in self.config.probes if probe.quick_readings)
        while not self._stop.wait(_WATCH_EVERY_S):
            if next(rounds) % round(_READ_EVERY_S / _WATCH_EVERY_S) == 0 and self.config.probes:
                self._readings = collect_readings(self.config.probes)
            elif quick:
                self._readings = {**self._readings, **collect_readings(quick)}
            readings = self._readings
            jobs = []
            for key, worker in self.workers.items():
                job, pid = worker.running, worker.pid
                if pid is None:
                    continue
                reading = readings.get(key[0])
                used = job_memory(worker.device, pid, reading)
                host_memory = reading is None or pid not in reading.process_memory
                if job is None:
                    if used is not None:
                        idle[key] = used  # the worker and its warm models: not a job's
                    continue
                if used is None:
                    continue
                if host_memory:
                    if key not in idle:
                        continue  # never seen idle: its own share is not known yet
                    used = max(0, used - idle[key])
                elif worker.device.shared and key in idle:
                    # A seat keeps its runtime context and warm models between jobs; what
                    # the job reserved is what it adds (its first job's context included).
                    used = max(0, used - idle[key])
                jobs.append(m.JobUsage(job.job_id, job.attempt, key[0], used))
                if not host_memory:
                    # Device memory as its vendor reads it per process: nothing else caps
                    # it. Host memory is capped in the worker itself (RLIMIT_DATA, which
                    # refuses the allocation at once); its resident set also grows with
                    # what loading a model imports, which is not the job's to answer for.
                    self._watch_memory(
                        worker, job.job_id, job.attempt, used, job.memory_limit_bytes
                    )
            self._job_memory = tuple(jobs)

    def _watch_memory(
        self, worker: Worker, job_id: str, attempt: int, used: int, reserved: int = 0
    ) -> None:
        """Stop a job that went over its share (its reservation on a shared device, else
        its slice's memory), before its neighbours suffer."""
        share = reserved or worker.device.slice_memory_bytes
        if used <= share:
            return
        where = f"{self.node_id or self.config.name}/{worker.device.device_id}"
        if reserved:
            seat = f"seat {worker.slice_index}; its reservation, sized from the model's estimate"
            advice = "the next run of this model reserves what this one used"
        else:
            seat = f"slice {worker.slice_index}"
            advice = "run it where a slice has more memory"
        message = (
            f"used {format_bytes(used)} of a {format_bytes(share)} share on {where}"
            f" ({seat}); it was stopped so the device's other jobs keep theirs: {advice}"
        )
        failure = worker.stop_over_memory(job_id, attempt, message)
        if failure is not None:
            # What it used goes with the failure: the scheduler sizes a retry from it.
            outcome = dataclasses.replace(failure.outcome, memory_used_bytes=used)
            failure = dataclasses.replace(failure, outcome=outcome)
            log.warning(
                "job %s attempt %d %s [memory-%s-%d]", job_id, attempt, message, job_id, attempt
            )
            self._on_answer(failure)
