"""The node agent: join, heartbeat, run jobs in slice workers, survive scheduler restarts.

The agent opens one stream to the scheduler, sends a Join with its inventory, then
answers Launch and Cancel messages and reports JobStarted / JobResult. If the stream
breaks it reconnects with jittered exponential backoff, re-joins with the attempts it
is still running (so the scheduler keeps them), and sends results it finished while
disconnected.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import secrets
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path

from anypu import PROTOCOL_VERSION, __version__, _codec
from anypu.agents._link import SchedulerLink
from anypu.agents._workers import (
    SliceJob,
    SliceWorker,
    ThreadSliceWorker,
    run_dispatched_here,
)
from anypu.devices import Device
from anypu.errors import AuthenticationError, ConfigError
from anypu.protos import messages as m

__all__ = ["Agent", "AgentConfig"]

log = logging.getLogger("anypu.agent")

Worker = SliceWorker | ThreadSliceWorker
_ANNOUNCE_AFTER_S = 0.05
_RESEND_WINDOW_S = 120.0
_RESEND_MAX = 512
_RESEND_MAX_BYTES = 256 << 20
_LEASED_RUNS_KEPT = 10_000  # unreported records of direct runs kept while disconnected
_LEASED_RUNS_BATCH = 16
# A client hears of its lease on its own connection, possibly before the grant reaches this
# agent on the scheduler's stream: a call under a lease not yet heard of waits this long
# for it, rather than fall back to placement. Ended leases are answered at once.
_GRANT_WAIT_S = 1.0
_ENDED_LEASES_KEPT = 4096


@dataclass
class AgentConfig:
    name: str
    tier: str
    devices: list[Device]
    token: str = ""
    site: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    cache_dir: str = ""
    max_backoff_s: float = 2.0
    #: "process" (one worker process per slice) or "thread" (the embedded mode only: the
    #: user's own process already runs their model, so isolation buys nothing there).
    isolation: str = "process"
    #: Take calls directly under leases the scheduler grants (see ``scheduler._leases``)
    #: in this process: needs the embedded mode's in-process link.
    direct_runs: bool = False
    #: Or over gRPC: serve DirectService at this HOST:PORT (port 0: any free one), which
    #: clients must be able to reach. "" serves none (an agent behind NAT).
    direct_address: str = ""
    #: (certificate file, key file) of this node: serve those calls over TLS, as a node
    #: enrolled with a TLS scheduler must (clients check the certificate names this node).
    direct_tls: tuple[str, str] | None = None


@dataclass
class _DirectCall:
    lease_id: str
    started_at: float
    done: threading.Event = field(default_factory=threading.Event)
    result: m.JobResult | None = None


class Agent:
    def __init__(self, config: AgentConfig, link: SchedulerLink) -> None:
        self.config = config
        self.link = link
        cache = config.cache_dir or os.path.join(tempfile.gettempdir(), "anypu-cache")
        self.artifacts = Path(cache) / "artifacts"
        self.artifacts.mkdir(parents=True, exist_ok=True)
        self.node_id = ""
        self.epoch = 0
        self.heartbeat_interval_s = 1.0
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        # Every result reported lately, re-sent after each (re)join: a scheduler that crashed
        # before committing a result gets it again (duplicates are ignored), so no job
        # runs twice to completion. Bounded by age, count and bytes.
        self._recent: deque[tuple[float, m.JobResult]] = deque()
        self._recent_bytes = 0
        self._fetching: dict[str, threading.Event] = {}
        if config.isolation not in ("process", "thread"):
            raise ConfigError(f"isolation must be 'process' or 'thread', got {config.isolation!r}")
        self._direct_server = None
        if config.direct_address:  # before the workers start: a taken port stops us cleanly
            from anypu.agents._direct import DirectServer

            tls = None
            if config.direct_tls is not None:
                cert, key = (Path(p).read_bytes() for p in config.direct_tls)
                tls = (cert, key)
            self._direct_server = DirectServer(self._serve_direct, config.direct_address, tls=tls)
        self.workers: dict[tuple[str, int], Worker] = {}
        for device in config.devices:
            for index in range(device.slices):
                if config.isolation == "thread":
                    worker: Worker = ThreadSliceWorker(device, index, self._on_answer)
                else:
                    # With a direct address, each slice's process serves its leases too.
                    host = config.direct_address.rpartition(":")[0]
                    worker = SliceWorker(
                        device,
                        index,
                        self._on_answer,
                        direct_host=host,
                        direct_tls=config.direct_tls,
                        on_leased_run=self._keep_leased_run,
                    )
                self.workers[(device.device_id, index)] = worker
        if hasattr(link, "handler"):
            link.handler = self.handle  # type: ignore[attr-defined]
        self._leases: dict[str, m.Lease] = {}
        self._ended_leases: dict[str, None] = {}  # insertion-ordered, bounded
        self._lease_news = threading.Condition(self._lock)
        self._direct_calls: dict[str, _DirectCall] = {}
        self._leased_runs: list[m.LeasedRun] = []
        if config.direct_runs:
            if not hasattr(link, "direct"):
                raise ConfigError("direct runs need an in-process link to the scheduler")
            link.direct = self.run_leased  # type: ignore[attr-defined]
        self._housekeeper = threading.Thread(
            target=self._housekeeping, name="anypu-agent-heartbeat", daemon=True
        )
        self._housekeeper.start()

    # -------------------------------------------------------------- lifecycle

    def wait_ready(self, timeout: float = 60.0) -> bool:
        """Wait until every worker process has started (torch imported)."""
        deadline = time.monotonic() + timeout
        return all(
            w.wait_ready(max(0.0, deadline - time.monotonic())) for w in self.workers.values()
        )

    def stop(self) -> None:
        self._stop.set()
        if self._direct_server is not None:
            self._direct_server.stop()
        self.link.close()
        for worker in self.workers.values():
            worker.close()

    def run(self) -> None:
        """Serve until ``stop()``; reconnect whenever the stream breaks."""
        backoff = 0.1
        while not self._stop.is_set():
            try:
                for message in self.link.open(self._join()):
                    if isinstance(message, m.JoinAck):
                        backoff = 0.1
                    self.handle(message)
            except (AuthenticationError, ConfigError):
                self.stop()
                raise
            except Exception as error:  # scheduler gone or restarting: try again
                log.info("scheduler stream broke: %s", error)
            self.connected.clear()
            if self._stop.is_set():
                break
            delay = backoff * (0.5 + random.random())
            self._stop.wait(delay)
            backoff = min(backoff * 2, self.config.max_backoff_s)

    def handle(self, message: m.SchedulerMessage) -> None:
        if isinstance(message, m.JoinAck):
            self._joined(message)
        elif isinstance(message, m.Launch):
            self._launch(message)
        elif isinstance(message, m.Cancel):
            self._cancel(message)
        elif isinstance(message, m.LeaseGranted):
            lease = message.lease
            with self._lock:
                self._leases[lease.lease_id] = lease
                self._lease_news.notify_all()
            worker = self.workers.get((lease.device_id, lease.slice_index))
            if isinstance(worker, SliceWorker) and worker.direct_host:
                worker.grant(
                    {
                        "lease_id": lease.lease_id,
                        "digest": lease.artifact_digest,
                        "artifact_path": str(self.artifacts / lease.artifact_digest),
                        "node_id": self.node_id,
                    }
                )
        elif isinstance(message, m.LeaseRevoked):
            with self._lock:
                lease = self._leases.pop(message.lease_id, None)
                self._end_lease(message.lease_id)
            if lease is not None:
                self._revoke_at_worker(lease)

    def _end_lease(self, lease_id: str) -> None:
        """Remember that ``lease_id`` ended (caller holds ``_lock``) and wake its waiters."""
        self._ended_leases[lease_id] = None
        while len(self._ended_leases) > _ENDED_LEASES_KEPT:
            del self._ended_leases[next(iter(self._ended_leases))]
        self._lease_news.notify_all()

    def _revoke_at_worker(self, lease: m.Lease) -> None:
        worker = self.workers.get((lease.device_id, lease.slice_index))
        if isinstance(worker, SliceWorker):
            worker.revoke(lease.lease_id)

    def _join(self) -> m.Join:
        with self._lock:
            running = [a for w in self.workers.values() for a in w.in_flight()]
            running += [(r.job_id, r.attempt) for _, r in self._recent]
        return m.Join(
            protocol_version=PROTOCOL_VERSION,
            token=self.config.token,
            name=self.config.name,
            tier=self.config.tier,
            site=self.config.site,
            labels=dict(self.config.labels),
            devices=tuple(self.config.devices),
            warm_digests=self._warm(),
            agent_version=__version__,
            running=tuple(running),
            direct_runs=self.config.direct_runs,
            direct_address=self._direct_server.address if self._direct_server else "",
        )

    def _joined(self, ack: m.JoinAck) -> None:
        self.node_id, self.epoch = ack.node_id, ack.epoch
        self.heartbeat_interval_s = ack.heartbeat_interval_s
        self.connected.set()
        with self._lock:
            forgotten = list(self._leases.values())
            self._leases.clear()  # granted to the previous stream
            for lease in forgotten:
                self._end_lease(lease.lease_id)
            recent = [result for _, result in self._recent]
        for lease in forgotten:
            self._revoke_at_worker(lease)
        for result in recent:
            self.link.send(result)
        log.info("joined as %s (epoch %d)", ack.node_id, ack.epoch)

    # -------------------------------------------------------------- jobs

    def _launch(self, launch: m.Launch) -> None:
        worker = self.workers.get((launch.device_id, launch.slice_index))
        if worker is None:
            where = f"{launch.device_id}/{launch.slice_index}"
            message = f"{self.config.name} has no slice {where}"
            self._fail(launch, m.FailureCode.NO_SUCH_SLICE, message)
            return
        path = self.artifacts / launch.artifact_digest
        if path.exists() and not launch.inputs_digest:
            self._submit(worker, launch, path, launch.inputs)
            return
        threading.Thread(
            target=self._fetch_then_submit, args=(worker, launch, path), daemon=True
        ).start()

    def _fetch_then_submit(self, worker: Worker, launch: m.Launch, path: Path) -> None:
        try:
            self._ensure_artifact(launch.artifact_digest, path)
            inputs = launch.inputs
            if launch.inputs_digest:
                inputs = self.link.fetch_blob(launch.inputs_digest)
        except Exception as error:
            message = f"could not fetch the model artifact: {error}"
            self._fail(launch, m.FailureCode.ARTIFACT_UNAVAILABLE, message)
            return
        self._submit(worker, launch, path, inputs)

    def _ensure_artifact(self, digest: str, path: Path) -> None:
        with self._lock:
            pending = self._fetching.get(digest)
            owner = pending is None
            if owner:
                pending = self._fetching[digest] = threading.Event()
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
        finally:
            if owner:
                with self._lock:
                    self._fetching.pop(digest, None)
                pending.set()

    def _submit(self, worker: Worker, launch: m.Launch, path: Path, inputs: bytes) -> None:
        worker.submit(
            SliceJob(
                job_id=launch.job_id,
                attempt=launch.attempt,
                digest=launch.artifact_digest,
                artifact_path=str(path),
                inputs=inputs,
                timeout_s=launch.timeout_s,
            )
        )

    def _cancel(self, cancel: m.Cancel) -> None:
        for worker in self.workers.values():
            if worker.cancel(cancel.job_id, cancel.attempt):
                return

    def run_leased(self, lease_id: str, inputs: bytes | tuple) -> m.JobResult | None:
        """Run one call on a leased slice; None if the lease was revoked (place it anew).

        Called by the client directly (see ``scheduler._leases``). The slice takes it in
        turn with launched jobs; on an idle thread slice the caller's thread runs it.
        ``inputs``: encoded, or the tuple of input tensors themselves (then a thread slice
        returns the outputs as ``JobResult.value``, with nothing encoded either way).
        """
        with self._lock:
            self._lease_news.wait_for(
                lambda: lease_id in self._leases or lease_id in self._ended_leases,
                timeout=_GRANT_WAIT_S,
            )
            lease = self._leases.get(lease_id)
        if lease is None:
            return None
        worker = self.workers.get((lease.device_id, lease.slice_index))
        if worker is None:
            return None
        job = SliceJob(
            job_id="job-" + secrets.token_hex(6),  # the scheduler's form of job id
            attempt=1,
            digest=lease.artifact_digest,
            artifact_path=str(self.artifacts / lease.artifact_digest),
            inputs=b"",
            timeout_s=0.0,
            announced=True,  # reported as a LeasedRun, never as a started job
        )
        if isinstance(inputs, bytes):
            job.inputs = inputs
        elif isinstance(worker, ThreadSliceWorker):
            job.args = inputs
        else:
            job.inputs = _codec.encode(inputs, "inputs")
        call = _DirectCall(lease_id, time.time())
        with self._lock:
            self._direct_calls[job.job_id] = call
        with run_dispatched_here():
            worker.submit(job)
        call.done.wait()
        assert call.result is not None
        return call.result

    def _serve_direct(self, lease_id: str, inputs: bytes) -> tuple[m.JobResult | None, str]:
        """DirectService at the agent: run the call, and name the slice's own server."""
        result = self.run_leased(lease_id, inputs)
        lease = self._leases.get(lease_id)
        worker = self.workers.get((lease.device_id, lease.slice_index)) if lease else None
        address = worker.direct_address if isinstance(worker, SliceWorker) else ""
        return result, address if result is not None else ""

    def _keep_leased_run(self, run: dict) -> None:
        """Keep the record of a direct call for the next report: ``run`` holds its lease,
        job id and times, and its outcome's fields; a worker process that ran one itself
        reports it this way too."""
        record = m.LeasedRun(
            str(run["lease_id"]),
            str(run["job_id"]),
            float(run["started_at"]),
            float(run["finished_at"]),
            m.Outcome.from_fields(run),
        )
        with self._lock:
            self._leased_runs.append(record)
            del self._leased_runs[:-_LEASED_RUNS_KEPT]

    def _on_answer(self, result: m.JobResult) -> None:
        with self._lock:
            call = self._direct_calls.pop(result.job_id, None)
        if call is None:
            self._report(replace(result, node_id=self.node_id))
            return
        when = {"lease_id": call.lease_id, "job_id": result.job_id, "started_at": call.started_at}
        self._keep_leased_run(result.outcome.fields() | when | {"finished_at": time.time()})
        call.result = replace(result, node_id=self.node_id)
        call.done.set()

    def _report_leased_runs(self) -> None:
        """Send the records of direct runs in batches, off the callers' path.

        Small batches, yielding between them: in-process, recording them runs in this
        thread, and a caller needing the GIL meanwhile would wait out the whole batch.
        """
        with self._lock:
            runs, self._leased_runs = self._leased_runs, []
        for start in range(0, len(runs), _LEASED_RUNS_BATCH):
            try:
                self.link.send(m.LeasedRuns(tuple(runs[start : start + _LEASED_RUNS_BATCH])))
            except Exception:  # the stream just broke: keep the rest for the next join
                with self._lock:
                    self._leased_runs[:0] = runs[start:]
                return
            time.sleep(0)

    def _fail(self, launch: m.Launch, code: m.FailureCode, message: str) -> None:
        outcome = m.Outcome.failed(code, message)
        result = m.JobResult(launch.job_id, launch.attempt, outcome, b"", self.node_id)
        self._report(replace(result, device_id=launch.device_id))

    def _report(self, result: m.JobResult) -> None:
        now = time.time()
        with self._lock:
            self._recent.append((now, result))
            self._recent_bytes += len(result.outputs)
            while self._recent and (
                len(self._recent) > _RESEND_MAX
                or self._recent_bytes > _RESEND_MAX_BYTES
                or now - self._recent[0][0] > _RESEND_WINDOW_S
            ):
                self._recent_bytes -= len(self._recent.popleft()[1].outputs)
        if self.connected.is_set():
            try:
                self.link.send(result)
            except Exception:  # the stream just broke: the next join re-sends it
                pass

    # -------------------------------------------------------------- housekeeping

    def _warm(self) -> tuple[str, ...]:
        return tuple(sorted({d for w in self.workers.values() for d in w.warm}))

    def _housekeeping(self) -> None:
        next_beat = 0.0
        while not self._stop.wait(0.05):
            now = time.time()
            for worker in self.workers.values():
                failure = worker.check_deadline(now)
                if failure is not None:
                    self._on_answer(failure)
                self._announce(worker.running, now)
            if self.connected.is_set():
                self._report_leased_runs()
            if self.connected.is_set() and now >= next_beat:
                next_beat = now + self.heartbeat_interval_s
                try:
                    self.link.send(self._heartbeat(now))
                except Exception:
                    pass

    def _announce(self, job: SliceJob | None, now: float) -> None:
        """Tell the scheduler a job is running once it has run for a while.

        A short job's result says it ran, so JobStarted is sent only for jobs still
        running after ``_ANNOUNCE_AFTER_S``: one message less per call on the hot path.
        """
        if job is None or job.announced or now - job.started_at < _ANNOUNCE_AFTER_S:
            return
        if self.connected.is_set():
            job.announced = True
            self.link.send(m.JobStarted(job.job_id, job.attempt))

    def _heartbeat(self, now: float) -> m.Heartbeat:
        usage = []
        for device in self.config.devices:
            busy = sum(1 for (d, _), w in self.workers.items() if d == device.device_id and w.busy)
            usage.append(
                m.DeviceUsage(
                    device_id=device.device_id,
                    utilisation=busy / max(1, device.slices),
                    free_memory_bytes=device.slice_memory_bytes * (device.slices - busy),
                    busy_slices=busy,
                )
            )
        return m.Heartbeat(
            sent_at=now,
            usage=tuple(usage),
            warm_digests=self._warm(),
            running_jobs=sum(1 for w in self.workers.values() if w.busy),
        )
