"""Models as services against Ray Serve: the same model, the same replicas, open-loop load.

``python -m benchmarks.serving [--rates 50,100,200,400] [--seconds 8]`` (Ray Serve is
installed with ``pip install 'ray[serve]'``; without it only anypu's rows print). On this
machine, one run:

- **anypu**: a scheduler and one agent (``--direct-address``) in their own processes on
  loopback, the agent declaring one CPU device of two slices; ``Client.deploy`` with two
  replicas (one worker process per slice), called through ``Client.service``, and
  through the scheduler's Open Inference Protocol gateway by Triton's gRPC client
  (when ``tritonclient`` is installed) and over REST with binary tensors;
- **Ray Serve**: a local Ray cluster (2 CPUs), ``@serve.deployment(num_replicas=2,
  ray_actor_options={"num_cpus": 1})``, called through its ``DeploymentHandle`` and
  through its HTTP proxy (the input's float32 bytes as the body, the output's as the
  answer, one kept-open connection per calling thread).

anypu's REST rows are called at the scheduler's gateway and at the agent's own
(``--gateway-http``), which holds the replicas: the protocol's REST with binary tensors.

Both replicas run ``torch.set_num_threads(1)`` and the model in inference mode. For each
model — a small MLP (3×256, batch 32) and a transformer encoder layer (d 256, 4 heads,
64 tokens) — and each rate, requests are sent at Poisson arrival times for ``--seconds``
from a pool of 64 threads (open loop: a request's latency runs from when it was due,
so time it waited for a free thread counts); median and p99 of the requests after the
first second, and the highest rate held with p99 ≤ 100 ms. Then, for anypu, the cold
start: a deployment with ``min_replicas=0`` asleep at zero, time from a call to its
answer.

Then requests lost while a deployment is deployed anew (a rolling update) under 100
requests a second (Ray Serve's rolling update is not run here).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import http.client
import json
import random
import re
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from anypu.sdk import Client
from anypu.sdk._transport import GrpcTransport
from anypu.sdk.models import mlp
from benchmarks import machine, percentile
from tests.cluster import Cluster

TWO_SLICES = (
    "devices:\n"
    "  - {kind: cpu, vendor: intel, model: Xeon, memory: 8GiB, tflops: 0.5, slices: 2}\n"
    "include_host: false\n"
)
P99_TARGET_S = 0.100


class Transformer(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.TransformerEncoderLayer(256, 4, 512, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


def _models() -> dict[str, tuple[torch.nn.Module, torch.Tensor]]:
    torch.manual_seed(0)
    return {
        "MLP 3×256, batch 32": (mlp(width=256, depth=3).eval(), torch.randn(32, 256)),
        "transformer layer, 64 tokens": (Transformer().eval(), torch.randn(1, 64, 256)),
    }


def _open_loop(call: Callable[[], object], rate: float, seconds: float) -> list[float]:
    """Latencies (from each request's due time) of Poisson arrivals at ``rate`` a second."""
    rng = random.Random(int(rate))
    due, t = [], 0.0
    while t < seconds:
        t += rng.expovariate(rate)
        due.append(t)
    latencies: list[float] = []
    lock = threading.Lock()
    start = time.perf_counter() + 0.2

    def one(at: float) -> None:
        wait = start + at - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        call()
        took = time.perf_counter() - (start + at)
        if at >= 1.0:  # the first second warms the pool
            with lock:
                latencies.append(took)

    with concurrent.futures.ThreadPoolExecutor(64) as pool:
        for future in [pool.submit(one, at) for at in due]:
            future.result()
    return latencies


def _report(system: str, model: str, rows: list[tuple[float, list[float]]]) -> None:
    held = [rate for rate, lat in rows if lat and percentile(lat, 0.99) <= P99_TARGET_S]
    for rate, latencies in rows:
        p50, p99 = statistics.median(latencies), percentile(latencies, 0.99)
        print(
            f"| {system} | {model} | {rate:g}/s | {p50 * 1e3:.1f} ms | {p99 * 1e3:.1f} ms |"
            f" {len(latencies)} |",
            flush=True,
        )
    best = f"{max(held):g}/s" if held else "none"
    print(f"| {system} | {model} | highest rate with p99 ≤ 100 ms: {best} | | | |", flush=True)


def _anypu(rates: list[float], seconds: float) -> None:
    with tempfile.TemporaryDirectory() as work:
        cluster = Cluster(Path(work), **{"scale-to-zero-after": 2.0, "http-port": 0})
        try:
            gateway = ("--gateway-http", "127.0.0.1:0")
            cluster.add_agent("serving-1", "edge", TWO_SLICES, direct=True, extra=gateway)
            client = Client(GrpcTransport(cluster.address, cluster.token))
            cluster.wait_nodes(client, 1)
            for i, (name, (model, x)) in enumerate(_models().items()):
                deployment = f"model-{i}"
                info = client.deploy(model, deployment, example_inputs=x, replicas=2)
                assert len(info.ready) == 2, info
                service = client.service(deployment)
                for _ in range(50):
                    service(x)
                call = functools.partial(service, x)
                rows = [(rate, _open_loop(call, rate, seconds)) for rate in rates]
                _report("anypu", name, rows)
                by_protocol = _protocol_call(cluster, deployment, x)
                if by_protocol is not None:
                    rows = [(rate, _open_loop(by_protocol, rate, seconds)) for rate in rates]
                    _report("anypu, OIP gRPC via the scheduler", name, rows)
                by_rest = _rest_call(_http_port(cluster), cluster.token, deployment, x)
                rows = [(rate, _open_loop(by_rest, rate, seconds)) for rate in rates]
                _report("anypu, OIP REST (binary tensors) via the scheduler", name, rows)
                listening = r"Inference Protocol at http://127\.0\.0\.1:(\d+)/v2"
                agent_port = int(cluster.printed("serving-1", listening))
                by_agent = _rest_call(agent_port, cluster.token, deployment, x)
                rows = [(rate, _open_loop(by_agent, rate, seconds)) for rate in rates]
                _report("anypu, OIP REST (binary tensors) via the agent's gateway", name, rows)
                client.undeploy(deployment)
            model, x = next(iter(_models().values()))
            _rolling_update(client, model, x, seconds)
            client.deploy(
                model, "cold", example_inputs=x, replicas=1, min_replicas=0, max_replicas=1
            )
            service = client.service("cold")
            service(x)
            colds = []
            for _ in range(3):
                deadline = time.monotonic() + 60
                while [d for d in client.deployments() if d.name == "cold"][0].replicas_wanted:
                    assert time.monotonic() < deadline
                    time.sleep(0.1)
                started = time.perf_counter()
                service(x)
                colds.append(time.perf_counter() - started)
            print(
                f"anypu cold start (a call at zero replicas to its answer, MLP):"
                f" median {statistics.median(colds):.2f} s of {[round(c, 2) for c in colds]}"
            )
            client.close()
        finally:
            cluster.close()


def _protocol_call(cluster: Cluster, deployment: str, x: torch.Tensor) -> Any:
    """A call of ``deployment`` by Triton's gRPC client through the scheduler's
    inference gateway (None: tritonclient is not installed)."""
    try:
        import tritonclient.grpc as triton
    except ImportError:
        print("tritonclient is not installed (pip install 'tritonclient[grpc]'): no OIP rows")
        return None
    client = triton.InferenceServerClient(cluster.address)
    tensor = triton.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x.numpy())
    headers = {"authorization": f"Bearer {cluster.token}"}

    def call() -> object:
        return client.infer(deployment, [tensor], headers=headers).as_numpy("output0")

    for _ in range(50):
        call()
    return call


