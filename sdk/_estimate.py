"""A model's resource profile, estimated without running real compute.

The forward runs once under ``FakeTensorMode``: tensors carry shapes and dtypes but no
data, so nothing is computed and nothing is allocated. The model's own weights are not
touched: ``torch.func.functional_call`` swaps in fake copies of every parameter and buffer
for the duration of the call (so a BatchNorm in training mode updates fakes, not the
model's running statistics).

* FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` (matmul, conv, attention:
  2 FLOPs per multiply-add; elementwise ops count zero, as in the FLOP counter), with the
  CPU flash-attention kernel added and the fused transformer fast path switched off for
  the call (it is one opaque op; the unfused path does the same matmuls, visibly).
* Activation memory is the **peak live set** of operator outputs: each op's fresh output
  bytes are added when it is produced and removed when the tensor is freed (CPython frees
  an intermediate as soon as the last reference goes). Views and in-place results share
  their input's storage and add nothing. This matches an inference run's high-water mark
  above weights and inputs, but ignores allocator rounding and caching, kernel workspaces
  and fused-kernel temporaries, so treat it as a lower bound within tens of percent.
* ``memory_bytes`` = parameters + buffers + inputs + that peak (which includes outputs).
* The work, for the scheduler's throughput model (``scheduler._compute_model``): operator
  calls dispatched, FLOPs by class (matrix products, convolutions, attention) and bytes
  moved (weights, buffers and inputs read once, every operator's fresh output written).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from anypu._codec import map_tensors, tree_nbytes
from anypu.sdk._export import call_args, model_raised, quiet_torch

__all__ = ["Profile", "estimate_profile"]


@dataclass(frozen=True)
class Profile:
    """Estimated cost of one forward call. Bytes are exact for tensors, peak is estimated."""

    flops: float
    memory_bytes: int
    input_bytes: int
    output_bytes: int
    param_bytes: int
    buffer_bytes: int = 0
    activation_bytes: int = 0
    #: What the model computes in (``fp32``, ``fp16``, ``bf16``, ``int8``…): the dtype
    #: holding most of its weights, else of its inputs (``precision_of``).
    precision: str = "fp32"
    #: The work of one call (the module docstring): what run time is learnt from.
    operator_calls: int = 0
    matmul_flops: float = 0.0
    conv_flops: float = 0.0
    attention_flops: float = 0.0
    bytes_moved: int = 0


#: torch dtypes by the precision names devices' throughput figures are quoted in.
_PRECISIONS = {
    torch.float32: "fp32",
    torch.float16: "fp16",
    torch.bfloat16: "bf16",
    torch.float64: "fp64",
    torch.int8: "int8",
    torch.uint8: "int8",
    torch.qint8: "int8",
    torch.quint8: "int8",
}
for _name in ("float8_e4m3fn", "float8_e5m2"):
    if hasattr(torch, _name):
        _PRECISIONS[getattr(torch, _name)] = "fp8"


def precision_of(model: torch.nn.Module, args: tuple[Any, ...]) -> str:
    """The precision holding most of ``model``'s weight bytes (its inputs' when it has
    no weights); ``fp32`` when none of them is floating point or int8."""
    counts: dict[str, int] = {}
    for tensor in _unique([*model.parameters(), *model.buffers()]):
        name = _PRECISIONS.get(tensor.dtype)
        if name is not None:
            counts[name] = counts.get(name, 0) + _nbytes(tensor)
    if not counts:
        inputs: list[torch.Tensor] = []
        map_tensors(args, inputs.append)
        for tensor in inputs:
            name = _PRECISIONS.get(tensor.dtype)
            if name is not None:
                counts[name] = counts.get(name, 0) + _nbytes(tensor)
    return max(counts, key=lambda k: counts[k]) if counts else "fp32"


def _attention_flops(
    query_shape: Any, key_shape: Any, value_shape: Any, *args: Any, **kwargs: Any
) -> int:
    # torch leaves sdpa_flop_count unannotated (it returns an int).
    return int(sdpa_flop_count(query_shape, key_shape, value_shape))  # type: ignore[no-untyped-call]


# Attention kernels the stock counter misses (the CPU flash kernel), same formula as CUDA's.
_EXTRA_FLOP_FORMULAS: dict[Any, Any] = {
    op: _attention_flops
    for name in ("_scaled_dot_product_flash_attention_for_cpu",)
    if (op := getattr(torch.ops.aten, name, None)) is not None
}


# torch leaves TorchDispatchMode's __init_subclass__ and __init__ unannotated.
class _PeakLiveBytes(TorchDispatchMode):  # type: ignore[no-untyped-call]
    """Tracks the high-water mark of bytes held by live operator outputs."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # unannotated in torch
        self.live = 0
        self.peak = 0
        self.calls = 0  # operators dispatched
        self.produced = 0  # bytes of fresh outputs, all told

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        out = func(*args, **(kwargs or {}))
        self.calls += 1
        returns = func._schema.returns
        results = out if isinstance(out, (tuple, list)) else (out,)
        for index, result in enumerate(results):
            # alias_info marks a view or in-place result: same storage as an input.
            aliased = index < len(returns) and returns[index].alias_info is not None
            if isinstance(result, torch.Tensor) and not aliased:
                self._hold(result)
        return out

    def _hold(self, tensor: torch.Tensor) -> None:
        nbytes = tensor.untyped_storage().nbytes()
        self.produced += nbytes
        self.live += nbytes
        self.peak = max(self.peak, self.live)
        weakref.finalize(tensor, self._release, nbytes)

    def _release(self, nbytes: int) -> None:
        self.live -= nbytes


