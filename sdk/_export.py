"""Turn a user's ``nn.Module`` into a portable, pickle-free artifact, once per version.

``export_model`` tries ``torch.export`` (non-strict: it runs ``forward`` as Python over
fake tensors, which accepts far more user code than the bytecode-tracing strict mode),
then TorchScript: ``torch.jit.script`` (keeps control flow), then ``torch.jit.trace``
(refused when torch warns that the trace may be wrong, e.g. a Python ``if`` on a tensor).
A TorchScript result must reproduce the eager outputs on the example inputs. When every
route fails, ``ExportError`` names the construct and how to change it. Arbitrary pickled
models are not supported at all.

``ModelCache`` makes a warm ``sdk.run`` free of exports: its key is the model's identity,
the input signature and each parameter's ``(data_ptr, _version)``, which changes on any
in-place update or reassignment of weights without hashing them.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import threading
import traceback
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from anypu._codec import Tree, pack_envelope, signature, validate
from anypu.agents import check_export_archive, graph_operators
from anypu.devices import DEVICE_KINDS
from anypu.errors import ExportError, InputError

__all__ = [
    "Artifact",
    "ModelCache",
    "call_args",
    "export_model",
    "model_raised",
    "quiet_torch",
    "via_export",
]

# torch device types as the scheduler's device kinds (ROCm builds also say "cuda").
_KIND_OF_TORCH_TYPE = {
    "cpu": "cpu",
    "cuda": "gpu",
    "npu": "npu",
    "xla": "tpu",
    "xpu": "xpu",
    "mps": "mps",
}
_TORCH_DIR = os.path.dirname(torch.__file__)
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Artifact:
    """An exported model: ``data`` is the enveloped payload, ``digest`` its sha256 hex."""

    digest: str
    data: bytes
    format: str
    device_kinds: frozenset[str]
    #: The operators the exported graph calls (``aten::linear``…); empty for TorchScript.
    operators: frozenset[str] = frozenset()

    @classmethod
    def build(
        cls,
        fmt: str,
        device_kinds: frozenset[str],
        payload: bytes,
        operators: frozenset[str] = frozenset(),
    ) -> Artifact:
        header = {"format": fmt, "device_kinds": sorted(device_kinds), "torch": torch.__version__}
        data = pack_envelope(header, payload)
        return cls(hashlib.sha256(data).hexdigest(), data, fmt, device_kinds, operators)

    @property
    def nbytes(self) -> int:
        return len(self.data)


#: torch's loggers that print a fake-tensor or export traceback of their own (at ERROR)
#: for a failure anypu handles: a failed route is tried another way, or explained.
_NOISY_TORCH_LOGGERS = (
    "torch",
    "torch._subclasses.fake_tensor",
    "torch.fx.experimental.symbolic_shapes",
    "torch._export",
    "torch.export",
    "torch._dynamo",
)


@contextmanager
def quiet_torch() -> Iterator[None]:
    """Keep torch's own tracebacks of handled failures off the user's stderr."""
    loggers = [logging.getLogger(name) for name in _NOISY_TORCH_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    # torch.export also prints a failed trace's partial graph straight to sys.stderr.
    printed = io.StringIO()
    try:
        with contextlib.redirect_stderr(printed):
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
        if printed.getvalue().strip():
            _log.debug("torch printed while anypu handled a failure:\n%s", printed.getvalue())


def model_raised(model: torch.nn.Module, args: tuple[Any, ...], error: BaseException) -> InputError:
    """The user's error when ``model(*args)`` raises on its own inputs, said as such."""
    shapes = ", ".join(
        f"{tuple(a.shape)} {str(a.dtype).removeprefix('torch.')}"
        if isinstance(a, torch.Tensor)
        else type(a).__name__
        for a in args
    )
    first = str(error).strip().splitlines()[0][:300] if str(error).strip() else ""
    return InputError(
        f"{type(model).__name__} raised {type(error).__name__} on its inputs ({shapes}):"
        f" {first} — check the inputs' number, shapes and dtypes against forward"
    )


def export_model(model: torch.nn.Module, example_inputs: tuple[Any, ...]) -> Artifact:
    """Export ``model`` called as ``model(*example_inputs)``; see the module docstring."""
    args = call_args(model, example_inputs)
    failures: list[tuple[str, BaseException]] = []
    try:
        with quiet_torch():
            artifact, operators = via_export(model, args)
        return Artifact.build("torch.export", frozenset(DEVICE_KINDS), artifact, operators)
    except Exception as exc:
        failures.append(("torch.export", exc))
    for route, build in (("torch.jit.script", _script), ("torch.jit.trace", _trace)):
        try:
            scripted = build(model, args)
            _check_reproduces(scripted, model, args, route)
            buffer = io.BytesIO()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                torch.jit.save(scripted, buffer)
            return Artifact.build("torchscript", _script_device_kinds(scripted), buffer.getvalue())
        except Exception as exc:
            failures.append((route, exc))
    # Every route failed: first, does the model run at all on these inputs? A wrong
    # shape, too many arguments or an exception of its own is the user's error.
    try:
        with torch.no_grad():
            model(*args)
    except Exception as exc:
        raise model_raised(model, args, exc) from exc
    raise ExportError(_explain(model, failures))


