"""The Open Inference Protocol (v2) at the scheduler, spoken by a plain HTTP client written
from the specification (kserve/open-inference-protocol ``inference_rest.md``, Triton's
binary tensor extension), not from the server's code. Real processes on loopback: a
scheduler with its HTTP port and an agent taking direct calls, a deployment made with
the SDK."""

from __future__ import annotations

import http.client
import json
import re
import struct
import time

import pytest
import torch

from anypu.comm import INFO_TTL_S
from anypu.errors import AnypuError
from anypu.sdk import Client
from anypu.sdk._transport import GrpcTransport
from tests.cluster import Cluster


class Scale(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"y": x * 2, "best": x.argmax(dim=-1)}


X = torch.tensor([[1.0, 5.0, 2.0, 0.5], [3.0, -1.0, 0.0, 4.0]])


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    cluster = Cluster(tmp_path_factory.mktemp("oip"), **{"http-port": 0})
    try:
        cluster.add_agent("direct-1", "edge", direct=True)
        # A slice for a second deployment: a replica's slice is its deployment's alone.
        cluster.add_agent("direct-2", "edge", direct=True)
        client = Client(GrpcTransport(cluster.address, cluster.token))
        cluster.wait_nodes(client, 2)
        info = client.deploy(Scale().eval(), "scale", example_inputs=X, replicas=1)
        assert len(info.ready) == 1, info
        yield cluster, _http_port(cluster)
        client.close()
    finally:
        cluster.close()


def _http_port(cluster: Cluster) -> int:
    found = re.findall(r"dashboard on http://127\.0\.0\.1:(\d+)", cluster.log("scheduler"))
    assert found, "the scheduler printed no dashboard address"
    return int(found[-1])


def _request(
    served,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    token: bool = True,
) -> tuple[int, dict[str, str], bytes]:
    cluster, port = served
    sent = dict(headers or {})
    if token:
        sent["Authorization"] = f"Bearer {cluster.token}"
    if body:
        sent.setdefault("Content-Type", "application/json")
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request(method, path, body=body or None, headers=sent)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def test_health_server_and_model_metadata(served):
    for path, key in (("/v2/health/live", "live"), ("/v2/health/ready", "ready")):
        status, _, body = _request(served, "GET", path)
        assert status == 200 and json.loads(body)[key] is True
    status, _, body = _request(served, "GET", "/v2")
    server = json.loads(body)
    assert status == 200 and server["name"] and server["version"]
    assert "binary_tensor_data" in server["extensions"]
    status, _, body = _request(served, "GET", "/v2/models/scale")
    model = json.loads(body)
    assert status == 200 and model["name"] == "scale" and model["platform"]
    assert model["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [2, 4]}]
    assert {o["name"]: (o["datatype"], o["shape"]) for o in model["outputs"]} == {
        "y": ("FP32", [2, 4]),
        "best": ("INT64", [2]),
    }
    status, _, body = _request(served, "GET", "/v2/models/scale/ready")
    assert status == 200 and json.loads(body) == {"name": "scale", "ready": True}


def test_a_json_inference_request_gets_the_model_s_outputs(served):
    request = {
        "id": "42",
        "inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": X.tolist()}],
    }
    status, headers, body = _request(
        served, "POST", "/v2/models/scale/infer", json.dumps(request).encode()
    )
    assert status == 200, body
    assert headers["content-type"].startswith("application/json")
    answer = json.loads(body)
    assert answer["model_name"] == "scale" and answer["id"] == "42"
    outputs = {o["name"]: o for o in answer["outputs"]}
    assert outputs["y"]["datatype"] == "FP32" and outputs["y"]["shape"] == [2, 4]
    assert outputs["y"]["data"] == (X * 2).reshape(-1).tolist()
    assert outputs["best"] == {"name": "best", "datatype": "INT64", "shape": [2], "data": [1, 3]}

    only = dict(request, outputs=[{"name": "best"}])
    _, _, body = _request(served, "POST", "/v2/models/scale/infer", json.dumps(only).encode())
    assert [o["name"] for o in json.loads(body)["outputs"]] == ["best"]