def _http_port(cluster: Cluster) -> int:
    found = re.findall(r"dashboard on http://127\.0\.0\.1:(\d+)", cluster.log("scheduler"))
    return int(found[-1])


def _rest_call(port: int, token: str, deployment: str, x: torch.Tensor) -> Any:
    """A call of ``deployment`` over the protocol's REST, the input and outputs as binary
    tensors (Triton's extension), one kept-open connection per calling thread."""
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": list(x.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": x.numel() * 4},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    body = header + x.contiguous().numpy().tobytes()
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(header)),
    }
    return _poster(port, f"/v2/models/{deployment}/infer", body, headers)


def _rolling_update(
    client: Client, model: torch.nn.Module, x: torch.Tensor, seconds: float
) -> None:
    """Requests lost while a deployment of two replicas is deployed anew, under 100/s."""
    import copy

    client.deploy(model, "rolling", example_inputs=x, replicas=2)
    service = client.service("rolling")
    newer = copy.deepcopy(model)
    with torch.no_grad():
        for parameter in newer.parameters():
            parameter.add_(0.5)
    failed: list[BaseException] = []

    def call() -> None:
        try:
            service(x)
        except Exception as error:  # the count is the finding
            failed.append(error)

    started = time.monotonic()
    threading.Timer(
        1.0, lambda: client.deploy(newer, "rolling", example_inputs=x, replicas=2, wait_s=None)
    ).start()
    latencies = _open_loop(call, 100.0, max(seconds, 6.0))
    info = next(d for d in client.deployments() if d.name == "rolling")
    rolled = [e for e in info.events if f"version {info.version} ready on" in e]
    print(
        f"anypu rolling update under 100/s: {len(failed)} request(s) failed of"
        f" {len(latencies)} timed; p99 {percentile(latencies, 0.99) * 1e3:.1f} ms;"
        f" version {info.version}, {'rolled over' if rolled else 'NOT rolled over'} within"
        f" {time.monotonic() - started:.0f} s"
    )
    client.undeploy("rolling")


