"""An agent's self-test of operator support: which operators each backend lacks, found
once at start and reported with its devices, so placement skips them before any job runs.

Per backend (a torch device type such as ``cuda``, ``npu`` or ``mlu``):

- **CUDA, MPS, XPU** (whose dispatcher registrations are authoritative, see
  ``_operators``): every ``aten`` operator with a CPU kernel that the backend has no
  kernel for and that is not composite. The CPU is the reference: models are exported
  and estimated there, so an operator it runs and the backend does not is a gap that
  matters.
- **anything else** (out-of-tree backends, which may serve operators through fallbacks
  the dispatcher does not list): each operator of ``CATALOGUE`` (those exported models
  call most) is *run* on a tiny input, and the ones whose failure says the operator is
  missing (``_runner.missing_operator``) are the gaps. Other failures say nothing about
  support and are only logged.

The test runs in a child process (``python -m anypu.agents._selftest``) with the device's
visible-devices environment, so the agent itself never imports torch nor holds a device
context. What it finds is added to ``Device.extra["lacks_operators"]`` (with what
``devices.yaml`` declared), which ``OperatorFilter`` reads. A self-test that fails or
times out is logged and leaves the device as it was: gaps are then found per model
before it first runs (``_operators.lacking_operators``) or by its failure.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from anypu.agents._operators import authoritative_key, has_kernel, runs_on
from anypu.devices import Device, slice_environment, worker_torch_device

__all__ = ["CATALOGUE", "backend_gaps", "run_catalogue", "with_self_tested_operators"]

log = logging.getLogger(__name__)

#: How long one backend's self-test may take (a torch import and a device context).
SELF_TEST_TIMEOUT_S = 120.0


def _f(*shape: int) -> Callable[[Any, str], Any]:
    return lambda torch, device: torch.rand(*shape, device=device)


def _args(*makers: Callable[[Any, str], Any]) -> Callable[[Any, str], tuple[Any, ...]]:
    return lambda torch, device: tuple(make(torch, device) for make in makers)


def _const(value: Any) -> Callable[[Any, str], Any]:
    return lambda torch, device: value


def _index(*shape: int, high: int = 4) -> Callable[[Any, str], Any]:
    return lambda torch, device: torch.randint(0, high, shape, device=device)


#: Operators exported models call most (by the dispatcher names ``torch.export`` graphs
#: carry), each with the arguments of a call small enough for any device.
CATALOGUE: tuple[tuple[str, Callable[[Any, str], tuple[Any, ...]]], ...] = (
    ("aten::linear", _args(_f(2, 8), _f(4, 8), _f(4))),
    ("aten::matmul", _args(_f(2, 3, 8), _f(8, 4))),
    ("aten::bmm", _args(_f(2, 3, 8), _f(2, 8, 4))),
    ("aten::addmm", _args(_f(4), _f(2, 8), _f(8, 4))),
    ("aten::conv1d", _args(_f(1, 2, 8), _f(3, 2, 3))),
    ("aten::conv2d", _args(_f(1, 2, 8, 8), _f(3, 2, 3, 3))),
    ("aten::conv_transpose2d.input", _args(_f(1, 2, 4, 4), _f(2, 3, 3, 3))),
    ("aten::relu", _args(_f(8))),
    ("aten::gelu", _args(_f(8))),
    ("aten::silu", _args(_f(8))),
    ("aten::sigmoid", _args(_f(8))),
    ("aten::tanh", _args(_f(8))),
    ("aten::erf", _args(_f(8))),
    ("aten::rsqrt", _args(_f(8))),
    ("aten::exp", _args(_f(8))),
    ("aten::softmax.int", _args(_f(2, 8), _const(-1))),
    ("aten::log_softmax.int", _args(_f(2, 8), _const(-1))),
    ("aten::layer_norm", _args(_f(2, 8), _const([8]))),
    ("aten::group_norm", _args(_f(1, 4, 8), _const(2))),
    (
        "aten::batch_norm",
        lambda torch, device: (
            torch.rand(2, 4, 8, device=device),
            torch.ones(4, device=device),
            torch.zeros(4, device=device),
            torch.zeros(4, device=device),
            torch.ones(4, device=device),
            False,
            0.1,
            1e-5,
            False,
        ),
    ),
    ("aten::embedding", _args(_f(10, 4), _index(2, 3, high=10))),
    ("aten::scaled_dot_product_attention", _args(_f(1, 2, 4, 8), _f(1, 2, 4, 8), _f(1, 2, 4, 8))),
    ("aten::max_pool2d", _args(_f(1, 2, 8, 8), _const([2, 2]))),
    ("aten::avg_pool2d", _args(_f(1, 2, 8, 8), _const([2, 2]))),
    ("aten::adaptive_avg_pool2d", _args(_f(1, 2, 8, 8), _const([1, 1]))),
    ("aten::upsample_nearest2d.vec", _args(_f(1, 2, 4, 4), _const([8, 8]), _const(None))),
    ("aten::cumsum", _args(_f(2, 8), _const(1))),
    ("aten::topk", _args(_f(2, 8), _const(3))),
    ("aten::sort", _args(_f(2, 8))),
    ("aten::argmax", _args(_f(2, 8), _const(1))),
    ("aten::mean.dim", _args(_f(2, 8), _const([1]))),
    ("aten::sum.dim_IntList", _args(_f(2, 8), _const([1]))),
    ("aten::gather", _args(_f(2, 8), _const(1), _index(2, 3, high=8))),
    ("aten::index_select", _args(_f(4, 8), _const(0), _index(3))),
    ("aten::cat", lambda torch, device: ([torch.rand(2, device=device)] * 2,)),
    (
        "aten::where.self",
        lambda torch, device: (
            torch.rand(4, device=device) > 0.5,
            *[torch.rand(4, device=device)] * 2,
        ),
    ),
    ("aten::pow.Tensor_Scalar", _args(_f(8), _const(2.0))),
    ("aten::clamp", _args(_f(8), _const(0.2), _const(0.8))),
)


def _operator(torch: Any, name: str) -> Any:
    """``torch.ops.aten.softmax.int`` for ``aten::softmax.int``."""
    namespace, _, rest = name.partition("::")
    packet, _, overload = rest.partition(".")
    return getattr(getattr(getattr(torch.ops, namespace), packet), overload or "default")


def run_catalogue(
    torch_device: str,
    catalogue: Sequence[tuple[str, Callable[[Any, str], tuple[Any, ...]]]] = CATALOGUE,
) -> list[str]:
    """The operators of ``catalogue`` that fail on ``torch_device`` saying they are
    missing (run for real; the module docstring)."""
    import torch

    from anypu.agents._runner import missing_operator

    lacking = []
    for name, make_args in catalogue:
        try:
            _operator(torch, name)(*make_args(torch, torch_device))
        except Exception as error:  # the backend's refusal is the answer sought
            if missing_operator(error) is not None:
                lacking.append(name)
            else:
                log.info("self-test of %s on %s failed otherwise: %s", name, torch_device, error)
    return sorted(lacking)


def backend_gaps(
    torch_device: str,
    kernel: Callable[[str, str], bool] = has_kernel,
    operator_names: Callable[[], Iterable[str]] | None = None,
    run: Callable[[str], list[str]] = run_catalogue,
) -> list[str]:
    """The operators ``torch_device``'s backend lacks, sorted (the module docstring)."""
    key = authoritative_key(torch_device, kernel)
    if key is None:
        return run(torch_device)
    if operator_names is None:
        import torch

        operator_names = torch._C._dispatch_get_all_op_names
    return sorted(
        name
        for name in operator_names()
        if name.startswith("aten::") and kernel(name, "CPU") and not runs_on(name, key, kernel)
    )


