"""Run one job's request against a warm model cache: shared by process and thread workers.

Loading (artifact bytes → module) is separate from inference and timed apart; modules
stay loaded by artifact digest, least recently used out first.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import resource
import time
import traceback
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from anypu.agents._operators import graph_operators, lacking_operators
from anypu.devices import Device
from anypu.protos.messages import FailureCode, Outcome

__all__ = ["ModelRunner"]

_PAGE = os.sysconf("SC_PAGE_SIZE")


class ModelRunner:
    """Executes jobs for one slice.

    ``memory_limit_bytes`` (process workers only) caps what a job may allocate beyond
    what the worker already holds: the kernel refuses the allocation (RLIMIT_DATA), so a
    runaway job fails at once with an error naming the reservation instead of taking the
    machine's memory.
    """

    def __init__(
        self,
        torch_device: str,
        max_warm: int = 8,
        memory_limit_bytes: int = 0,
        where: str = "",
        device: Device | None = None,
    ) -> None:
        self.torch_device = torch_device
        self.max_warm = max_warm
        self.memory_limit_bytes = memory_limit_bytes
        self.where = where or torch_device
        #: The device this runner serves: whose backend a model's operators are checked
        #: against before it first runs (``_operators``); None checks nothing.
        self.device = device
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
        program = getattr(module, "program", None)
        if self.device is not None and program is not None:
            lacking = lacking_operators(graph_operators(program), self.device, self.torch_device)
            if lacking:
                raise BackendLacksOperators(lacking)
        self.models[digest] = module
        while len(self.models) > self.max_warm:
            self.models.popitem(last=False)
        return module, time.perf_counter() - started

    def execute(
        self,
        digest: str,
        artifact_path: str,
        payload: bytes,
        args: tuple[Any, ...] | None = None,
        memory_limit_bytes: int = 0,
        host_memory: bool = True,
    ) -> tuple[Outcome, Any]:
        """Run the model ``digest`` (loaded from ``artifact_path`` unless warm) on ``payload``.

        Returns the outcome and the encoded outputs. A failure inside the model is the
        submitter's (``MODEL_RAISED``); one before it runs is the node's, unless the
        artifact itself was refused; the runner keeps serving either way. ``args``: the
        inputs themselves (a call from this process): nothing is decoded, and the outputs
        come back as tensors, not encoded. ``memory_limit_bytes``: this job's reservation
        on a shared device, in place of the runner's own limit; the data limit applies it
        where the job's memory is host memory (``host_memory``), else the vendor's cap
        does and it is only named when the job runs out.
        """
        from anypu import _codec
        from anypu.agents._artifact import ArtifactError, _first_line, run_model

        load_seconds, code = 0.0, FailureCode.LOAD_FAILED
        limit = memory_limit_bytes or self.memory_limit_bytes
        try:
            module, load_seconds = self._module(digest, artifact_path)
            code = FailureCode.INPUTS_UNREADABLE
            inputs = _codec.decode(payload) if args is None else args
            if not isinstance(inputs, tuple):
                inputs = (inputs,)
            code = FailureCode.MODEL_RAISED
            with _data_limit(limit if host_memory else 0):
                result, run_seconds = run_model(module, inputs, self.torch_device)
                if args is None:
                    outputs = _codec.encode(result, "outputs")
                else:
                    # Out of inference mode, as the codec's copies would be: a caller may
                    # change them in place, which an inference tensor refuses.
                    outputs = _codec.map_tensors(result, lambda t: t.clone())
        except BackendLacksOperators as lacking:  # found before the model ran
            message = (
                f"{self.where} ({self.torch_device}) lacks operator(s) the model needs:"
                f" {', '.join(lacking.operators)} (its backend has no kernel for them;"
                " found before running)"
            )
            outcome = Outcome.failed(
                FailureCode.OPERATOR_UNSUPPORTED, message, error_type="BackendLacksOperators"
            )
            return outcome, b""
        except Exception as error:  # the model's own failure: report it, keep serving
            if _out_of_memory(error):
                message = (
                    f"the job ran out of memory on {self.where}: its reservation is "
                    f"{_gib(limit)}; reduce the batch or ask for a "
                    f"larger device ({_first_line(error)[:200]})"
                )
                oom = Outcome.failed(FailureCode.OUT_OF_MEMORY, message, load_seconds=load_seconds)
                # It needed more than its share (how much more, the refusal does not say).
                return dataclasses.replace(oom, memory_used_bytes=limit), b""
            missing = missing_operator(error)
            if missing is not None:
                message = (
                    f"{self.where} ({self.torch_device}) lacks an operator the model needs:"
                    f" {missing} ({_first_line(error)[:200]})"
                )
                return (
                    Outcome.failed(
                        FailureCode.OPERATOR_UNSUPPORTED,
                        message,
                        error_type=type(error).__name__,
                        load_seconds=load_seconds,
                    ),
                    b"",
                )
            if isinstance(error, ArtifactError):
                # A refused artifact (unsafe or malformed; its digest was verified on fetch)
                # is the submitter's doing, like the model raising: not the node's fault.
                code = FailureCode.ARTIFACT_REFUSED
            failure = Outcome.failed(
                code,
                str(error) or repr(error),
                error_type=type(error).__name__,
                traceback=traceback.format_exc(limit=20),
                load_seconds=load_seconds,
            )
            return failure, b""
        return Outcome(load_seconds=load_seconds, run_seconds=run_seconds), outputs


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


#: How backends say an operator is missing, each with the operator's name in group 1:
#: PyTorch's dispatcher ("Could not run 'aten::x' with arguments from the 'PrivateUse1'
#: backend"), a kernel without a dtype ('"addmm_impl_cpu_" not implemented for 'Half''),
#: MPS ("The operator 'aten::x' is not currently implemented for the MPS device"), a
#: backend without a kernel where torch looks for one by name ("aten::x: attempted to run
#: this operator with Meta tensors, but there was no fake impl or Meta kernel registered").
_MISSING_OPERATOR = (
    re.compile(r"Could not run '([\w:.]+)' with arguments from the '[\w]+' backend"),
    re.compile(r"\"(\w+)\" not implemented for '\w+'"),
    re.compile(r"operator '([\w:.]+)' is not currently implemented for the \w+ device"),
    re.compile(r"([\w:.]+): attempted to run this operator with \w+ tensors, but there was no"),
)


class BackendLacksOperators(Exception):
    """A model's graph calls operators the runner's backend has no kernel for."""

    def __init__(self, operators: list[str]) -> None:
        super().__init__(", ".join(operators))
        self.operators = operators


def missing_operator(error: BaseException) -> str | None:
    """The operator a backend said it lacks, or None when the error is something else."""
    if not isinstance(error, (NotImplementedError, RuntimeError)):
        return None
    text = str(error)
    for pattern in _MISSING_OPERATOR:
        match = pattern.search(text)
        if match is not None:
            return match.group(1)
    return None


def _out_of_memory(error: BaseException) -> bool:
    if isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError":
        return True
    text = str(error)
    return "can't allocate memory" in text or "Cannot allocate memory" in text


_statm: tuple[int, int] | None = None  # (pid, fd of its /proc/self/statm), kept open


def _vm_data_bytes() -> int:
    """The data segment's size: what RLIMIT_DATA counts (plus the main stack's few pages).

    Read on every job, so from ``statm`` through one descriptor kept open (a pread
    regenerates it) rather than by parsing ``status`` anew (≈ 70 µs a call).
    """
    global _statm
    if _statm is None or _statm[0] != os.getpid():
        _statm = (os.getpid(), os.open("/proc/self/statm", os.O_RDONLY))
    fields = os.pread(_statm[1], 256, 0).split()
    return int(fields[5]) * _PAGE if len(fields) > 5 else 0


@contextlib.contextmanager
def _data_limit(limit: int) -> Iterator[None]:
    """Let this process allocate at most ``limit`` more bytes while the block runs."""
    if limit <= 0:
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    cap = _vm_data_bytes() + limit
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))
