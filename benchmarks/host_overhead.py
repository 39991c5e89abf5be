"""How much host memory a job needs above its estimate: the ``host`` runtime overhead.

Run from the repository root::

    python -m benchmarks.host_overhead

A job on host memory (a CPU slice, or a simulated device) runs under a data limit
(``RLIMIT_DATA``) of its reservation: the estimate (``estimate_profile``: weights,
buffers, inputs, peak activations) plus ``PlacementConfig.runtime_overhead["host"]``.
For models of several shapes and sizes this finds, by bisection in a fresh worker process
each time, the smallest limit a run succeeds under — the model's first run on a seat (its
load is outside the limit, its first call's lazy set-up inside) and a warm one (the model
run once before, as a seat holds it between jobs) — and prints them beside the estimate:
the difference is the allocator's slack the overhead must cover. The reference is the
estimate itself (slack 0).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import statistics
import sys
import tempfile
from typing import Any

import torch

from benchmarks import machine

MIB = 1 << 20


def _cases() -> list[tuple[str, Any, tuple[torch.Tensor, ...]]]:
    from anypu.sdk.models import mlp, small_cnn, transformer_block

    return [
        ("mlp 256x3, batch 8", mlp(256, 3).eval(), (torch.randn(8, 256),)),
        ("mlp 1024x4, batch 64", mlp(1024, 4).eval(), (torch.randn(64, 1024),)),
        ("mlp 2048x4, batch 512", mlp(2048, 4).eval(), (torch.randn(512, 2048),)),
        ("cnn 3ch, batch 16", small_cnn().eval(), (torch.randn(16, 3, 32, 32),)),
        ("cnn 3ch, batch 256", small_cnn().eval(), (torch.randn(256, 3, 32, 32),)),
        ("transformer d64, 4x128", transformer_block().eval(), (torch.randn(4, 128, 64),)),
        ("transformer d256, 8x512", transformer_block(256, 8).eval(), (torch.randn(8, 512, 256),)),
        # benchmarks.density's model: 600 tanh in a row over 4 MiB; its first run failed
        # under a data limit of its bare estimate.
        ("tanh chain 4 MiB x600", _chain(), (torch.randn(256, 1024),)),
    ]


def _chain() -> torch.nn.Module:
    from benchmarks.density import Busy

    return Busy().eval()


def _run_under(
    artifact_path: str, digest: str, payload: bytes, limit: int, warm: bool, out: Any
) -> None:
    torch.set_num_threads(1)
    from anypu.agents._runner import ModelRunner

    runner = ModelRunner("cpu")
    if warm:
        first, _ = runner.execute(digest, artifact_path, payload)  # as a seat holds it
        if not first.ok:
            out.put(False)
            return
    else:
        runner._module(digest, artifact_path)  # loaded outside the limit, as a worker does
    outcome, _ = runner.execute(digest, artifact_path, payload, memory_limit_bytes=limit)
    out.put(outcome.ok)


def _succeeds(artifact_path: str, digest: str, payload: bytes, limit: int, warm: bool) -> bool:
    context = mp.get_context("spawn")
    out = context.Queue()
    worker = context.Process(
        target=_run_under, args=(artifact_path, digest, payload, limit, warm, out)
    )
    worker.start()
    worker.join(120)
    return bool(out.get(timeout=5)) if worker.exitcode == 0 else False


def main() -> None:
    from anypu import _codec
    from anypu.sdk._estimate import estimate_profile
    from anypu.sdk._export import export_model

    rows = []
    with tempfile.TemporaryDirectory() as work:
        for name, model, args in _cases():
            estimate = estimate_profile(model, args).memory_bytes
            artifact = export_model(model, args)
            path = os.path.join(work, artifact.digest)
            with open(path, "wb") as f:
                f.write(artifact.data)
            payload = _codec.encode(args)
            found = []
            for warm in (False, True):
                low, high = 0, max(estimate * 4, 256 * MIB)
                if not _succeeds(path, artifact.digest, payload, high, warm):
                    found.append(None)
                    continue
                while high - low > MIB:
                    mid = (low + high) // 2
                    if _succeeds(path, artifact.digest, payload, mid, warm):
                        high = mid
                    else:
                        low = mid
                found.append(high)
            rows.append((name, estimate, *found))
            print(f"  {name}: estimate {estimate / MIB:.1f} MiB, needs {found}", file=sys.stderr)
    print(machine())
    print(f"{'model':<28} {'estimate':>10} {'first run':>11} {'warm run':>10} {'slack':>9}")
    slack = []
    for name, estimate, first, warm in rows:
        cells = [f"{n / MIB:>7.1f} MiB" if n is not None else "   > 4x    " for n in (first, warm)]
        worst = max((n for n in (first, warm) if n is not None), default=None)
        if worst is not None:
            slack.append((worst - estimate) / MIB)
        gap = f"{(worst - estimate) / MIB:>+7.1f} MiB" if worst is not None else ""
        print(f"{name:<28} {estimate / MIB:>6.1f} MiB {cells[0]:>11} {cells[1]:>10} {gap:>9}")
    if slack:
        print(
            f"slack (the larger of the two runs, over the estimate): median"
            f" {statistics.median(slack):+.1f} MiB, max {max(slack):+.1f} MiB; the host"
            " overhead reserved is 64 MiB"
        )


if __name__ == "__main__":
    main()
