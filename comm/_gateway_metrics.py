"""An inference gateway's requests for Prometheus, where it runs: the scheduler's
``/metrics`` and a gateway agent's (``--health-address``) carry the same families, so
one query sums them over every place calls come in (each scrape target its own
``instance``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import prometheus_client as prom
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

__all__ = ["ThrottleCollector", "watch_gateway"]

#: Seconds: an inference answered at a gateway, a cold start's wait included.
INFERENCE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class _RequestsCollector(Collector):
    """The inference protocol's requests at one gateway, by protocol, model and status."""

    def __init__(self, gateway: Any, where: str) -> None:
        self.gateway = gateway
        self.where = where

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "anypu_inference_requests",
            f"Open Inference Protocol requests answered at {self.where}, by protocol (http,"
            ' grpc), model ("" for health, server metadata and unknown models) and HTTP'
            " status (a gRPC answer by the HTTP status its code stands for: 200 OK, 400"
            " INVALID_ARGUMENT, 404 NOT_FOUND, 503 UNAVAILABLE...).",
            labels=["protocol", "model", "code"],
        )
        for (protocol, model, code), count in sorted(self.gateway.answered.items()):
            family.add_metric([protocol, model, str(code)], count)
        yield family


class ThrottleCollector(Collector):
    """Failed authentications a ``FailureThrottle`` held back or refused."""

    def __init__(self, throttle: Any) -> None:
        self.throttle = throttle

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "anypu_auth_failures_throttled",
            "Failed authentications answered late (delayed) or refused at once (refused);"
            " a correct credential is never throttled.",
            labels=["action"],
        )
        family.add_metric(["delayed"], self.throttle.delayed)
        family.add_metric(["refused"], self.throttle.refused)
        yield family


def watch_gateway(
    registry: CollectorRegistry, gateway: Any, where: str, *, throttle: bool = False
) -> None:
    """Count ``gateway``'s requests (``InferenceGateway.answered``) and time its
    inferences end to end into ``registry``, described as answered at ``where``
    ("the scheduler", "this gateway agent"); ``throttle``: also its token throttle's
    refusals (where no other collector counts that throttle)."""
    registry.register(_RequestsCollector(gateway, where))
    if throttle:
        registry.register(ThrottleCollector(gateway.throttle))
    seconds = prom.Histogram(
        "anypu_inference_duration_seconds",
        f"Open Inference Protocol inferences answered at {where} (HTTP: body read to"
        " response built; gRPC: message decoded to response returned; the call to a"
        " replica and back and a cold start's wait included), by protocol and model.",
        ["protocol", "model"],
        registry=registry,
        buckets=INFERENCE_BUCKETS,
    )
    gateway.on_latency = lambda protocol, model, s: seconds.labels(protocol, model).observe(s)
