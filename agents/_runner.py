"""Run one job's request against a warm model cache: shared by process and thread workers.

Loading (artifact bytes → module) is separate from inference and timed apart; modules
stay loaded by artifact digest, least recently used out first.
"""

from __future__ import annotations

import time
import traceback
from collections import OrderedDict
from typing import Any

__all__ = ["ModelRunner"]


class ModelRunner:
    def __init__(self, torch_device: str, max_warm: int = 8) -> None:
        self.torch_device = torch_device
        self.max_warm = max_warm
        self.models: OrderedDict[str, Any] = OrderedDict()

    @property
    def warm(self) -> list[str]:
        return list(self.models)

    def _module(self, digest: str, artifact_path: str) -> tuple[Any, float]:
        from anypu.agents._artifact import load_artifact

        module = self.models.get(digest)
        if module is not None:
            self.models.move_to_end(digest)
            return module, 0.0
        started = time.perf_counter()
        with open(artifact_path, "rb") as artifact:
            module = load_artifact(artifact.read(), self.torch_device)
        self.models[digest] = module
        while len(self.models) > self.max_warm:
            self.models.popitem(last=False)
        return module, time.perf_counter() - started

    def execute(self, request: dict[str, Any], payload: bytes) -> tuple[dict[str, Any], bytes]:
        """Answer ``request`` (job_id, attempt, digest, artifact_path) for ``payload`` inputs.

        Returns the answer's header (the fields of a JobResult) and the encoded outputs.
        A failure inside the model is reported as a user error; the runner keeps serving.
        """
        from anypu.agents._artifact import run_model

        from anypu import _codec

        answer: dict[str, Any] = {"job_id": request["job_id"], "attempt": request["attempt"]}
        load_seconds, stage = 0.0, "load"
        try:
            module, load_seconds = self._module(request["digest"], request["artifact_path"])
            stage = "inputs"
            inputs = _codec.decode(payload)
            if not isinstance(inputs, tuple):
                inputs = (inputs,)
            stage = "run"
            result, run_seconds = run_model(module, inputs, self.torch_device)
            stage = "outputs"
            outputs = _codec.encode(result, "outputs")
        except Exception as error:  # the model's own failure: report it, keep serving
            answer.update(
                ok=False,
                error_type=type(error).__name__,
                error_message=str(error) or repr(error),
                error_traceback=traceback.format_exc(limit=20),
                user_error=stage in ("run", "outputs"),
                load_seconds=load_seconds,
            )
            return answer, b""
        answer.update(ok=True, load_seconds=load_seconds, run_seconds=run_seconds)
        return answer, outputs
