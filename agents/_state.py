"""The agent's state machine: events in, instructions out, no I/O.

``AgentState.handle(event)`` changes the state and returns what the agent's shell must
do (send a message up the stream, hand a job to a slice, fetch an artifact, tell a
worker of a lease, answer a waiting direct call), as ``SchedulerState`` does on the
other side of the stream.  ``agents/_agent.py`` is the I/O around it: the stream, the
worker processes, the threads and the clock.  Tests drive this directly with events and
a fake clock.

What it keeps, and why:

- **the resend window**: every result reported lately (bounded by age, count and bytes)
  is sent again after each (re)join, so a scheduler that crashed before committing a
  result gets it again (duplicates are ignored there) and no job runs twice to completion;
- **leases**: the leases granted on the current stream (a call under one runs here
  without placement) and a bounded memory of ended ones, so a call under an ended lease
  is refused at once while one under a lease not heard of yet may wait for its grant;
- **direct calls** in flight and the records of finished ones (``LeasedRun``), reported
  in small batches while connected and kept (bounded) while not;
- **announcements**: a job still running ``announce_after_s`` after it started is
  announced with ``JobStarted``; a short job's result says it ran, so it never is.

Every event carries a ``stimulus_id`` (derived from what caused it: ``launch-<job>-<n>``,
``answer-<job>-<n>``, ``grant-<lease>``…); every instruction and log line it causes
carries the same id, so an operator can follow one cause through the log.
"""

from __future__ import annotations

import itertools
import logging
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from anypu import PROTOCOL_VERSION, __version__
from anypu.devices import Device, Reading
from anypu.protos import messages as m

__all__ = [
    "AgentIdentity",
    "AgentState",
    "AgentStateConfig",
    "AnswerCall",
    "BandwidthMeasured",
    "CallArrived",
    "CancelAtWorker",
    "Fetch",
    "Fetched",
    "GrantAtWorker",
    "Instruction",
    "LeasedRunDone",
    "LeasedRunsUnsent",
    "PeerMeasured",
    "RevokeAtWorker",
    "RunCall",
    "RunningJob",
    "SchedulerSaid",
    "Send",
    "StreamBroke",
    "Submit",
    "Tick",
    "WorkerAnswered",
]

log = logging.getLogger("anypu.agent")

#: One heartbeat in this many asks for an echo (the first always does): at 1,000 agents,
#: an echo on every heartbeat doubled the median placement latency on 2 cores
#: (``benchmarks.agents_load``), and a round trip every few seconds is enough to follow.
ECHO_EVERY = 5
#: Echoes over which the least round trip is the path's own (``AgentState.base_rtt_s``).
BASE_RTT_SAMPLES = 16


@dataclass(frozen=True)
class AgentIdentity:
    """What the agent tells the scheduler about itself on every Join."""

    name: str
    tier: str
    devices: tuple[Device, ...]
    token: str = ""
    site: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    direct_runs: bool = False
    direct_address: str = ""


@dataclass(frozen=True)
class AgentStateConfig:
    announce_after_s: float = 0.05
    resend_window_s: float = 120.0
    resend_max: int = 512
    resend_max_bytes: int = 256 << 20
    #: Unreported records of direct runs kept while disconnected.
    leased_runs_kept: int = 10_000
    leased_runs_batch: int = 16
    ended_leases_kept: int = 4096


# ---------------------------------------------------------------- events


@dataclass(frozen=True)
class SchedulerSaid:
    """A message arrived on the stream. ``artifact_cached``: a Launch's model is on disk."""

    message: m.SchedulerMessage
    now: float
    stimulus_id: str
    artifact_cached: bool = False


@dataclass(frozen=True)
class StreamBroke:
    reason: str
    now: float
    stimulus_id: str


@dataclass(frozen=True)
class Fetched:
    """A ``Fetch`` finished: the launch's inputs, or why its artifact could not be had."""

    launch: m.Launch
    inputs: bytes
    error: str
    now: float
    stimulus_id: str


@dataclass(frozen=True)
class WorkerAnswered:
    """A slice answered a job or a direct call (or its deadline failed it)."""

    result: m.JobResult
    now: float
    stimulus_id: str