def test_binary_tensors_in_and_out(served):
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": [2, 4],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": 32},
                }
            ],
            "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
        }
    ).encode()
    body = header + struct.pack("<8f", *X.reshape(-1).tolist())
    status, headers, answer = _request(
        served,
        "POST",
        "/v2/models/scale/infer",
        body,
        {
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": str(len(header)),
        },
    )
    assert status == 200, answer
    length = int(headers["inference-header-content-length"])
    described = json.loads(answer[:length])["outputs"]
    assert described[0]["name"] == "y" and described[0]["parameters"]["binary_data_size"] == 32
    values = struct.unpack("<8f", answer[length:])
    assert list(values) == (X * 2).reshape(-1).tolist()


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "says"),
    [
        ("POST", "/v2/models/nope/infer", b"{}", 404, "no model 'nope' is deployed"),
        ("POST", "/v2/models/scale/versions/3/infer", b"{}", 404, "has no version '3'"),
        ("GET", "/v2/models/scale/infer", b"", 405, "accepts POST"),
        ("POST", "/v2/models/scale/infer", b"{not json", 400, "not JSON"),
        (
            "POST",
            "/v2/models/scale/infer",
            json.dumps(
                {
                    "inputs": [
                        {"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}
                    ]
                }
            ).encode(),
            400,
            "FP32 [2, 4] (the shapes it was deployed with), got FP32 [1, 4]",
        ),
        (
            "POST",
            "/v2/models/scale/infer",
            json.dumps(
                {"inputs": [{"name": "z", "shape": [1], "datatype": "FP32", "data": [1]}]}
            ).encode(),
            400,
            "has no input 'z'",
        ),
    ],
)
def test_bad_requests_get_the_protocol_s_error_shape(served, method, path, body, status, says):
    got, _, answer = _request(served, method, path, body)
    assert got == status, answer
    assert says in json.loads(answer)["error"]