def call_args(model: Any, example_inputs: Any) -> tuple[Any, ...]:
    """Check ``model`` and normalise ``inputs`` to forward's positional arguments.

    The one place that does so: the SDK, export and estimation all call it.
    """
    if not isinstance(model, torch.nn.Module):
        raise InputError(
            f"model must be a torch.nn.Module, got {type(model).__name__} — "
            "wrap the function in a module whose forward calls it"
        )
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    if not isinstance(example_inputs, (tuple, list)):
        raise InputError(
            f"inputs must be a torch.Tensor or a tuple of forward's positional tensors, got "
            f"{type(example_inputs).__name__} — pass (x,) for a single argument"
        )
    for index, value in enumerate(example_inputs):
        if not isinstance(value, (torch.Tensor, tuple, list, dict)):
            raise InputError(
                f"inputs[{index}] is a {type(value).__name__}, not a torch.Tensor: pass tensors"
                " (convert with torch.tensor(...)), or tuples/lists/dicts of them"
            )
    args = tuple(example_inputs)
    validate(args, "inputs")
    return args


def via_export(model: torch.nn.Module, args: tuple[Any, ...]) -> tuple[bytes, frozenset[str]]:
    """The saved program, and the operators its graph calls."""
    program = torch.export.export(model, args, strict=False)
    operators = frozenset(graph_operators(program))
    # Sample inputs are saved pickled; the agent refuses any pickle, and they are not needed.
    program.example_inputs = None
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    payload = buffer.getvalue()
    check_export_archive(payload)
    return payload, operators


def _script(model: torch.nn.Module, args: tuple[Any, ...]) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.script(model)


def _trace(model: torch.nn.Module, args: tuple[Any, ...]) -> torch.jit.ScriptModule:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # torch leaves jit.trace unannotated; given a module it returns a ScriptModule.
        traced: torch.jit.ScriptModule = torch.jit.trace(  # type: ignore[no-untyped-call]
            model, args, check_trace=False, strict=False
        )
    for warning in caught:
        if issubclass(warning.category, torch.jit.TracerWarning):
            raise ExportError(f"the trace may be wrong: {warning.message}")
    return traced


def _check_reproduces(
    scripted: torch.jit.ScriptModule, model: torch.nn.Module, args: tuple[Any, ...], route: str
) -> None:
    with torch.no_grad():
        expected = model(*args)
        got = scripted(*args)
    validate(got, "outputs")
    try:
        torch.testing.assert_close(got, expected, equal_nan=True)
    except (AssertionError, TypeError, ValueError) as exc:
        raise ExportError(f"{route} output differs from the model's: {exc}") from None


def _script_device_kinds(scripted: torch.jit.ScriptModule) -> frozenset[str]:
    """Kinds the TorchScript graph can run on: all, unless it hard-codes a device."""
    found: set[str] = set()
    for method in ("forward",):
        graph = getattr(scripted, method).inlined_graph
        for node in graph.findAllNodes("prim::Constant"):
            out = node.output()
            if out.type().kind() == "DeviceObjType":
                found.add(_KIND_OF_TORCH_TYPE.get(torch.device(out.toIValue()).type, "other"))
    return frozenset(found) if found else frozenset(DEVICE_KINDS)


# ----------------------------------------------------------------------------- errors

_CONSTRUCTS: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (
        ("data-dependent", "guardondatadependent", "converting a tensor to a python"),
        "data-dependent control flow (a Python if/int()/.item()/.tolist() on a tensor's value)",
        "keep values as tensors — use torch.where(...) or torch.cond(...) instead of if, and "
        "make shapes static (do not size or slice by a tensor's value)",
    ),
    (
        ("not a known type", "cannot infer type", "only tensors", "in output"),
        "a non-tensor output",
        "return tensors, or tuples/lists/dicts of tensors, from forward",
    ),
    (
        ("numpy", "not supported", "unsupported", "no fake impl", "not implemented"),
        "an unsupported operation",
        "use torch operations inside forward (no numpy or other libraries on tensor values); "
        "for a custom operator register a fake (meta) implementation",
    ),
)


def _explain(model: torch.nn.Module, failures: list[tuple[str, BaseException]]) -> str:
    texts = " ".join(f"{type(exc).__name__} {exc}" for _, exc in failures).lower()
    what, fix = "an unsupported construct", "simplify forward to plain tensor operations"
    for needles, construct, advice in _CONSTRUCTS:
        if any(needle in texts for needle in needles):
            what, fix = construct, advice
            break
    where = _user_frame(failures[0][1])
    lines = [f"cannot export {type(model).__name__}: {what}{where}."]
    lines += [f"  {route}: {_key_line(exc)}" for route, exc in failures]
    lines.append(f"How to fix: {fix}.")
    return "\n".join(lines)


