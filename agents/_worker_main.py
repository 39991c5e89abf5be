"""The worker process for one device slice: load models once, run many.

Started by the agent as ``python -m anypu.agents._worker_main IN_FD OUT_FD DEVICE_JSON
[DIRECT_HOST [CERT_FILE KEY_FILE]]`` with the slice's environment (visible devices, thread counts) already set,
so torch is imported only after the limits are in place. Requests and answers are frames
(``anypu.comm``); models are cached by artifact digest, so loading is separate from inference
and measured apart.

With ``DIRECT_HOST`` the worker also takes direct calls on a port of its own, as frames
(``_direct.FrameServer``; over TLS with the node's certificate when given): calls under the leases the agent passes down (``{"lease": …}`` and
``{"revoke": id}`` frames) come straight from clients, take their turn with the agent's
jobs, and are reported up the pipe in batches (``{"leased_runs": […]}`` frames): one
frame per call would wake the agent once a call, on the same cores the calls need.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import threading
import time
from typing import Any

from anypu.comm import read_frame, result_to_frame, write_frame
from anypu.protos.messages import JobResult

__all__ = ["main"]

_REPORT_EVERY_S = 0.05
_REPORT_BATCH = 32


class _Leases:
    """The leases of this slice, and direct calls under them, one at a time with jobs."""

    def __init__(self, runner: Any, device_id: str, out_fd: int) -> None:
        self.runner = runner
        self.device_id = device_id
        self.out_fd = out_fd
        self.held: dict[str, dict[str, Any]] = {}
        self.run_lock = threading.Lock()  # one model run at a time on this slice
        self.write_lock = threading.Lock()  # frames up the pipe come from several threads
        self._threads = threading.local()
        self._runs: list[dict[str, Any]] = []
        self._warm: list[str] = []  # read under run_lock: the cache changes while a job runs
        self._reported_at = time.monotonic()

    def answer(self, header: dict[str, Any], payload: bytes = b"") -> None:
        with self.write_lock:
            write_frame(self.out_fd, header, payload)

    def report(self, force: bool = False) -> None:
        """Send the runs kept so far up the pipe, if enough or long enough (or ``force``)."""
        with self.write_lock:
            due = time.monotonic() - self._reported_at >= _REPORT_EVERY_S
            if not self._runs or not (force or due or len(self._runs) >= _REPORT_BATCH):
                return
            runs, self._runs = self._runs, []
            self._reported_at = time.monotonic()
            write_frame(self.out_fd, {"leased_runs": runs, "warm": self._warm})

    def report_while_alive(self) -> None:
        while True:  # a daemon thread: the tail of a burst is not kept waiting
            time.sleep(_REPORT_EVERY_S)
            try:
                self.report()
            except OSError:
                return  # the agent is gone

    def run(self, lease_id: str, inputs: bytes) -> tuple[Any, str]:
        """A direct call: DirectService's ``run_leased``."""
        import torch

        lease = self.held.get(lease_id)
        if lease is None:
            return None, ""
        if not getattr(self._threads, "ready", False):
            # A new thread has OpenMP's default team size, not the slice's: re-apply it.
            torch.set_num_threads(torch.get_num_threads())
            self._threads.ready = True
        job_id = "job-" + secrets.token_hex(6)
        started = time.time()
        with self.run_lock:
            outcome, outputs = self.runner.execute(lease["digest"], lease["artifact_path"], inputs)
            self._warm = self.runner.warm
        run = {"lease_id": lease_id, "job_id": job_id, "started_at": started}
        run |= {"finished_at": time.time()} | outcome.fields()
        with self.write_lock:
            self._runs.append(run)
        self.report()
        return JobResult(job_id, 1, outcome, outputs, lease["node_id"], self.device_id), ""


def _serve(
    in_fd: int,
    out_fd: int,
    device_json: str,
    direct_host: str = "",
    direct_tls: tuple[str, str] | None = None,
) -> None:
    import torch  # noqa: F401  (after the environment is set)

    from anypu.agents._runner import ModelRunner
    from anypu.devices import Device, apply_job_limit, apply_slice_limits, worker_torch_device

    device = Device(**json.loads(device_json))
    apply_slice_limits(device)
    # A CPU slice (or a simulated device, which runs on the CPU) owns its share of memory;
    # a real accelerator's memory is capped by apply_slice_limits instead.
    host_memory = device.holds_host_memory
    runner = ModelRunner(
        worker_torch_device(device),
        memory_limit_bytes=device.slice_memory_bytes if host_memory else 0,
        where=f"{device.device_id} slice {os.environ.get('ANYPU_SLICE_INDEX', '0')}",
        device=device,
    )
    leases = _Leases(runner, device.device_id, out_fd)
    server = None
    if direct_host:
        from anypu.agents._direct import FrameServer

        server = FrameServer(leases.run, direct_host, direct_tls)
        threading.Thread(target=leases.report_while_alive, daemon=True).start()
    address = server.address if server is not None else ""
    leases.answer({"ready": True, "pid": os.getpid(), "direct_address": address})
    try:
        while True:
            try:
                request, payload = read_frame(in_fd)
            except EOFError:
                return
            if "lease" in request:
                leases.held[request["lease"]["lease_id"]] = request["lease"]
                continue
            if "revoke" in request:
                leases.held.pop(request["revoke"], None)
                leases.report(force=True)
                continue
            limit = int(request.get("memory_limit", 0))
            with leases.run_lock:
                if limit and not host_memory:
                    apply_job_limit(device, limit)  # the vendor's allocator cap, per job
                outcome, outputs = runner.execute(
                    request["digest"],
                    request["artifact_path"],
                    payload,
                    memory_limit_bytes=limit,
                    host_memory=host_memory,
                )
                warm = runner.warm
            result = JobResult(request["job_id"], request["attempt"], outcome, outputs)
            header, outputs = result_to_frame(result)
            leases.answer(header | {"warm": warm}, outputs)
    finally:
        if server is not None:
            server.stop()


def main() -> None:
    in_fd, out_fd, device_json = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    direct_host = sys.argv[4] if len(sys.argv) > 4 else ""
    direct_tls = (sys.argv[5], sys.argv[6]) if len(sys.argv) > 6 else None  # cert, key files
    # The user's model may print: keep stdout for it, but route it to stderr so it never
    # mixes with anything the agent parses.
    os.dup2(2, 1)
    _serve(in_fd, out_fd, device_json, direct_host, direct_tls)


if __name__ == "__main__":
    main()