def estimate_profile(model: torch.nn.Module, example_inputs: tuple[Any, ...]) -> Profile:
    """Estimate ``model(*example_inputs)``'s FLOPs and memory; see the module docstring."""
    args = call_args(model, example_inputs)
    params = _unique(model.parameters())
    buffers = _unique(model.buffers())
    param_bytes = sum(_nbytes(t) for t in params)
    buffer_bytes = sum(_nbytes(t) for t in buffers)
    input_bytes = tree_nbytes(args)

    fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
    fakes: dict[int, torch.Tensor] = {}
    state: dict[str, torch.Tensor] = {}
    named = [
        *model.named_parameters(remove_duplicate=False),
        *model.named_buffers(remove_duplicate=False),
    ]
    for name, tensor in named:
        # One fake per real tensor keeps tied weights tied.
        if id(tensor) not in fakes:
            fakes[id(tensor)] = fake_mode.from_tensor(tensor)
        state[name] = fakes[id(tensor)]
    fake_args = map_tensors(args, fake_mode.from_tensor)

    counter = FlopCounterMode(display=False, custom_mapping=_EXTRA_FLOP_FORMULAS)
    peak = _PeakLiveBytes()
    # The fused transformer fast path is one opaque op the counter cannot see into; the
    # unfused path does the same matmuls as separate, counted ops.
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with quiet_torch(), fake_mode, torch.no_grad(), counter, peak:
            outputs = torch.func.functional_call(model, state, fake_args)
            output_bytes = tree_nbytes(outputs)
            del outputs
    except Exception:
        # Control flow on tensor values, a TorchScript module, an op without a fake
        # kernel: what fake tensors cannot follow, one real run on the example measures.
        return measured_profile(model, args, param_bytes, buffer_bytes, input_bytes)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    activation = peak.peak
    return Profile(
        flops=float(counter.get_total_flops()),
        memory_bytes=param_bytes + buffer_bytes + input_bytes + activation,
        input_bytes=input_bytes,
        output_bytes=output_bytes,
        param_bytes=param_bytes,
        buffer_bytes=buffer_bytes,
        activation_bytes=activation,
        precision=precision_of(model, args),
        **_work(counter, peak, param_bytes + buffer_bytes + input_bytes),
    )


def _flop_class(op: Any) -> str:
    name = str(op)
    if "convolution" in name:
        return "conv_flops"
    if "attention" in name:
        return "attention_flops"
    return "matmul_flops"  # mm, addmm, bmm, baddbmm: what else the counter counts


def _work(counter: FlopCounterMode, peak: _PeakLiveBytes, read_bytes: int) -> dict[str, Any]:
    """``Profile``'s work fields from one counted forward."""
    work: dict[str, Any] = {"matmul_flops": 0.0, "conv_flops": 0.0, "attention_flops": 0.0}
    for op, flops in counter.get_flop_counts().get("Global", {}).items():
        work[_flop_class(op)] += float(flops)
    work["operator_calls"] = peak.calls
    work["bytes_moved"] = read_bytes + peak.produced
    return work


def measured_profile(
    model: torch.nn.Module,
    args: tuple[Any, ...],
    param_bytes: int,
    buffer_bytes: int,
    input_bytes: int,
) -> Profile:
    """FLOPs and peak memory of one real run of ``model(*args)`` on this machine's CPU.

    The fallback of ``estimate_profile``: never refuse a model the export accepted. The
    counter still sees every aten op a module runs (TorchScript ones too, as far as they
    dispatch through aten); the placement learns the true run time from the first run.
    A model that raises here raises on its own inputs: the user's error, said as such.
    """
    counter = FlopCounterMode(display=False, custom_mapping=_EXTRA_FLOP_FORMULAS)
    peak = _PeakLiveBytes()
    try:
        with torch.no_grad(), counter, peak:
            outputs = model(*args)
            output_bytes = tree_nbytes(outputs)
            del outputs
    except Exception as exc:
        raise model_raised(model, args, exc) from exc
    return Profile(
        flops=float(counter.get_total_flops()),
        memory_bytes=param_bytes + buffer_bytes + input_bytes + peak.peak,
        input_bytes=input_bytes,
        output_bytes=output_bytes,
        param_bytes=param_bytes,
        buffer_bytes=buffer_bytes,
        activation_bytes=peak.peak,
        precision=precision_of(model, args),
        **_work(counter, peak, param_bytes + buffer_bytes + input_bytes),
    )


def _unique(tensors: Any) -> list[torch.Tensor]:
    seen: dict[int, torch.Tensor] = {}
    for tensor in tensors:
        seen.setdefault(id(tensor), tensor)
    return list(seen.values())


def _nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()
