"""The workers of a device's slices, seen from the agent.

Each slice has a FIFO of jobs and runs one at a time. A job is handed over as soon as
the slice is idle, in the caller's thread (no extra hop on the hot path).

- ``SliceWorker`` (networked agents): one process per slice. A job past its timeout, or
  cancelled while running, takes the process down with it (its whole process group) and a
  fresh one starts, so a hung model never blocks the slice.
- ``ThreadSliceWorker`` (the embedded mode): one thread in the user's own process, which
  already runs the user's model; it saves the process hop (≈ 0.3–0.5 ms a call). A job
  past its timeout is reported and its late result dropped, but the thread cannot be
  killed: the slice stays busy until the model returns.

  Inside ``run_dispatched_here()`` a job that an idle thread slice would take is run by
  the calling thread instead, once the context exits (after the scheduler's locks are
  released). The embedded ``sdk.run`` uses it: the user's thread would only block waiting
  for the worker thread anyway, and the two thread hand-offs saved cost 15–20 % of a
  small model's call.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from anypu.agents._cgroups import WorkerCgroup
from anypu.agents._runner import ModelRunner
from anypu.comm import read_frame, result_from_frame, write_frame
from anypu.devices import Device, format_bytes, job_environment, slice_environment
from anypu.protos.messages import FailureCode, JobResult, Outcome

__all__ = ["SliceJob", "SliceWorker", "ThreadSliceWorker", "run_dispatched_here"]

log = logging.getLogger("anypu.agent")


@dataclass
class SliceJob:
    job_id: str
    attempt: int
    digest: str
    artifact_path: str
    inputs: bytes
    timeout_s: float
    started_at: float = 0.0
    #: A call under a lease (run_leased), not a launched job.
    direct: bool = False
    #: The inputs themselves, for a direct call from this process to a thread slice.
    args: tuple[Any, ...] | None = None
    #: On a shared device: the job's memory reservation, which the worker caps it at.
    memory_limit_bytes: int = 0
    #: ... and its compute share in milli, where the vendor caps a process's compute.
    compute_milli: int = 0


class _Slice:
    """Queue, cancel and deadline bookkeeping shared by both kinds of worker."""

    def __init__(
        self,
        device: Device,
        slice_index: int,
        on_answer: Callable[[JobResult], None],
    ) -> None:
        self.device = device
        self.slice_index = slice_index
        self.on_answer = on_answer
        self.queue: deque[SliceJob] = deque()
        self.running: SliceJob | None = None
        self.warm: tuple[str, ...] = ()
        self._lock = threading.Lock()
        self._closed = False
        self._ready = threading.Event()

    @property
    def pid(self) -> int | None:
        """The process running this slice's jobs, when it has one of its own."""
        return None

    def _dispatch(self, job: SliceJob) -> bool:
        """Hand ``job`` to the executor (caller holds the lock); False if it cannot."""
        raise NotImplementedError

    def _abandon_running(self) -> None:
        """The running job was cancelled or timed out (caller holds the lock)."""
        raise NotImplementedError

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self.queue.clear()

    def wait_ready(self, timeout: float) -> bool:
        return self._ready.wait(timeout)

    # -------------------------------------------------------------- jobs

    def submit(self, job: SliceJob) -> None:
        with self._lock:
            self.queue.append(job)
            if self.running is None and self._ready.is_set():
                self._start_next()

    def cancel(self, job_id: str, attempt: int) -> bool:
        """Drop a queued job, or kill the process running it. True if it was here."""
        with self._lock:
            for job in self.queue:
                if job.job_id == job_id and job.attempt == attempt:
                    self.queue.remove(job)
                    return True
            running = self.running
            if running is None or (running.job_id, running.attempt) != (job_id, attempt):
                return False
            self.running = None
            self._abandon_running()
            return True

    def _failure(self, job: SliceJob, code: FailureCode, message: str) -> JobResult:
        outcome = Outcome.failed(code, message)
        return JobResult(job.job_id, job.attempt, outcome, device_id=self.device.device_id)

    def check_deadline(self, now: float) -> JobResult | None:
        """Kill a job past its timeout; return its failure answer."""
        with self._lock:
            job = self.running
            if job is None or not job.timeout_s or now - job.started_at < job.timeout_s:
                return None
            self.running = None
            self._abandon_running()
        message = (
            f"the job ran longer than its timeout of {job.timeout_s:g}s on"
            f" {self.device.device_id} and was stopped; raise timeout_s if it needs longer"
        )
        return self._failure(job, FailureCode.JOB_TIMEOUT, message)

    def stop_over_memory(self, job_id: str, attempt: int, message: str) -> JobResult | None:
        """Kill the job if it still runs here (it went over its memory share): its
        failure answer, or None when it had finished meanwhile."""
        with self._lock:
            job = self.running
            if job is None or (job.job_id, job.attempt) != (job_id, attempt):
                return None
            self.running = None
            self._abandon_running()
        return self._failure(job, FailureCode.MEMORY_EXCEEDED, message)

    def in_flight(self) -> list[tuple[str, int]]:
        with self._lock:
            jobs = list(self.queue) + ([self.running] if self.running else [])
        return [(j.job_id, j.attempt) for j in jobs]

    @property
    def busy(self) -> bool:
        return self.running is not None

    # -------------------------------------------------------------- internals

    def _start_next(self) -> None:
        """Hand the next queued job over. Caller holds the lock."""
        while self.queue and self.running is None and not self._closed:
            job = self.queue.popleft()
            job.started_at = time.time()
            if not self._dispatch(job):
                self.queue.appendleft(job)
                return
            self.running = job

    def _finish(self, answer: JobResult, warm: tuple[str, ...]) -> None:
        """Deliver the running job's answer and start the next one."""
        with self._lock:
            current = self.running
            if current is None or (current.job_id, current.attempt) != (
                answer.job_id,
                answer.attempt,
            ):
                return  # cancelled or timed out while it ran: the late answer is dropped
            self.running = None
            self.warm = warm
        self.on_answer(answer)
        with self._lock:
            self._start_next()


