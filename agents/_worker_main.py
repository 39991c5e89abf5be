"""The worker process for one device slice: load models once, run many.

Started by the agent as ``python -m anypu.agents._worker_main IN_FD OUT_FD DEVICE_JSON``
with the slice's environment (visible devices, thread counts) already set, so torch is
imported only after the limits are in place. Requests and answers are frames
(``_wire``); models are cached by artifact digest, so loading is separate from inference
and measured apart.
"""

from __future__ import annotations

import json
import os
import sys

from anypu.agents._wire import read_frame, write_frame


def _serve(in_fd: int, out_fd: int, device_json: str) -> None:
    import torch  # noqa: F401  (after the environment is set)
    from anypu.agents._runner import ModelRunner
    from anypu.devices import Device, apply_slice_limits, worker_torch_device

    device = Device(**json.loads(device_json))
    apply_slice_limits(device)
    # A CPU slice (or a simulated device, which runs on the CPU) owns its share of memory;
    # a real accelerator's memory is capped by apply_slice_limits instead.
    host_memory = device.kind == "cpu" or device.simulated
    runner = ModelRunner(
        worker_torch_device(device),
        memory_limit_bytes=device.slice_memory_bytes if host_memory else 0,
        where=f"{device.device_id} slice {os.environ.get('ANYPU_SLICE_INDEX', '0')}",
    )
    write_frame(out_fd, {"ready": True, "pid": os.getpid()})
    while True:
        try:
            request, payload = read_frame(in_fd)
        except EOFError:
            return
        answer, outputs = runner.execute(request, payload)
        answer["warm"] = runner.warm
        write_frame(out_fd, answer, outputs)


def main() -> None:
    in_fd, out_fd, device_json = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    # The user's model may print: keep stdout for it, but route it to stderr so it never
    # mixes with anything the agent parses.
    os.dup2(2, 1)
    _serve(in_fd, out_fd, device_json)


if __name__ == "__main__":
    main()