def _user_frame(exc: BaseException) -> str:
    """`` at file:line (`source`)`` of the innermost frame of user code in the traceback."""
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if not f.filename.startswith((_TORCH_DIR, "<")) and f.filename != __file__
    ]
    if not frames:
        return ""
    frame = frames[-1]
    source = f" `{frame.line.strip()}`" if frame.line else ""
    return f" at {frame.filename}:{frame.lineno}{source}"


def _key_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    first = lines[0] if lines else ""
    return f"{type(exc).__name__}: {first if len(first) <= 200 else first[:197] + '...'}"


# ----------------------------------------------------------------------------- cache


def _weights_version(model: torch.nn.Module) -> tuple[int, ...]:
    """``(data_ptr, _version)`` of every parameter and buffer, flattened.

    Walks the ``_modules``/``_parameters``/``_buffers`` dicts directly: 4-5× cheaper than
    ``parameters()`` plus ``buffers()``, and it sees a reassigned weight or submodule.
    """
    out: list[int] = []
    seen: set[int] = set()
    stack = [model]
    while stack:
        module = stack.pop()
        if id(module) in seen:
            continue
        seen.add(id(module))
        for tensors in (module._parameters, module._buffers):
            for tensor in tensors.values():
                if tensor is not None:
                    out.append(tensor.data_ptr())
                    out.append(tensor._version)
        stack.extend(m for m in module._modules.values() if m is not None)
    return tuple(out)


class ModelCache:
    """Artifacts by (model, input signature, parameter version), in process.

    Entries of a model go when the model is garbage collected; each model keeps its
    ``per_model`` most recent versions, so a training loop does not grow the cache.
    """

    def __init__(self, per_model: int = 4) -> None:
        if per_model < 1:
            raise ValueError(f"per_model must be at least 1, got {per_model}")
        self._per_model = per_model
        self._entries: weakref.WeakKeyDictionary[torch.nn.Module, OrderedDict[Any, Artifact]]
        self._entries = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self._export_lock = threading.Lock()
        self._model_locks: weakref.WeakKeyDictionary[torch.nn.Module, threading.RLock]
        self._model_locks = weakref.WeakKeyDictionary()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(model: torch.nn.Module, inputs: Tree) -> Hashable:
        """What must stay equal for an artifact to be reused (cheap: no weight hashing)."""
        return (signature(inputs), model.training, _weights_version(model))

    def get(self, model: torch.nn.Module, inputs: Tree) -> Artifact | None:
        """The cached artifact for this model and inputs, or None."""
        artifact = self._lookup(model, self.key(model, inputs))
        with self._lock:
            if artifact is None:
                self.misses += 1
            else:
                self.hits += 1
        return artifact

    @contextmanager
    def holding(self, model: torch.nn.Module) -> Iterator[None]:
        """Keep other threads off ``model`` while this one exports or traces it.

        Non-strict ``torch.export`` swaps the module's parameters for fake tensors while
        it runs, so another thread reading them (to compute its cache key, or to export
        too) would see fakes. Threads working on other models do not wait.
        """
        with self._lock:
            lock = self._model_locks.get(model)
            if lock is None:
                lock = self._model_locks[model] = threading.RLock()
        with lock:
            yield

    def get_or_export(self, model: torch.nn.Module, example_inputs: tuple[Any, ...]) -> Artifact:
        """The cached artifact, exporting on a miss (one export at a time)."""
        with self.holding(model):
            artifact = self.get(model, example_inputs)
            if artifact is not None:
                return artifact
            with self._export_lock:
                key = self.key(model, example_inputs)
                if model.training:
                    warnings.warn(
                        f"{type(model).__name__} is in training mode: dropout and batch norm"
                        " run as in training, on the remote device too; call model.eval()"
                        " before sdk.run unless that is what you mean",
                        UserWarning,
                        stacklevel=4,
                    )
                artifact = export_model(model, example_inputs)
                with self._lock:
                    per_model = self._entries.setdefault(model, OrderedDict())
                    per_model[key] = artifact
                    while len(per_model) > self._per_model:
                        per_model.popitem(last=False)
            return artifact

    def _lookup(self, model: torch.nn.Module, key: Hashable) -> Artifact | None:
        with self._lock:
            per_model = self._entries.get(model)
            artifact = per_model.get(key) if per_model is not None else None
            if artifact is not None and per_model is not None:
                per_model.move_to_end(key)
            return artifact

    def __len__(self) -> int:
        with self._lock:
            return sum(len(v) for v in self._entries.values())

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