def _ray_call(handle: Any, x: torch.Tensor) -> object:
    return handle.remote(x).result()


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _ray_http_replica(model: torch.nn.Module, shape: tuple[int, ...]) -> Any:
    """The model behind Ray Serve's HTTP proxy: the request's body is the input's
    float32 bytes, the answer the output's (no JSON either way, like binary tensors)."""
    from ray import serve
    from starlette.responses import Response

    @serve.deployment(num_replicas=2, ray_actor_options={"num_cpus": 1})
    class HttpReplica:
        def __init__(self, module: Any) -> None:
            torch.set_num_threads(1)
            self.module = module.eval()

        async def __call__(self, request: Any) -> Response:
            body = await request.body()
            inputs = torch.frombuffer(bytearray(body), dtype=torch.float32).reshape(shape)
            with torch.inference_mode():
                output = self.module(inputs)
            return Response(output.numpy().tobytes(), media_type="application/octet-stream")

    return HttpReplica.bind(model)


def _raw_http_call(port: int, route: str, x: torch.Tensor) -> Any:
    """A POST of ``x``'s float32 bytes to ``route``, one kept-open connection per thread."""
    body = x.contiguous().numpy().tobytes()
    return _poster(port, route, body, {"Content-Type": "application/octet-stream"})


def _poster(port: int, path: str, body: bytes, headers: dict[str, str]) -> Any:
    """A POST of ``body`` to ``path`` on loopback, one kept-open connection per calling
    thread; warmed with 50 calls."""
    local = threading.local()

    def call() -> object:
        connection = getattr(local, "connection", None)
        if connection is None:
            connection = local.connection = http.client.HTTPConnection("127.0.0.1", port)
        connection.request("POST", path, body, headers)
        response = connection.getresponse()
        answer = response.read()
        assert response.status == 200, answer[:200]
        return answer

    for _ in range(50):
        call()
    return call


def _ray_serve(rates: list[float], seconds: float) -> None:
    try:
        import ray
        from ray import serve
    except ImportError:
        print("Ray Serve is not installed (pip install 'ray[serve]'): its rows are not run")
        return
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        for i, (name, (model, x)) in enumerate(_models().items()):

            @serve.deployment(num_replicas=2, ray_actor_options={"num_cpus": 1})
            class Replica:
                def __init__(self, module: Any) -> None:
                    torch.set_num_threads(1)
                    self.module = module.eval()

                def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
                    with torch.inference_mode():
                        return self.module(inputs)

            handle = serve.run(Replica.bind(model), name=f"model-{i}", route_prefix=None)
            for _ in range(50):
                handle.remote(x).result()
            call = functools.partial(_ray_call, handle, x)
            rows = [(rate, _open_loop(call, rate, seconds)) for rate in rates]
            _report("Ray Serve", name, rows)
            serve.delete(f"model-{i}")
            route = f"/model-{i}"
            serve.run(
                _ray_http_replica(model, tuple(x.shape)), name=f"http-{i}", route_prefix=route
            )
            by_http = _raw_http_call(port, route, x)
            rows = [(rate, _open_loop(by_http, rate, seconds)) for rate in rates]
            _report("Ray Serve, HTTP proxy (raw float32 body)", name, rows)
            serve.delete(f"http-{i}")
    finally:
        serve.shutdown()
        ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="50,100,200,400", help="requests a second")
    parser.add_argument("--seconds", type=float, default=8.0, help="per rate (8)")
    parser.add_argument("--only", choices=("anypu", "ray"), default=None)
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    print(machine())
    print("| system | model | rate | p50 | p99 | requests |")
    print("|---|---|---|---|---|---|")
    if args.only != "ray":
        _anypu(rates, args.seconds)
    if args.only != "anypu":
        _ray_serve(rates, args.seconds)


if __name__ == "__main__":
    main()