def _tested(device: Device) -> bool:
    return not device.simulated and device.kind != "cpu"


def _self_test(device: Device, timeout_s: float) -> list[str]:
    env = {**os.environ, **slice_environment(device, 0)}
    completed = subprocess.run(
        [sys.executable, "-m", "anypu.agents._selftest", worker_torch_device(device)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if completed.returncode != 0:
        last = (completed.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RuntimeError(f"exited {completed.returncode}: {last}")
    gaps = json.loads(completed.stdout.strip().splitlines()[-1])
    if not isinstance(gaps, list) or not all(isinstance(op, str) for op in gaps):
        raise RuntimeError(f"answered {completed.stdout[-200:]!r}, not a list of operators")
    return gaps


def with_self_tested_operators(
    devices: list[Device],
    test: Callable[[Device, float], list[str]] = _self_test,
    timeout_s: float = SELF_TEST_TIMEOUT_S,
) -> list[Device]:
    """``devices`` with each real accelerator's self-tested gaps added to what it was
    declared to lack; one test per backend and vendor (devices alike answer alike)."""
    found: dict[tuple[str, str], list[str] | None] = {}
    tested = []
    for device in devices:
        if not _tested(device):
            tested.append(device)
            continue
        backend = (device.vendor, worker_torch_device(device).split(":")[0])
        if backend not in found:
            try:
                found[backend] = test(device, timeout_s)
            except (OSError, RuntimeError, ValueError, subprocess.TimeoutExpired) as error:
                log.warning(
                    "operator self-test of %s (%s) failed: %s; operators it lacks are found"
                    " per model before it first runs instead",
                    device.device_id,
                    backend[1],
                    error,
                )
                found[backend] = None
            else:
                said = found[backend] or []
                log.info(
                    "operator self-test of %s (%s): lacks %d operator(s)%s",
                    device.device_id,
                    backend[1],
                    len(said),
                    f": {', '.join(said[:12])}{' …' if len(said) > 12 else ''}" if said else "",
                )
        gaps = found[backend]
        if not gaps:  # none, or the self-test failed
            tested.append(device)
            continue
        lacking = sorted(device.lacking_operators | set(gaps))
        extra = {**device.extra, "lacks_operators": ",".join(lacking)}
        tested.append(dataclasses.replace(device, extra=extra))
    return tested


def main(argv: list[str]) -> int:
    """Print the gaps of the backend named by ``argv[0]`` as one JSON line."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    print(json.dumps(backend_gaps(argv[0])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