@dataclass(frozen=True)
class CallArrived:
    """A client called under ``lease_id``; ``job_id`` names the run."""

    lease_id: str
    job_id: str
    now: float
    stimulus_id: str


@dataclass(frozen=True)
class LeasedRunDone:
    """A worker process ran a direct call itself (its own port) and reports the record."""

    run: m.LeasedRun
    stimulus_id: str


@dataclass(frozen=True)
class LeasedRunsUnsent:
    """Sending these records failed (the stream broke): keep them for the next join."""

    runs: tuple[m.LeasedRun, ...]
    stimulus_id: str


@dataclass(frozen=True)
class RunningJob:
    job_id: str
    attempt: int
    started_at: float
    #: A call under a lease: reported as a LeasedRun, never announced as a started job.
    direct: bool = False


@dataclass(frozen=True)
class Tick:
    """The shell's periodic look at its slices: what runs, which are busy, what is warm."""

    now: float
    stimulus_id: str
    running: tuple[RunningJob, ...] = ()
    busy: frozenset[tuple[str, int]] = frozenset()
    warm: tuple[str, ...] = ()
    #: The probes' latest readings by device id, and each running job's own memory.
    readings: Mapping[str, Reading] = field(default_factory=dict)
    job_memory: tuple[m.JobUsage, ...] = ()


@dataclass(frozen=True)
class BandwidthMeasured:
    """A bandwidth probe to the scheduler carried ``bps`` bytes per second (``_probes``)."""

    bps: float
    now: float
    stimulus_id: str = "probe"


@dataclass(frozen=True)
class PeerMeasured:
    """A round trip (and bandwidth) to another site's agent was timed (``_peers``)."""

    sample: m.PeerSample
    now: float
    stimulus_id: str = "peer-probe"


Event = (
    SchedulerSaid
    | BandwidthMeasured
    | PeerMeasured
    | StreamBroke
    | Fetched
    | WorkerAnswered
    | CallArrived
    | LeasedRunDone
    | LeasedRunsUnsent
    | Tick
)

# ---------------------------------------------------------------- instructions


@dataclass(frozen=True)
class Send:
    message: m.AgentMessage
    stimulus_id: str


@dataclass(frozen=True)
class Submit:
    """Queue a launched job on its slice (the artifact is on disk)."""

    launch: m.Launch
    inputs: bytes
    stimulus_id: str


@dataclass(frozen=True)
class Fetch:
    """Fetch a launch's artifact (unless on disk) and its inputs blob, then say ``Fetched``."""

    launch: m.Launch
    stimulus_id: str


@dataclass(frozen=True)
class CancelAtWorker:
    job_id: str
    attempt: int
    stimulus_id: str


@dataclass(frozen=True)
class GrantAtWorker:
    lease: m.Lease
    stimulus_id: str


@dataclass(frozen=True)
class RevokeAtWorker:
    lease: m.Lease
    stimulus_id: str


@dataclass(frozen=True)
class RunCall:
    """Run the direct call ``job_id`` on the lease's slice."""

    job_id: str
    lease: m.Lease
    stimulus_id: str


@dataclass(frozen=True)
class AnswerCall:
    """Hand ``result`` to the caller waiting on direct call ``job_id`` (None: refused)."""

    job_id: str
    result: m.JobResult | None
    stimulus_id: str


Instruction = (
    Send | Submit | Fetch | CancelAtWorker | GrantAtWorker | RevokeAtWorker | RunCall | AnswerCall
)


@dataclass
class _DirectCall:
    lease_id: str
    started_at: float