def test_an_inference_needs_the_token_and_a_bounded_body(served):
    request = {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": X.tolist()}]}
    status, headers, body = _request(
        served, "POST", "/v2/models/scale/infer", json.dumps(request).encode(), token=False
    )
    assert status == 401 and "Bearer" in json.loads(body)["error"]
    cluster, port = served
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.putrequest("POST", "/v2/models/scale/infer")
        connection.putheader("Authorization", f"Bearer {cluster.token}")
        connection.putheader("Content-Length", str(64 << 20))
        connection.endheaders()  # the body is never sent: refused on its length
        response = connection.getresponse()
        assert response.status == 413 and "at most" in json.loads(response.read())["error"]
    finally:
        connection.close()
    # The server keeps serving afterwards, and counted what it answered.
    assert _request(served, "GET", "/v2/health/ready")[0] == 200
    request = {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": X.tolist()}]}
    infer = _request(served, "POST", "/v2/models/scale/infer", json.dumps(request).encode())
    assert infer[0] == 200
    time.sleep(INFO_TTL_S + 0.1)  # the next listing tells the scheduler the calls' times
    infer = _request(served, "POST", "/v2/models/scale/infer", json.dumps(request).encode())
    assert infer[0] == 200
    _, _, metrics = _request(served, "GET", "/metrics")
    text = metrics.decode()
    assert 'anypu_deployment_replicas{deployment="scale",state="ready"} 1.0' in text
    assert 'anypu_inference_requests_total{code="200",model="scale",protocol="http"}' in text
    assert 'anypu_inference_duration_seconds_count{model="scale",protocol="http"}' in text
    assert re.search(r'anypu_deployment_call_seconds_count\{deployment="scale"\} [1-9]', text)
    # The dashboard shows the protocol's calls end to end at the scheduler.
    _, _, listed = _request(served, "GET", "/api/v1/deployments")
    (scale,) = [d for d in json.loads(listed) if d["name"] == "scale"]
    assert scale["gateway_calls_per_s"] > 0 and 0 < scale["gateway_p50_s"] <= scale["gateway_p99_s"]


# ---------------------------------------------------------------------- over gRPC
# Triton's own gRPC client (tritonclient, generated from Triton's grpc_service.proto),
# so the requests come from the protocol's published messages, not from ours.


def _triton(served):
    import tritonclient.grpc as triton

    cluster, _ = served
    return triton, triton.InferenceServerClient(cluster.address)


def _bearer(served) -> dict[str, str]:
    return {"authorization": f"Bearer {served[0].token}"}


def test_a_triton_grpc_client_reads_health_and_metadata(served):
    triton, client = _triton(served)
    try:
        assert client.is_server_live() and client.is_server_ready()  # probes: no token
        server = client.get_server_metadata(headers=_bearer(served))
        assert server.name == "anypu" and "binary_tensor_data" in server.extensions
        assert client.is_model_ready("scale", headers=_bearer(served))
        model = client.get_model_metadata("scale", headers=_bearer(served))
        assert model.name == "scale" and list(model.versions) == ["1"]
        assert [(i.name, i.datatype, list(i.shape)) for i in model.inputs] == [
            ("x", "FP32", [2, 4])
        ]
        assert {o.name: o.datatype for o in model.outputs} == {"y": "FP32", "best": "INT64"}
        assert client.is_model_ready("scale", "1", headers=_bearer(served))
    finally:
        client.close()


def test_a_triton_grpc_client_infers_with_raw_tensors(served):
    triton, client = _triton(served)
    try:
        x = triton.InferInput("x", [2, 4], "FP32")
        x.set_data_from_numpy(X.numpy())
        result = client.infer(
            "scale",
            [x],
            request_id="7",
            outputs=[triton.InferRequestedOutput("best")],
            headers=_bearer(served),
        )
        assert result.get_response().id == "7"
        assert result.as_numpy("best").tolist() == [1, 3]
        assert result.as_numpy("y") is None  # only the output asked for
        everything = client.infer("scale", [x], headers=_bearer(served))
        assert everything.as_numpy("y").tolist() == (X * 2).tolist()
    finally:
        client.close()


def test_typed_contents_get_typed_contents_back(served):
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    cluster, _ = served
    with grpc.insecure_channel(cluster.address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        request = service_pb2.ModelInferRequest(model_name="scale", id="typed")
        tensor = request.inputs.add(name="x", datatype="FP32", shape=[2, 4])
        tensor.contents.fp32_contents.extend(X.reshape(-1).tolist())
        response = stub.ModelInfer(request, metadata=tuple(_bearer(served).items()), timeout=60)
    assert not response.raw_output_contents and response.id == "typed"
    outputs = {o.name: o for o in response.outputs}
    assert list(outputs["y"].contents.fp32_contents) == (X * 2).reshape(-1).tolist()
    assert list(outputs["best"].contents.int64_contents) == [1, 3]
    assert list(outputs["best"].shape) == [2]


@pytest.mark.parametrize(
    ("model", "shape", "metadata", "code", "says"),
    [
        ("nope", [2, 4], True, "NOT_FOUND", "no model 'nope' is deployed"),
        ("scale", [4, 2], True, "INVALID_ARGUMENT", "the shapes it was deployed with"),
        ("scale", [2, 4], False, "UNAUTHENTICATED", "Bearer"),
    ],
)
def test_grpc_refusals_carry_the_protocol_s_codes(served, model, shape, metadata, code, says):
    triton, client = _triton(served)
    try:
        x = triton.InferInput("x", shape, "FP32")
        x.set_data_from_numpy(X.reshape(shape).numpy())
        with pytest.raises(triton.InferenceServerException) as refused:
            client.infer(model, [x], headers=_bearer(served) if metadata else None)
        assert refused.value.status() == f"StatusCode.{code}"
        assert says in refused.value.message()
        assert client.is_server_ready()  # and it keeps serving
    finally:
        client.close()


def test_a_caller_token_calls_its_deployment_and_nothing_else(served):
    import tritonclient.grpc as triton

    cluster, _ = served
    secret = "caller-token-for-guarded-only"
    admin = Client(GrpcTransport(cluster.address, cluster.token))
    info = admin.deploy(Scale().eval(), "guarded", example_inputs=X, caller_token=secret)
    try:
        assert info.caller_token and len(info.ready) == 1
        body = json.dumps(
            {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": X.tolist()}]}
        ).encode()
        bearer = {"Authorization": f"Bearer {secret}"}
        ok = _request(served, "POST", "/v2/models/guarded/infer", body, bearer, token=False)
        assert ok[0] == 200, ok
        other = _request(served, "POST", "/v2/models/scale/infer", body, bearer, token=False)
        assert other[0] == 401 and "refused the token" in json.loads(other[2])["error"]
        client = triton.InferenceServerClient(cluster.address)
        try:
            x = triton.InferInput("x", [2, 4], "FP32")
            x.set_data_from_numpy(X.numpy())
            answer = client.infer("guarded", [x], headers={"authorization": f"Bearer {secret}"})
            assert answer.as_numpy("best").tolist() == [1, 3]
        finally:
            client.close()
        # It is not the scheduler's token: the SDK's API refuses it.
        stranger = Client(GrpcTransport(cluster.address, secret))
        with pytest.raises(AnypuError, match="refused the token"):
            stranger.deployments()
        stranger.close()
    finally:
        admin.undeploy("guarded")
        admin.close()


def test_over_tls_a_triton_client_trusting_the_cluster_ca_infers(tmp_path):
    import tritonclient.grpc as triton

    cluster = Cluster(tmp_path, tls=True)
    try:
        cluster.add_agent("direct-tls", "edge", direct=True)
        with cluster.connected_client(1) as admin:
            admin.deploy(Scale().eval(), "scale", example_inputs=X)
        client = triton.InferenceServerClient(
            cluster.address,
            ssl=True,
            root_certificates=str(cluster.state_dir / "tls" / "ca.pem"),
            channel_args=[("grpc.ssl_target_name_override", "anypu-scheduler")],
        )
        try:
            x = triton.InferInput("x", [2, 4], "FP32")
            x.set_data_from_numpy(X.numpy())
            answer = client.infer(
                "scale", [x], headers={"authorization": f"Bearer {cluster.token}"}
            )
            assert answer.as_numpy("y").tolist() == (X * 2).tolist()
        finally:
            client.close()
    finally:
        cluster.close()
