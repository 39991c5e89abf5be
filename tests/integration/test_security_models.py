"""Malicious models: artifacts carrying a pickle payload are refused and the payload never runs.

Each artifact below smuggles a pickle whose unpickling creates a marker file. It is
uploaded and submitted through the real path (SDK transport → scheduler → agent process
→ worker process); the job must fail with a clear error and the marker must never appear.
A control shows the payload is live: plain ``pickle.loads`` does create the file.
"""

from __future__ import annotations

import io
import json
import pickle
import re
import time
import warnings
import zipfile
from pathlib import Path

import pytest
import torch

from anypu._codec import encode
from anypu.agents._artifact import ArtifactError, load_artifact
from anypu.protos import messages as m
from anypu.sdk import Client
from anypu.sdk._export import Artifact, export_model
from anypu.sdk._transport import GrpcTransport
from tests.cluster import Cluster

CPU_NODE = "devices:\n  - {kind: cpu, vendor: test, model: host, memory: 2GiB, tflops: 0.1}\n"
CPU_NODE += "include_host: false\n"


class _Touch:
    """Unpickling this opens (so creates) ``path``: a stand-in for any code execution."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _rewrite(payload: bytes, change) -> bytes:
    """Copy a zip, letting ``change(relative_name, data)`` replace members' bytes."""
    source = zipfile.ZipFile(io.BytesIO(payload))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as target:
        for info in source.infolist():
            root, _, rel = info.filename.partition("/")
            target.writestr(info.filename, change(rel, source.read(info.filename)))
    return out.getvalue()


def _exported() -> bytes:
    model = torch.nn.Linear(4, 2)
    artifact = export_model(model, (torch.randn(1, 4),))
    assert artifact.format == "torch.export"
    from anypu._codec import unpack_envelope

    return bytes(unpack_envelope(artifact.data)[1])


def evil_artifacts(marker: Path) -> dict[str, Artifact]:
    evil = pickle.dumps(_Touch(marker))
    exported = _exported()

    def sample_inputs(rel: str, data: bytes) -> bytes:
        return evil if rel == "data/sample_inputs/model.pt" else data

    def pickled_weight(rel: str, data: bytes) -> bytes:
        if rel == "data/weights/model_weights_config.json":
            config = json.loads(data)
            for meta in config["config"].values():
                meta["use_pickle"] = True
            return json.dumps(config).encode()
        return evil if rel.startswith("data/weights/weight_") else data

    scripted = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(torch.nn.Linear(4, 2)), scripted)

    def script_data(rel: str, data: bytes) -> bytes:
        return evil if rel == "data.pkl" else data

    kinds = frozenset({"cpu"})
    return {
        "export-sample-inputs": Artifact.build(
            "torch.export", kinds, _rewrite(exported, sample_inputs)
        ),
        "export-pickled-weight": Artifact.build(
            "torch.export", kinds, _rewrite(exported, pickled_weight)
        ),
        "torchscript-data-pkl": Artifact.build(
            "torchscript", kinds, _rewrite(scripted.getvalue(), script_data)
        ),
        "raw-pickle": Artifact.build("pickle", kinds, evil),
    }


def test_the_payload_is_live_when_unpickled_naively(tmp_path):
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(_Touch(control)))
    assert control.exists()


def test_loading_refuses_every_pickle_carrier(tmp_path):
    marker = tmp_path / "pwned"
    for name, artifact in evil_artifacts(marker).items():
        with pytest.raises(ArtifactError):
            load_artifact(artifact.data)
        assert not marker.exists(), f"{name}: the payload ran"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("models"))
    c.add_agent("cpu-1", "edge", CPU_NODE)
    try:
        yield c
    finally:
        c.close()


def test_a_malicious_model_fails_its_job_and_never_runs(cluster, tmp_path):
    marker = tmp_path / "pwned"
    client = Client(GrpcTransport(cluster.address, cluster.token))
    try:
        cluster.wait_nodes(client, 1)
        inputs = encode((torch.randn(1, 4),))
        for name, artifact in evil_artifacts(marker).items():
            client.transport.put_blob(artifact.digest, artifact.data)
            request = m.SubmitRequest(
                artifact_digest=artifact.digest,
                inputs=inputs,
                device_kinds=("cpu",),
                max_retries=0,
                name=name,
            )
            info, _ = client.transport.submit(request)
            info, _, timed_out = client.transport.wait(info.job_id, 60)
            assert not timed_out, name
            assert info.state == "failed", (name, info)
            text = f"{info.outcome.error_type}: {info.outcome.message}"
            assert re.search(r"pickl|refused|unknown|does not load", text, re.I), (name, text)
            assert not marker.exists(), f"{name}: the payload ran on the agent"
        time.sleep(0.2)
        assert not marker.exists()
        # The node is still healthy: a real model runs there afterwards.
        model = torch.nn.Linear(4, 2)
        x = torch.randn(3, 4)
        torch.testing.assert_close(client.run(model, x), model(x))
    finally:
        client.close()
