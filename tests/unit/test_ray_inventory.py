"""A Ray cluster's node listing as devices, and the share of a Ray resource each
slice's actor claims (``ray.nodes()`` entries as Ray 2.x lists them)."""

from __future__ import annotations

import dataclasses

from anypu.agents._ray import actor_resources
from anypu.agents._ray_inventory import ASSUMED_MEMORY, alive_nodes, ray_node_devices
from anypu.devices import Device, with_shares, with_slices

HEAD = {
    "NodeID": "3f2a1c9d" + "0" * 48,
    "Alive": True,
    "NodeManagerAddress": "10.0.0.5",
    "Resources": {
        "CPU": 8.0,
        "memory": 32 * 2**30,
        "object_store_memory": 8 * 2**30,
        "node:10.0.0.5": 1.0,
        "node:__internal_head__": 1.0,
    },
    "Labels": {"ray.io/node-id": "3f2a1c9d" + "0" * 48},
}
GPU_NODE = {
    "NodeID": "9b7e44aa" + "1" * 48,
    "Alive": True,
    "NodeManagerAddress": "10.0.0.6",
    "Resources": {
        "CPU": 2.0,
        "GPU": 2.0,
        "memory": 64 * 2**30,
        "accelerator_type:A100": 1.0,
        "node:10.0.0.6": 1.0,
    },
    "Labels": {"ray.io/node-id": "9b7e44aa" + "1" * 48, "zone": "shop-7"},
}
PROBED_CPU = Device("cpu0", "cpu", "intel", "Xeon", 16 * 2**30, 0.4, "cpu", slices=4, threads=2)
PROBED_A100 = Device("gpu0", "gpu", "nvidia", "NVIDIA A100-SXM4-80GB", 80 * 2**30, 19.5, "cuda:0")


def test_a_head_node_offers_its_cpus_sliced_as_an_agent_slices_its_own():
    devices, notes = ray_node_devices(HEAD, [PROBED_CPU])
    assert notes == []
    (cpu,) = devices
    assert cpu.device_id == "3f2a1c9d-cpu0"
    assert (cpu.slices, cpu.threads) == (3, 2)  # 8 cores: one kept for the node
    assert cpu.tflops == 0.3  # the probed 0.05 a thread, × 6 threads
    assert cpu.memory_bytes == 32 * 2**30  # Ray's memory resource, not the probe's
    assert cpu.extra["ray_resource"] == "CPU"
    assert cpu.extra["ray_node_ip"] == "10.0.0.5"


def test_probed_gpus_are_offered_as_found_with_where_they_are_in_ray():
    devices, notes = ray_node_devices(GPU_NODE, [PROBED_CPU, PROBED_A100])
    gpus = [d for d in devices if d.kind == "gpu"]
    assert [d.device_id for d in gpus] == ["9b7e44aa-gpu0", "9b7e44aa-gpu1"]
    real, declared = gpus
    assert not real.simulated and real.memory_bytes == 80 * 2**30
    assert real.extra["ray_accelerator_type"] == "A100"
    assert real.extra["label.zone"] == "shop-7"
    # Ray declares two; the node's probes found one: the other is simulated, said once.
    assert declared.simulated and declared.torch_device == "cpu"
    assert declared.memory_bytes == 80 * 2**30  # its probed sibling's
    assert len(notes) == 1 and "9b7e44aa-gpu1" in notes[0] and "probed sibling" in notes[0]


def test_declared_accelerators_without_probes_take_the_table_or_say_what_was_assumed():
    devices, notes = ray_node_devices(GPU_NODE)
    gpu = next(d for d in devices if d.kind == "gpu")
    assert gpu.simulated and gpu.vendor == "nvidia" and gpu.model == "A100"
    assert gpu.tflops == 19.5  # fp32, from the NVIDIA table
    assert gpu.memory_bytes == ASSUMED_MEMORY and gpu.extra["assumed"] == "memory"
    npu_node = {
        "NodeID": "77" * 28,
        "Alive": True,
        "Resources": {"NPU": 1.0, "accelerator_type:Ascend910B": 1.0},
    }
    (npu,) = ray_node_devices(npu_node)[0]
    assert (npu.kind, npu.vendor, npu.model) == ("npu", "huawei", "Ascend910B")
    assert npu.extra["assumed"] == "memory,tflops"
    amd = {"NodeID": "55" * 28, "Alive": True, "Resources": {"GPU": 1.0}}
    amd["Resources"]["accelerator_type:AMD-Instinct-MI300X"] = 1.0
    (gpu,) = ray_node_devices(amd)[0]
    assert gpu.vendor == "amd"
    assert any("CPU was not probed" in n for n in ray_node_devices(HEAD)[1])


def test_dead_nodes_are_not_offered_and_nodes_are_listed_in_a_stable_order():
    dead = {**GPU_NODE, "Alive": False}
    assert alive_nodes([GPU_NODE, HEAD, dead]) == [HEAD, GPU_NODE]
    assert alive_nodes([dead]) == []


def test_each_slice_s_actor_claims_its_share_of_the_device_s_ray_resource():
    devices, _ = ray_node_devices(GPU_NODE, [PROBED_CPU, PROBED_A100])
    cpu, gpu = devices[0], devices[1]
    assert actor_resources(cpu) == {"num_cpus": 1.0, "num_gpus": 0}
    assert actor_resources(gpu) == {"num_cpus": 0, "num_gpus": 1.0}
    assert actor_resources(with_slices(gpu, 4)) == {"num_cpus": 0, "num_gpus": 0.25}
    assert actor_resources(with_shares(gpu, 8))["num_gpus"] == 0.125
    npu = dataclasses.replace(gpu, kind="npu", extra={**gpu.extra, "ray_resource": "NPU"})
    assert actor_resources(with_slices(npu, 2)) == {
        "num_cpus": 0,
        "num_gpus": 0,
        "resources": {"NPU": 0.5},
    }


def test_a_ray_address_nothing_answers_at_is_refused_at_once_with_what_to_do():
    import socket

    import pytest

    from anypu.agents._ray import RayCluster
    from anypu.errors import ConfigError

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with pytest.raises(ConfigError, match="no Ray cluster answers at 127.0.0.1:.*ray start --head"):
        RayCluster(f"127.0.0.1:{port}")
    with pytest.raises(ConfigError, match="must be the head's HOST:PORT"):
        RayCluster("head-without-port")


def test_a_slice_actor_s_folder_is_its_own_and_dead_actors_folders_go(tmp_path, monkeypatch):
    import os
    import subprocess
    import sys
    import tempfile

    from anypu.agents._ray import _actor_folder

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    base = tmp_path / "anypu-ray"
    (base / f"actor-{gone.stdout.strip()}").mkdir(parents=True)  # killed: no clean-up ran
    (base / f"actor-{gone.stdout.strip()}" / "digest.part").write_bytes(b"half")
    (base / f"actor-{os.getppid()}").mkdir()  # alive
    folder = _actor_folder()
    assert folder == str(base / f"actor-{os.getpid()}")
    assert sorted(p.name for p in base.iterdir()) == sorted(
        [f"actor-{os.getpid()}", f"actor-{os.getppid()}"]
    )