class AgentState:
    """One agent's view of its scheduler, its leases and its unreported results."""

    def __init__(self, identity: AgentIdentity, config: AgentStateConfig | None = None) -> None:
        self.identity = identity
        self.config = config or AgentStateConfig()
        self.node_id = ""
        self.epoch = 0
        self.heartbeat_interval_s = 1.0
        self.connected = False
        #: The last heartbeat echo's round trip not yet reported (seconds; 0.0: none).
        self.rtt_s = 0.0
        #: The last ``BASE_RTT_SAMPLES`` measured, reported or not: their least is the
        #: path's own round trip, without queueing (what a bandwidth probe subtracts; a
        #: round trip timed while a probe filled the link would inflate it).
        self._recent_rtts: deque[float] = deque(maxlen=BASE_RTT_SAMPLES)
        #: The last bandwidth probe's bytes per second, not yet reported (0.0: none).
        self.bandwidth_bps = 0.0
        #: Other sites' agents to time (``m.Peers``), and what was timed, not yet reported.
        self.peers: tuple[m.Peer, ...] = ()
        self._peer_samples: dict[str, m.PeerSample] = {}
        self._beats = itertools.count()
        self.leases: dict[str, m.Lease] = {}
        self._ended_leases: dict[str, None] = {}  # insertion-ordered, bounded
        self._recent: deque[tuple[float, m.JobResult]] = deque()
        self._recent_bytes = 0
        self._direct_calls: dict[str, _DirectCall] = {}
        self._leased_runs: list[m.LeasedRun] = []
        self._announced: set[tuple[str, int]] = set()
        self._next_beat = 0.0
        self._slices = {(d.device_id, i) for d in identity.devices for i in range(d.slices)}

    # -------------------------------------------------------------- queries

    def lease_settled(self, lease_id: str) -> bool:
        """Whether ``lease_id`` is known here, granted or ended (a call need not wait)."""
        return lease_id in self.leases or lease_id in self._ended_leases

    def join_message(
        self, in_flight: list[tuple[str, int]], warm: tuple[str, ...], direct_address: str = ""
    ) -> m.Join:
        """The Join for a new stream: the slices' ``in_flight`` attempts and the resend window's
        are still this node's, so the scheduler keeps them."""
        identity = self.identity
        running = list(in_flight) + [(r.job_id, r.attempt) for _, r in self._recent]
        return m.Join(
            protocol_version=PROTOCOL_VERSION,
            token=identity.token,
            name=identity.name,
            tier=identity.tier,
            site=identity.site,
            labels=dict(identity.labels),
            devices=identity.devices,
            warm_digests=warm,
            agent_version=__version__,
            running=tuple(running),
            direct_runs=identity.direct_runs,
            direct_address=direct_address or identity.direct_address,
        )

    @property
    def base_rtt_s(self) -> float:
        """The least of the recent round trips (0.0 before the first)."""
        return min(self._recent_rtts, default=0.0)

    def unreported_leased_runs(self) -> int:
        return len(self._leased_runs)

    # -------------------------------------------------------------- events

    def handle(self, event: Event) -> list[Instruction]:
        if isinstance(event, WorkerAnswered):
            return self._answered(event)
        if isinstance(event, CallArrived):
            return self._call(event)
        if isinstance(event, SchedulerSaid):
            return self._scheduler_said(event)
        if isinstance(event, Tick):
            return self._tick(event)
        if isinstance(event, Fetched):
            return self._fetched(event)
        if isinstance(event, LeasedRunDone):
            self._keep_leased_run(event.run)
            return []
        if isinstance(event, LeasedRunsUnsent):
            self._leased_runs[:0] = event.runs
            del self._leased_runs[: -self.config.leased_runs_kept]
            return []
        if isinstance(event, BandwidthMeasured):
            self.bandwidth_bps = event.bps
            return []
        if isinstance(event, PeerMeasured):
            self._peer_samples[event.sample.site] = event.sample  # the newest per site
            return []
        if isinstance(event, StreamBroke):
            what = "scheduler stream broke" if self.connected else "could not reach the scheduler"
            log.info("%s: %s [%s]", what, event.reason, event.stimulus_id)
            self.connected = False
            return []
        raise TypeError(f"AgentState cannot handle {type(event).__name__}")

    def _scheduler_said(self, event: SchedulerSaid) -> list[Instruction]:
        message, sid = event.message, event.stimulus_id
        if isinstance(message, m.Launch):
            return self._launch(message, event.artifact_cached, event.now, sid)
        if isinstance(message, m.Cancel):
            return [CancelAtWorker(message.job_id, message.attempt, sid)]
        if isinstance(message, m.LeaseGranted):
            self.leases[message.lease.lease_id] = message.lease
            return [GrantAtWorker(message.lease, sid)]
        if isinstance(message, m.LeaseRevoked):
            lease = self.leases.pop(message.lease_id, None)
            self._end_lease(message.lease_id)
            return [RevokeAtWorker(lease, sid)] if lease is not None else []
        if isinstance(message, m.JoinAck):
            return self._joined(message, sid)
        if isinstance(message, m.HeartbeatEcho):
            # Both ends of the round trip on this clock: the two clocks need not agree;
            # the time the scheduler held the heartbeat is its own, not the network's.
            elapsed = event.now - message.sent_at
            held = message.held_s if 0.0 <= message.held_s < elapsed else 0.0
            self.rtt_s = max(0.0, elapsed - held)
            self._recent_rtts.append(self.rtt_s)
            return []
        if isinstance(message, m.Peers):
            self.peers = message.peers
            return []
        raise TypeError(f"AgentState cannot handle a {type(message).__name__} message")

    def _joined(self, ack: m.JoinAck, sid: str) -> list[Instruction]:
        self.node_id, self.epoch = ack.node_id, ack.epoch
        self.heartbeat_interval_s = ack.heartbeat_interval_s
        self.connected = True
        self._next_beat = 0.0
        # Leases were granted to the previous stream; the scheduler grants anew.
        forgotten = list(self.leases.values())
        self.leases.clear()
        instructions: list[Instruction] = []
        for lease in forgotten:
            self._end_lease(lease.lease_id)
            instructions.append(RevokeAtWorker(lease, sid))
        instructions += [Send(result, sid) for _, result in self._recent]
        log.info(
            "joined as %s (epoch %d); %d result(s) re-sent [%s]",
            ack.node_id,
            ack.epoch,
            len(self._recent),
            sid,
        )
        return instructions

    def _launch(self, launch: m.Launch, cached: bool, now: float, sid: str) -> list[Instruction]:
        if (launch.device_id, launch.slice_index) not in self._slices:
            where = f"{launch.device_id}/{launch.slice_index}"
            message = f"{self.identity.name} has no slice {where}"
            return self._fail(launch, m.FailureCode.NO_SUCH_SLICE, message, now, sid)
        if cached and not launch.inputs_digest:
            return [Submit(launch, launch.inputs, sid)]
        return [Fetch(launch, sid)]

    def _fetched(self, event: Fetched) -> list[Instruction]:
        if event.error:
            message = f"could not fetch the model artifact: {event.error}"
            code = m.FailureCode.ARTIFACT_UNAVAILABLE
            return self._fail(event.launch, code, message, event.now, event.stimulus_id)
        return [Submit(event.launch, event.inputs, event.stimulus_id)]

    def _fail(
        self, launch: m.Launch, code: m.FailureCode, message: str, now: float, sid: str
    ) -> list[Instruction]:
        log.warning("job %s attempt %d: %s [%s]", launch.job_id, launch.attempt, message, sid)
        outcome = m.Outcome.failed(code, message)
        result = m.JobResult(
            launch.job_id, launch.attempt, outcome, b"", self.node_id, launch.device_id
        )
        return self._report(result, now, sid)

    def _report(self, result: m.JobResult, now: float, sid: str) -> list[Instruction]:
        config = self.config
        self._recent.append((now, result))
        self._recent_bytes += len(result.outputs)
        while self._recent and (
            len(self._recent) > config.resend_max
            or self._recent_bytes > config.resend_max_bytes
            or now - self._recent[0][0] > config.resend_window_s
        ):
            self._recent_bytes -= len(self._recent.popleft()[1].outputs)
        return [Send(result, sid)] if self.connected else []

    def _end_lease(self, lease_id: str) -> None:
        self._ended_leases[lease_id] = None
        while len(self._ended_leases) > self.config.ended_leases_kept:
            del self._ended_leases[next(iter(self._ended_leases))]

    # -------------------------------------------------------------- direct calls

    def _call(self, event: CallArrived) -> list[Instruction]:
        lease = self.leases.get(event.lease_id)
        if lease is None or (lease.device_id, lease.slice_index) not in self._slices:
            return [AnswerCall(event.job_id, None, event.stimulus_id)]
        self._direct_calls[event.job_id] = _DirectCall(event.lease_id, event.now)
        return [RunCall(event.job_id, lease, event.stimulus_id)]

    def _answered(self, event: WorkerAnswered) -> list[Instruction]:
        result = replace(event.result, node_id=self.node_id)
        call = self._direct_calls.pop(result.job_id, None)
        if call is None:
            outcome = result.outcome
            how = (
                f"ran in {outcome.run_seconds:.3f} s"
                + (f" (load {outcome.load_seconds:.2f} s)" if outcome.load_seconds else "")
                if outcome.ok
                else f"failed: {outcome.code.value if outcome.code else '?'}: {outcome.message[:200]}"
            )
            log.info(
                "job %s attempt %d on %s %s [%s]",
                result.job_id,
                result.attempt,
                result.device_id or "?",
                how,
                event.stimulus_id,
            )
            return self._report(result, event.now, event.stimulus_id)
        run = m.LeasedRun(call.lease_id, result.job_id, call.started_at, event.now, result.outcome)
        self._keep_leased_run(run)
        return [AnswerCall(result.job_id, result, event.stimulus_id)]

    def _keep_leased_run(self, run: m.LeasedRun) -> None:
        self._leased_runs.append(run)
        del self._leased_runs[: -self.config.leased_runs_kept]

    # -------------------------------------------------------------- housekeeping

    def _tick(self, event: Tick) -> list[Instruction]:
        if not self.connected:
            return []
        now, sid = event.now, event.stimulus_id
        instructions: list[Instruction] = []
        running = {(job.job_id, job.attempt) for job in event.running}
        self._announced &= running  # finished or cancelled: forget
        for job in event.running:
            key = (job.job_id, job.attempt)
            if (
                key in self._announced
                or job.direct
                or job.job_id in self._direct_calls  # reported as a LeasedRun instead
                or now - job.started_at < self.config.announce_after_s
            ):
                continue
            self._announced.add(key)
            instructions.append(Send(m.JobStarted(job.job_id, job.attempt), sid))
        # Small batches: in-process, the scheduler records them on the sender's thread,
        # and a caller needing the GIL meanwhile would wait out one big batch.
        runs, self._leased_runs = self._leased_runs, []
        batch = self.config.leased_runs_batch
        for start in range(0, len(runs), batch):
            instructions.append(Send(m.LeasedRuns(tuple(runs[start : start + batch])), sid))
        if now >= self._next_beat:
            self._next_beat = now + self.heartbeat_interval_s
            instructions.append(Send(self._heartbeat(event), sid))
        return instructions

    def _heartbeat(self, tick: Tick) -> m.Heartbeat:
        """Each device's usage: the vendor's readings where its probe has them (a
        simulated device never does), else what the busy slices say."""
        usage = []
        for device in self.identity.devices:
            busy = sum(1 for d, _ in tick.busy if d == device.device_id)
            reading = None if device.simulated else tick.readings.get(device.device_id)
            measured = reading is not None and reading.utilisation is not None
            usage.append(
                m.DeviceUsage(
                    device_id=device.device_id,
                    utilisation=(
                        reading.utilisation
                        if reading is not None and reading.utilisation is not None
                        else busy / max(1, device.slices)
                    ),
                    free_memory_bytes=_free_memory(device, busy, reading),
                    busy_slices=busy,
                    memory_used_bytes=(reading.memory_used_bytes or 0) if reading else 0,
                    measured=measured,
                )
            )
        # Each measurement travels once: the scheduler counts every rtt_s it is sent.
        rtt, self.rtt_s = self.rtt_s, 0.0
        bandwidth, self.bandwidth_bps = self.bandwidth_bps, 0.0
        peers, self._peer_samples = tuple(self._peer_samples.values()), {}
        return m.Heartbeat(
            sent_at=tick.now,
            usage=tuple(usage),
            warm_digests=tick.warm,
            running_jobs=len(tick.busy),
            jobs=tick.job_memory,
            rtt_s=rtt,
            wants_echo=next(self._beats) % ECHO_EVERY == 0,
            bandwidth_bps=bandwidth,
            peers=peers,
        )


def _free_memory(device: Device, busy: int, reading: Reading | None) -> int:
    """A device's free memory for a heartbeat: its vendor's reading where there is one on
    a shared device (whose seats own no fixed share), else the free slices' shares."""
    if device.shared:
        used = reading.memory_used_bytes if reading is not None else None
        return max(0, device.memory_bytes - (used or 0))
    return device.slice_memory_bytes * (device.slices - busy)
