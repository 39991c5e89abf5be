"""Operators a backend lacks, found before a model runs rather than by its failure.

A worker loads a model's exported graph and, before its first run, asks whether its
backend has every operator the graph calls (``lacking_operators``). Where the answer is
authoritative the job is refused at once as ``OperatorUnsupported`` (retryable, never the
user's error) and the scheduler places it on another kind, exactly as after a failed run
(``scheduler._state``: the backend is remembered as lacking for that model).

Whom to ask (``has_kernel``, the vendor boundary):

- a **simulated** device: what ``devices.yaml`` declares its backend lacks
  (``lacks: [aten::tanh]``), so a network of simulated devices can play a real backend's
  gaps;
- **CUDA, MPS and XPU**: torch's dispatcher. An operator runs there when the backend
  registers a kernel for it or it is composite (decomposes into others). Only asked
  when the backend has a kernel for ``aten::add.Tensor`` (otherwise this torch build has
  no such backend and the dispatcher knows nothing), and never for MPS with
  ``PYTORCH_ENABLE_MPS_FALLBACK=1`` (missing operators then run on the CPU);
- anything else (out-of-tree backends such as ``torch_npu``, which may serve operators
  through a fallback the dispatcher does not list): not asked; a failure at run time that
  says an operator is missing (``_runner.missing_operator``) is the signal there.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from anypu.devices import Device

__all__ = ["authoritative_key", "graph_operators", "has_kernel", "lacking_operators", "runs_on"]

#: torch device types whose dispatcher registrations say what runs there, by dispatch key.
_AUTHORITATIVE = {"cuda": "CUDA", "mps": "MPS", "xpu": "XPU"}
#: Kernels that serve every backend: the operator decomposes into others.
_COMPOSITE = (
    "CompositeImplicitAutograd",
    "CompositeExplicitAutograd",
    "CompositeExplicitAutogradNonFunctional",
)
_PROBE_OPERATOR = "aten::add.Tensor"


def graph_operators(program: Any) -> set[str]:
    """Dispatcher names (``aten::linear``, ``aten::add.Tensor``) of the operators an
    exported program's graph calls."""
    names: set[str] = set()
    for node in program.graph.nodes:
        if node.op == "call_function" and callable(getattr(node.target, "name", None)):
            name = node.target.name()
            if isinstance(name, str) and "::" in name:
                names.add(name)
    return names


def has_kernel(operator: str, dispatch_key: str) -> bool:
    """Whether torch's dispatcher has a kernel for ``operator`` under ``dispatch_key``."""
    import torch

    try:
        return bool(torch._C._dispatch_has_kernel_for_dispatch_key(operator, dispatch_key))
    except RuntimeError:  # an operator this torch does not know: it cannot run anywhere
        return False


def lacking_operators(
    operators: Iterable[str],
    device: Device,
    torch_device: str,
    kernel: Callable[[str, str], bool] = has_kernel,
) -> list[str]:
    """The operators of ``operators`` that ``device``'s backend lacks, sorted; empty
    when it has them all or cannot say (the module docstring)."""
    if device.simulated:
        return sorted(set(operators) & device.lacking_operators)
    key = authoritative_key(torch_device, kernel)
    if key is None:
        return []
    return sorted(op for op in operators if not runs_on(op, key, kernel))


def authoritative_key(
    torch_device: str, kernel: Callable[[str, str], bool] = has_kernel
) -> str | None:
    """The dispatch key whose registrations say what runs on ``torch_device``, or None
    where the dispatcher cannot say (the module docstring)."""
    key = _AUTHORITATIVE.get(torch_device.split(":")[0])
    if key is None or not kernel(_PROBE_OPERATOR, key):
        return None
    if key == "MPS" and os.environ.get("PYTORCH_ENABLE_MPS_FALLBACK") == "1":
        return None
    return key


def runs_on(operator: str, key: str, kernel: Callable[[str, str], bool] = has_kernel) -> bool:
    """Whether ``operator`` has a kernel under ``key`` or a composite one."""
    return kernel(operator, key) or any(kernel(operator, c) for c in _COMPOSITE)
