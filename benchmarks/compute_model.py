"""How well run time learnt from some models predicts others, on this machine's CPU.

``python -m benchmarks.compute_model [--splits 50] [--runs 5]``. A zoo of demo models
(MLPs, CNNs, transformer blocks at several sizes and batches) runs through the SDK's
embedded mode, each ``--runs`` times; its run time is the median of the worker's measured
``run_seconds`` after the first, and its work is what the SDK's profile says
(``sdk._estimate``). Two ways to predict a model nothing has run before:

- **learned**: ``scheduler._compute_model.fit_throughput`` on the other models' runs (the
  scheduler's throughput model), trained on a random half of the zoo and tested on the
  other half, ``--splits`` times;
- **estimate**: what placement costs with no run at all, FLOPs over the CPU's measured
  throughput times its efficiency, plus the launch overhead.

It prints the median and p90 of |predicted − measured| / measured over every held-out
prediction, and the same for the scheduler's own prediction live: the embedded
scheduler, after the training half ran, places each held-out model's first call on its
learnt time (``placement.compute_from == "learned"``), compared with that model's
measured time as above. The scheduler learns from every run, the first (colder) one too.
"""

from __future__ import annotations

import argparse
import random
import statistics
from collections.abc import Callable
from typing import Any

import torch

from anypu import sdk
from anypu.placement import PlacementConfig
from anypu.scheduler._compute_model import fit_throughput, work_of
from anypu.sdk import models
from benchmarks import machine, percentile


def _zoo() -> list[tuple[str, Callable[[], Any], tuple[torch.Tensor, ...]]]:
    zoo: list[tuple[str, Callable[[], Any], tuple[torch.Tensor, ...]]] = []
    for width, depth, batch in (
        (64, 2, 8),
        (128, 4, 32),
        (256, 3, 64),
        (512, 2, 16),
        (512, 6, 64),
        (1024, 2, 32),
        (1024, 4, 128),
        (2048, 2, 8),
        (96, 12, 4),
    ):
        zoo.append(
            (
                f"mlp w{width} d{depth} b{batch}",
                lambda w=width, d=depth: models.mlp(w, d),
                (torch.randn(batch, width),),
            )
        )
    for channels, batch in ((3, 1), (3, 8), (3, 32), (1, 16), (8, 8)):
        zoo.append(
            (
                f"cnn c{channels} b{batch}",
                lambda c=channels: models.small_cnn(channels=c),
                (torch.randn(batch, channels, 32, 32),),
            )
        )
    for d_model, heads, batch, tokens in (
        (64, 4, 2, 16),
        (64, 4, 8, 64),
        (128, 8, 4, 32),
        (256, 8, 2, 128),
        (256, 4, 8, 16),
        (128, 4, 1, 256),
    ):
        zoo.append(
            (
                f"transformer d{d_model} h{heads} b{batch} t{tokens}",
                lambda d=d_model, h=heads: models.transformer_block(d, h),
                (torch.randn(batch, tokens, d_model),),
            )
        )
    return zoo


def _measure(model: Any, inputs: tuple[torch.Tensor, ...], runs: int) -> tuple[float, Any]:
    times = []
    first = None
    for _ in range(runs):
        handle = sdk.submit(model, inputs)
        handle.result(timeout=120)
        info = handle.info()
        first = first or info
        times.append(info.outcome.run_seconds)
    return statistics.median(times[1:] or times), first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", type=int, default=50)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(machine())
    zoo = _zoo()
    rng = random.Random(args.seed)
    live_test = set(rng.sample(range(len(zoo)), len(zoo) // 2))
    from anypu.sdk import _api

    client = _api._default()  # the embedded scheduler and its local agent
    service = _api._embedded.service
    measured: dict[str, float] = {}
    work: dict[str, tuple[float, ...]] = {}
    estimate: dict[str, float] = {}
    live: list[float] = []
    order = [i for i in range(len(zoo)) if i not in live_test] + sorted(live_test)
    for i in order:
        name, build, inputs = zoo[i]
        model = build()
        seconds, first = _measure(model, inputs, args.runs)
        placement = first.placement
        if i in live_test:
            if placement.compute_from == "learned":
                # against its steady time, as the offline rows (its first run is colder)
                live.append(abs(placement.terms["compute"] - seconds) / seconds)
            else:
                print(f"  (live: {name} placed on {placement.compute_from!r}, not learned)")
        measured[name] = seconds
        artifact = client.models.get(model, inputs)
        profile = client._profiles[artifact.digest]
        work[name] = work_of(profile)
        estimate[name] = _estimate(service, profile.flops)
        print(f"  {name:<34} {seconds * 1e3:8.3f} ms  estimate {estimate[name] * 1e3:8.3f} ms")
    names = list(measured)
    learned_errors: list[float] = []
    for _ in range(args.splits):
        train = set(rng.sample(names, len(names) // 2))
        fit = fit_throughput({n: (work[n], measured[n]) for n in train})
        if fit is None:
            continue
        for n in names:
            if n not in train:
                learned_errors.append(abs(fit.seconds(work[n]) - measured[n]) / measured[n])
    estimate_errors = [abs(estimate[n] - measured[n]) / measured[n] for n in names]
    print(f"{len(names)} models; held-out halves over {args.splits} random splits:")
    print("| prediction | n | median abs error | p90 |")
    print("|---|---|---|---|")
    for label, errors in (
        ("learned (fit on the other half)", learned_errors),
        ("learned, live (scheduler, first call)", live),
        ("estimate (FLOPs / throughput)", estimate_errors),
    ):
        if errors:
            print(
                f"| {label} | {len(errors)} | {statistics.median(errors):.1%} |"
                f" {percentile(errors, 0.9):.1%} |"
            )
    sdk.disconnect()


def _estimate(service: Any, flops: float) -> float:
    """Placement's compute term with no run: FLOPs over the local CPU's throughput."""
    config = PlacementConfig()
    node = next(iter(service.state.nodes.values()))
    device = node.devices[0]
    rate = device.tflops * 1e12 * config.efficiency_of(device.kind)
    return flops / rate + config.launch_overhead_s


if __name__ == "__main__":
    main()
