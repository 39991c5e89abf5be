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
import time
import traceback
from collections import OrderedDict
from typing import Any

from anypu.agents._wire import read_frame, write_frame

_MAX_WARM = 8  # models kept loaded per worker


def _serve(in_fd: int, out_fd: int, device_json: str) -> None:
    import torch  # noqa: F401  (after the environment is set)
    from anypu.agents._artifact import load_artifact, run_model
    from anypu.devices import Device, apply_slice_limits, worker_torch_device

    from anypu import _codec

    device = Device(**json.loads(device_json))
    apply_slice_limits(device)
    torch_device = worker_torch_device(device)
    models: OrderedDict[str, Any] = OrderedDict()
    write_frame(out_fd, {"ready": True, "pid": os.getpid()})
    while True:
        try:
            request, payload = read_frame(in_fd)
        except EOFError:
            return
        digest = request["digest"]
        answer: dict[str, Any] = {"job_id": request["job_id"], "attempt": request["attempt"]}
        outputs = b""
        load_seconds = 0.0
        stage = "load"
        try:
            module = models.get(digest)
            if module is None:
                started = time.perf_counter()
                with open(request["artifact_path"], "rb") as artifact:
                    module = load_artifact(artifact.read())
                load_seconds = time.perf_counter() - started
                models[digest] = module
                while len(models) > _MAX_WARM:
                    models.popitem(last=False)
            else:
                models.move_to_end(digest)
            stage = "inputs"
            inputs = _codec.decode(payload)
            if not isinstance(inputs, tuple):
                inputs = (inputs,)
            stage = "run"
            result, run_seconds = run_model(module, inputs, torch_device)
            stage = "outputs"
            outputs = _codec.encode(result)
            answer.update(ok=True, load_seconds=load_seconds, run_seconds=run_seconds)
        except Exception as error:  # the model's own failure: report it, keep serving
            answer.update(
                ok=False,
                error_type=type(error).__name__,
                error_message=str(error) or repr(error),
                error_traceback=traceback.format_exc(limit=20),
                user_error=stage in ("run", "outputs"),
                load_seconds=load_seconds,
            )
        answer["warm"] = list(models)
        write_frame(out_fd, answer, outputs)


def main() -> None:
    in_fd, out_fd, device_json = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    # The user's model may print: keep stdout for it, but route it to stderr so it never
    # mixes with anything the agent parses.
    os.dup2(2, 1)
    _serve(in_fd, out_fd, device_json)


if __name__ == "__main__":
    main()
