r"""Run time learnt per device model from the work models do, so it carries over to
models that never ran there.

The SDK describes each model's forward by its work (``WORK``): operator calls, FLOPs of
matrix products, of convolutions and of attention, and bytes moved (weights and inputs
read, every operator's output written). A device model's run times are then

    t ≈ c_0 + Σ_k c_k · w_k,      c ≥ 0

with :math:`c_0` a fixed cost per call, :math:`c_\text{calls}` the cost of launching one
operator, :math:`c_k` seconds per FLOP of each class (one over its throughput) and per
byte moved. :math:`c` is fitted to the models that ran on that device model (each
model's moving-average time, ``Learned``), in relative terms so a 1 ms model counts as
much as a 1 s one::

    minimise   Σ_i ((w_i · c − t_i) / t_i)²   subject to  c ≥ 0

by non-negative least squares (Lawson and Hanson's active set; columns scaled to unit
maximum first). A fit needs runs of ``MIN_MODELS`` distinct models; placement uses its
prediction for a model on a device model it has not run on (its own measured time, where
there is one, still wins), and the prediction error of each placement is as before its
predicted against measured time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

__all__ = ["MIN_MODELS", "WORK", "ThroughputModel", "fit_throughput", "nnls", "work_of"]

#: The work a model's profile reports, in the order of ``ThroughputModel.coefficients[1:]``.
WORK = ("operator_calls", "matmul_flops", "conv_flops", "attention_flops", "bytes_moved")
#: Distinct models a device model must have run before its fit is used: as many as the
#: fit has coefficients, so it is never underdetermined.
MIN_MODELS = len(WORK) + 1
#: Models kept per device model (the most recent).
KEPT_MODELS = 256


def nnls(a: NDArray[np.float64], b: NDArray[np.float64], tol: float = 1e-12) -> NDArray[np.float64]:
    """``argmin ‖a x − b‖`` over ``x ≥ 0`` (Lawson and Hanson, 1974, chapter 23)."""
    m, n = a.shape
    passive = np.zeros(n, dtype=bool)
    x = np.zeros(n)
    gradient = a.T @ (b - a @ x)
    for _ in range(3 * n + 10):
        if passive.all() or gradient[~passive].max(initial=-np.inf) <= tol:
            break
        passive[int(np.argmax(np.where(passive, -np.inf, gradient)))] = True
        while True:
            z = np.zeros(n)
            z[passive] = np.linalg.lstsq(a[:, passive], b, rcond=None)[0]
            if (z[passive] > tol).all():
                break
            leaving = passive & (z <= tol)
            step = np.min(x[leaving] / np.maximum(x[leaving] - z[leaving], 1e-300))
            x = x + step * (z - x)
            passive &= x > tol
            if not passive.any():
                z = np.zeros(n)
                break
        x = z
        gradient = a.T @ (b - a @ x)
    return x


def work_of(request: object) -> tuple[float, ...]:
    """``WORK`` of a submission (any object with those attributes; 0 for missing ones)."""
    return tuple(float(getattr(request, name, 0) or 0) for name in WORK)


class ThroughputModel:
    """``coefficients``: seconds per call, then per unit of each ``WORK`` entry."""

    def __init__(self, coefficients: NDArray[np.float64], models: int, error: float) -> None:
        self.coefficients = coefficients
        self.models = models
        #: Median relative error of the fit on the runs it was fitted to.
        self.error = error

    def seconds(self, work: Sequence[float]) -> float:
        return float(self.coefficients[0] + np.dot(self.coefficients[1:], work))


def fit_throughput(runs: Mapping[str, tuple[Sequence[float], float]]) -> ThroughputModel | None:
    """The fit over ``runs`` (model digest -> (work, seconds)); None with fewer than
    ``MIN_MODELS`` usable runs (positive, finite times and work)."""
    rows: list[list[float]] = []
    times: list[float] = []
    for work, seconds in runs.values():
        if not (math.isfinite(seconds) and seconds > 0) or len(work) != len(WORK):
            continue
        if not all(math.isfinite(w) and w >= 0 for w in work):
            continue
        rows.append([1.0, *work])
        times.append(seconds)
    if len(rows) < MIN_MODELS:
        return None
    x = np.array(rows, dtype=float)
    t = np.array(times)
    scale = np.maximum(x.max(axis=0), 1e-300)
    scaled = (x / scale) / t[:, None]
    coefficients = nnls(scaled, np.ones(len(t))) / scale
    predicted = x @ coefficients
    error = float(np.median(np.abs(predicted - t) / t))
    return ThroughputModel(coefficients, len(rows), error)