def _request(job: SliceJob) -> dict[str, object]:
    return {
        "job_id": job.job_id,
        "attempt": job.attempt,
        "digest": job.digest,
        "artifact_path": job.artifact_path,
        "memory_limit": job.memory_limit_bytes,
    }


class SliceWorker(_Slice):
    """A process running jobs for slice ``slice_index`` of ``device``.

    ``direct_host``: the process also serves calls under leases itself, on a port of that
    host (see ``_worker_main``); ``direct_address`` says where once it is ready. Runs it
    reports go to ``on_leased_run``. ``direct_tls``: (certificate file, key file) of the
    node, to serve those calls over TLS. ``cgroup``: the process's own cgroup, which caps
    its memory and CPU on top of its rlimits (``_cgroups``; host-memory slices only).
    """

    def __init__(
        self,
        *args,
        direct_host: str = "",
        direct_tls: tuple[str, str] | None = None,
        on_leased_run: Callable[[dict], None] | None = None,
        cgroup: WorkerCgroup | None = None,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.cgroup = cgroup
        #: What the process was started with for its jobs' compute shares (``job_environment``).
        self._job_env: dict[str, str] = {}
        self.direct_host = direct_host
        self.direct_tls = direct_tls
        self.direct_address = ""
        self.on_leased_run = on_leased_run
        self._leases: dict[str, dict] = {}  # passed to every process this slice starts
        self._generation = 0
        self._spawn()

    def grant(self, lease: dict) -> None:
        """Let the process take direct calls under ``lease`` (id, digest, path, node)."""
        with self._lock:
            self._leases[lease["lease_id"]] = lease
            if self._ready.is_set():
                self._control({"lease": lease})

    def revoke(self, lease_id: str) -> None:
        with self._lock:
            if self._leases.pop(lease_id, None) is not None and self._ready.is_set():
                self._control({"revoke": lease_id})

    def _control(self, frame: dict) -> None:
        try:
            write_frame(self._write_fd, frame)
        except OSError:
            pass  # the process died; its successor gets the leases when ready

    def _dispatch(self, job: SliceJob) -> bool:
        wanted = job_environment(self.device, job.compute_milli)
        if wanted and wanted != self._job_env:
            # The share is read when the process makes its context: a fresh process takes
            # the job once ready (its queue waits for it, as after a crash).
            log.info(
                "worker for %s seat %d restarts with %s for job %s's compute share",
                self.device.device_id,
                self.slice_index,
                " ".join(f"{k}={v}" for k, v in sorted(wanted.items())),
                job.job_id,
            )
            self._job_env = wanted
            self._restart()
            return False
        if job.memory_limit_bytes and self.cgroup is not None:
            self._cgroup_step("cap", self.cgroup.limit_memory_above_current, job.memory_limit_bytes)
        try:
            write_frame(self._write_fd, _request(job), job.inputs)
        except OSError:
            return False  # the process died; the reader thread restarts it
        return True

    def _abandon_running(self) -> None:
        self._restart()

    def close(self) -> None:
        super().close()
        self._kill()
        if self.cgroup is not None:
            self.cgroup.remove()

    def _cgroup_step(self, what: str, step: Callable[..., object], *args: object) -> None:
        """One write to the worker's cgroup; a refusal leaves the rlimits as its cap."""
        assert self.cgroup is not None
        try:
            step(*args)
        except OSError as error:
            log.warning(
                "worker for %s slice %d: cgroup %s refused (%s); its jobs are capped by"
                " RLIMIT_DATA only",
                self.device.device_id,
                self.slice_index,
                what,
                error,
            )
            self.cgroup = None

    def _spawn(self) -> None:
        to_worker_r, to_worker_w = os.pipe()
        from_worker_r, from_worker_w = os.pipe()
        env = dict(os.environ)
        env.update(slice_environment(self.device, self.slice_index))
        env.update(self._job_env)
        device_json = json.dumps(dataclasses.asdict(self.device))
        self.direct_address = ""
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "anypu.agents._worker_main",
                str(to_worker_r),
                str(from_worker_w),
                device_json,
            ]
            + ([self.direct_host] if self.direct_host else [])
            + (list(self.direct_tls) if self.direct_host and self.direct_tls else []),
            pass_fds=(to_worker_r, from_worker_w),
            env=env,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group, killed as a whole
        )
        os.close(to_worker_r)
        os.close(from_worker_w)
        if self.cgroup is not None:
            self._cgroup_step("join", self.cgroup.add, self.process.pid)
        if self.cgroup is not None:
            self._cgroup_step("cpu.max", self.cgroup.limit_cpu, self.device.threads)
        self._write_fd, self._read_fd = to_worker_w, from_worker_r
        self._ready = threading.Event()
        self._generation += 1
        threading.Thread(
            target=self._read_loop,
            args=(self._read_fd, self._generation),
            name=f"anypu-worker-{self.device.device_id}.{self.slice_index}",
            daemon=True,
        ).start()

    @property
    def pid(self) -> int | None:
        process = getattr(self, "process", None)
        return process.pid if process is not None and process.poll() is None else None

    def _kill(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            os.close(self._write_fd)
        except OSError:
            pass
        self.process.wait(timeout=5)

    def _restart(self) -> None:
        """Replace the process (caller holds the lock); queued jobs wait for the new one."""
        self._kill()
        if not self._closed:
            self._spawn()

    def _read_loop(self, fd: int, generation: int) -> None:
        try:
            while True:
                header, payload = read_frame(fd)
                if header.get("ready"):
                    if self.cgroup is not None and not self.device.shared:
                        # A fixed slice owns its memory above what the worker holds now.
                        memory = self.device.slice_memory_bytes
                        self._cgroup_step("cap", self.cgroup.limit_memory_above_current, memory)
                    with self._lock:
                        self.direct_address = header.get("direct_address", "")
                        for lease in self._leases.values():
                            self._control({"lease": lease})
                        self._ready.set()
                        self._start_next()
                    continue
                if "leased_runs" in header:
                    self.warm = tuple(header.get("warm", ()))
                    if self.on_leased_run is not None:
                        for run in header["leased_runs"]:
                            self.on_leased_run(run)
                    continue
                answer = result_from_frame(header, payload, device_id=self.device.device_id)
                assert answer is not None  # the agent's own worker never loses a lease
                self._finish(answer, tuple(header.get("warm", ())))
        except (EOFError, OSError, ValueError):
            pass
        finally:
            try:
                os.close(fd)
            except OSError:
                pass
        self._died(generation)

    def _died(self, generation: int) -> None:
        """The process exited on its own (crash, OOM kill): fail its job, start another."""
        with self._lock:
            if self._closed or generation != self._generation:
                return  # we killed it on purpose and already replaced it
            job, self.running = self.running, None
            self._kill()
            code = self.process.returncode
            over = self.cgroup is not None and self.cgroup.killed_for_memory()
            cap = self.cgroup.memory_max() if self.cgroup is not None else 0
            peak = self.cgroup.peak() if self.cgroup is not None else 0
            self._spawn()
        if over and job is not None:
            share = job.memory_limit_bytes or self.device.slice_memory_bytes
            message = (
                f"went over its {format_bytes(share)} share on {self.device.device_id}"
                f" ({'seat' if self.device.shared else 'slice'} {self.slice_index}): the"
                f" kernel stopped it at its cgroup's memory.max ({format_bytes(cap)} with"
                " what the worker held before), so the device's other jobs keep theirs"
            )
            log.warning("job %s attempt %d %s", job.job_id, job.attempt, message)
            failure = self._failure(job, FailureCode.MEMORY_EXCEEDED, message)
            outcome = dataclasses.replace(failure.outcome, memory_used_bytes=peak)
            self.on_answer(dataclasses.replace(failure, outcome=outcome))
            return
        log.warning("worker for %s slice %d died", self.device.device_id, self.slice_index)
        if job is not None:
            message = f"the worker process died while running the job (exit {code})"
            self.on_answer(self._failure(job, FailureCode.WORKER_DIED, message))


_caller = threading.local()


@contextmanager
def run_dispatched_here() -> Iterator[None]:
    """Jobs a thread slice is handed inside the block run in this thread when it ends."""
    if getattr(_caller, "deferred", None) is not None:  # nested: the outer block runs them
        yield
        return
    deferred: list[tuple[ThreadSliceWorker, SliceJob]] = []
    _caller.deferred = deferred
    try:
        yield
    finally:
        _caller.deferred = None
        for i, (worker, job) in enumerate(deferred):
            try:
                worker._execute(job)
            except BaseException:
                for other, rest in deferred[i + 1 :]:
                    other._inbox.put(rest)  # dispatched already: their own threads run them
                raise


class ThreadSliceWorker(_Slice):
    """A thread in this process running jobs for one slice (the embedded mode)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        from anypu.devices import worker_torch_device

        self._inbox: queue.SimpleQueue[SliceJob | None] = queue.SimpleQueue()
        self._executing = threading.Lock()
        self._runner = ModelRunner(worker_torch_device(self.device), device=self.device)
        threading.Thread(
            target=self._serve,
            name=f"anypu-worker-{self.device.device_id}.{self.slice_index}",
            daemon=True,
        ).start()
        self._ready.set()

    def _dispatch(self, job: SliceJob) -> bool:
        deferred = getattr(_caller, "deferred", None)
        if deferred is not None:
            deferred.append((self, job))  # see run_dispatched_here
        else:
            self._inbox.put(job)
        return True

    def _abandon_running(self) -> None:
        pass  # a thread cannot be killed: its late answer is dropped by _finish

    def close(self) -> None:
        super().close()
        self._inbox.put(None)

    def _serve(self) -> None:
        import torch

        # A new thread starts with OpenMP's default team size whatever torch was told in
        # the main thread; on a busy 2-core machine that made a 0.2 ms forward take 16–24 ms.
        # Re-apply the process's setting here (the user's process: we do not change it).
        torch.set_num_threads(torch.get_num_threads())
        while (job := self._inbox.get()) is not None:
            self._execute(job)

    def _execute(self, job: SliceJob) -> None:
        # One model run at a time per slice even after a timeout gave the slice up: the
        # next job waits for the overrunning one, in whichever thread it runs.
        with self._executing:
            outcome, outputs = self._runner.execute(
                job.digest, job.artifact_path, job.inputs, job.args
            )
        direct = job.args is not None  # the tensors themselves, for a caller in this process
        answer = JobResult(
            job.job_id,
            job.attempt,
            outcome,
            b"" if direct else outputs,
            device_id=self.device.device_id,
            value=outputs if direct and outcome.ok else None,
        )
        self._finish(answer, tuple(self._runner.warm))
