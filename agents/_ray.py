"""Jobs run as Ray actors: an agent standing for a whole Ray cluster (``--backend ray``).

The agent connects to the cluster as a Ray driver (``ray.init(address=…)``) and offers
its nodes' devices (``_ray_inventory``). Each slice of a device is one Ray actor
(``SliceActor``) pinned to the device's Ray node (``NodeAffinitySchedulingStrategy``,
not soft), named ``<device>.<slice>.<generation>.<random>`` in namespace ``anypu``, that claims the slice's share of the device's Ray resource — ``num_gpus=1/N``
for one of N slices or seats of a GPU, ``resources={"NPU": 1/N}`` for an NPU, the slice's
threads as ``num_cpus`` for a CPU — so Ray's own accounting and device visibility
(``CUDA_VISIBLE_DEVICES``, ``ASCEND_RT_VISIBLE_DEVICES``) hold as for any Ray user. An
actor keeps the models it ran loaded (the same ``ModelRunner`` as a worker process),
so its warm models are reported and preferred as an agent's are.

A job goes to its slice's actor with its inputs; the model's artifact travels once per
actor, through Ray's object store (``ray.put``, kept per digest), only when the actor
does not hold it. Ray's failures become the outcomes of the agent's own workers: an
actor that died or whose node was lost is ``WorkerDied`` (retried elsewhere by the
scheduler) and the slice starts a fresh actor; a job past its timeout, or cancelled,
kills its actor (``ray.kill``) as a worker process is killed. ``RayInventory`` lists the
cluster every ``WATCH_EVERY_S``; when nodes come or go the agent offers the new
inventory (``Agent.replace_devices``: it re-joins the scheduler with it).

Memory on a shared device is Ray's to enforce (its memory monitor, the vendor's
visibility): a slice's actor is not given the worker's ``RLIMIT_DATA`` cap, which would
also bound Ray's own allocations in the actor's process.
"""

from __future__ import annotations

import logging
import os
import queue
import secrets
import shutil
import socket
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from anypu.agents._inventory import InventoryChanged
from anypu.agents._ray_inventory import alive_nodes, probe_node, ray_node_devices
from anypu.agents._runner import ModelRunner
from anypu.agents._workers import SliceJob, _Slice
from anypu.devices import Device
from anypu.errors import ConfigError
from anypu.protos.messages import FailureCode, JobResult, Outcome

__all__ = ["RayCluster", "RaySliceWorker", "SliceActor", "actor_resources"]

log = logging.getLogger("anypu.agent")

#: How often the agent lists the Ray cluster's nodes.
WATCH_EVERY_S = 2.0
#: How long a new node's probe task may take before its devices are offered unprobed.
PROBE_TIMEOUT_S = 120.0
#: Artifacts kept in Ray's object store for actors that do not hold them yet.
ARTIFACTS_KEPT = 16


def actor_resources(device: Device) -> dict[str, Any]:
    """The Ray resources one slice's actor claims: its share of the device's resource."""
    resource = device.extra.get("ray_resource", "CPU")
    share = 1.0 / max(1, device.slices)  # a slice's, or a seat's of a shared device
    if resource == "CPU":
        return {"num_cpus": float(device.threads), "num_gpus": 0}
    claim: dict[str, Any] = {"num_cpus": 0}
    if resource == "GPU":
        claim["num_gpus"] = share
    else:
        claim["num_gpus"] = 0
        claim["resources"] = {resource: share}
    return claim


class SliceActor:
    """One slice's models, in a Ray worker process on the device's node (a Ray actor)."""

    def __init__(self, device: Device, threads: int) -> None:
        import torch

        torch.set_num_threads(max(1, threads))
        torch_device = "cpu"
        if not device.simulated and device.kind == "gpu" and torch.cuda.is_available():
            torch_device = "cuda:0"  # Ray narrowed CUDA_VISIBLE_DEVICES to its GPU
        elif not device.simulated and device.kind != "cpu":
            from anypu.devices import worker_torch_device

            torch_device = worker_torch_device(device)
        where = f"{device.device_id} (Ray node {device.extra.get('ray_node_id', '')[:8]})"
        self.runner = ModelRunner(torch_device, where=where, device=device)
        self.folder = _actor_folder()

    def ready(self) -> int:
        return os.getpid()

    def where(self) -> dict[str, Any]:
        """The Ray node this actor runs on and the resources Ray gave it (for operators
        and tests: ``ray.get_actor(name, namespace="anypu").where.remote()``)."""
        import ray

        context = ray.get_runtime_context()
        return {"node_id": context.get_node_id(), "resources": context.get_assigned_resources()}

    def execute(
        self, digest: str, artifact: list[Any], inputs: bytes, host_memory: bool
    ) -> tuple[Outcome, bytes, list[str]]:
        """Run model ``digest`` on ``inputs``; ``artifact``: [its object ref], fetched
        only when the model is not loaded here (a list, so Ray does not fetch it first)."""
        import ray

        path = os.path.join(self.folder, digest)
        if digest not in self.runner.models and not os.path.exists(path):
            data = ray.get(artifact[0])
            with open(path + ".part", "wb") as out:
                out.write(data)
            os.replace(path + ".part", path)
        outcome, outputs = self.runner.execute(digest, path, inputs, host_memory=host_memory)
        if digest in self.runner.models and os.path.exists(path):
            os.remove(path)  # loaded: fetched again from the object store if evicted
        return outcome, outputs, self.runner.warm


def _actor_folder() -> str:
    """A folder of this actor's own for artifacts while they load, named by its pid; the
    folders of actors no longer alive on this node (``ray.kill`` runs no clean-up) are
    removed first."""
    base = os.path.join(tempfile.gettempdir(), "anypu-ray")
    os.makedirs(base, exist_ok=True)
    for name in os.listdir(base):
        pid = name.rpartition("-")[2]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(os.path.join(base, name), ignore_errors=True)
    folder = os.path.join(base, f"actor-{os.getpid()}")
    os.makedirs(folder, exist_ok=True)
    return folder


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: alive, and not ours to clean
    return True


class RayCluster:
    """The agent's Ray driver: the cluster's inventory, artifacts in its object store, and
    the actor class its slices start."""

    def __init__(self, address: str, namespace: str = "anypu") -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError(
                "--backend ray needs Ray: pip install 'ray[default]' (the version your"
                " cluster runs)"
            ) from None
        self.ray = ray
        self.address = address
        _check_reachable(address)
        try:
            ray.init(
                address=address,
                namespace=namespace,
                log_to_driver=False,
                ignore_reinit_error=True,
                logging_level=logging.WARNING,
            )
        except ConnectionError as error:
            raise ConfigError(
                f"could not connect to the Ray cluster at {address!r} ({error}): give"
                " --ray-address as the head's GCS address (HOST:6379, what `ray start --head`"
                " printed) or 'auto' on a node of the cluster"
            ) from None
        self.actor_class = ray.remote(SliceActor)
        self._probe = ray.remote(num_cpus=0)(probe_node)
        #: How the agent shares each device (``--slices``, ``--seats``) on every inventory.
        self.shape: Callable[[list[Device]], list[Device]] = lambda found: found
        self._probed: dict[str, list[Device]] = {}
        self._artifacts: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._nudged = threading.Event()
        # Ray resolves futures in its own threads, where calling Ray (a new actor) or
        # waiting on the agent's lock hung the driver: answers are handled here instead.
        self._answers: queue.SimpleQueue[tuple[Callable[..., None], tuple[Any, ...]]] = (
            queue.SimpleQueue()
        )
        threading.Thread(target=self._answer_loop, name="anypu-ray-answers", daemon=True).start()

    def when_done(self, ref: Any, then: Callable[..., None], *args: Any) -> None:
        """Call ``then(*args, future)`` in the agent's own thread once ``ref`` resolves."""
        ref.future().add_done_callback(lambda future: self.later(then, *args, future))

    def later(self, then: Callable[..., None], *args: Any) -> None:
        """Call ``then(*args)`` in the answers' thread (not the caller's, which holds locks)."""
        self._answers.put((then, args))

    def _answer_loop(self) -> None:
        while True:
            then, args = self._answers.get()
            try:
                then(*args)
            except Exception:  # one answer's failure must not stop the others'
                log.exception("handling a Ray actor's answer failed")

    # -------------------------------------------------------------- inventory

    def node_ids(self) -> list[str]:
        return [str(n["NodeID"]) for n in alive_nodes(self.ray.nodes())]

    def devices(self) -> list[Device]:
        """Every alive node's devices, probing nodes not seen before (in parallel)."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        nodes = alive_nodes(self.ray.nodes())
        new = [n for n in nodes if str(n["NodeID"]) not in self._probed]
        pending = {
            str(n["NodeID"]): self._probe.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(str(n["NodeID"]), soft=False)
            ).remote()
            for n in new
        }
        for node_id, ref in pending.items():
            try:
                self._probed[node_id] = self.ray.get(ref, timeout=PROBE_TIMEOUT_S)
            except Exception as error:  # a node that cannot probe still offers what Ray says
                log.warning("Ray node %s could not probe its devices: %s", node_id[:8], error)
                self._probed[node_id] = []
        alive = {str(n["NodeID"]) for n in nodes}
        self._probed = {k: v for k, v in self._probed.items() if k in alive}
        devices: list[Device] = []
        for node in nodes:
            found, notes = ray_node_devices(node, self._probed[str(node["NodeID"])])
            for note in notes:
                log.info("%s", note)
            devices += found
        return devices

    # -------------------------------------------------------------- artifacts

    def artifact(self, digest: str, path: str) -> Any:
        """The object ref holding the artifact ``digest`` (read from ``path`` once)."""
        with self._lock:
            ref = self._artifacts.get(digest)
            if ref is not None:
                self._artifacts.move_to_end(digest)
                return ref
        with open(path, "rb") as artifact:
            ref = self.ray.put(artifact.read())
        with self._lock:
            self._artifacts[digest] = ref
            while len(self._artifacts) > ARTIFACTS_KEPT:
                self._artifacts.popitem(last=False)
        return ref

    def watch(self, stop: threading.Event, changed: InventoryChanged) -> None:
        """Call ``changed(devices, why)`` whenever the cluster's alive nodes change."""
        known = set(self.node_ids())
        while not stop.is_set():
            self._nudged.wait(WATCH_EVERY_S)
            self._nudged.clear()
            if stop.is_set():
                return
            try:
                now = set(self.node_ids())
                if now == known:
                    continue
                gone, joined = sorted(known - now), sorted(now - known)
                why = ", ".join(
                    [f"Ray node {n[:8]} joined" for n in joined]
                    + [f"Ray node {n[:8]} left" for n in gone]
                )
                changed(self.shape(self.devices()), why)
                known = now
            except Exception:  # the cluster unreachable a while: keep the last inventory
                log.warning("could not list the Ray cluster's nodes", exc_info=True)

    def nudge(self) -> None:
        """List the cluster now (an actor failed: its node may have gone)."""
        self._nudged.set()

    def close(self) -> None:
        self.ray.shutdown()


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Refuse a HOST:PORT nothing answers at: Ray's driver would wait on it for minutes."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        if address in ("auto", "local") or address.startswith("ray://"):
            return
        raise ConfigError(
            f"--ray-address {address!r} must be the head's HOST:PORT (its GCS, 6379 unless"
            " `ray start --head --port` said otherwise) or 'auto' on a node of the cluster"
        )
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as error:
        raise ConfigError(
            f"no Ray cluster answers at {address} ({error}): start one (`ray start --head"
            " --port 6379`), or give --ray-address as the address its head printed"
        ) from None


class RaySliceWorker(_Slice):
    """A slice whose jobs run in a Ray actor on the device's Ray node."""

    def __init__(
        self,
        device: Device,
        slice_index: int,
        on_answer: Callable[[JobResult], None],
        cluster: RayCluster,
    ) -> None:
        super().__init__(device, slice_index, on_answer)
        self.cluster = cluster
        self._actor: Any = None
        self._generation = 0
        self._spawn()

    def _spawn(self) -> None:
        """Start this slice's actor (caller holds the lock, or none is needed yet)."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self._generation += 1
        generation = self._generation
        self._ready.clear()
        node_id = self.device.extra.get("ray_node_id", "")
        self._actor = self.cluster.actor_class.options(
            name=f"{self.device.device_id}.{self.slice_index}.{generation}.{secrets.token_hex(3)}",
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
            max_restarts=0,
            **actor_resources(self.device),
        ).remote(self.device, self.device.threads)
        self.cluster.when_done(self._actor.ready.remote(), self._started, generation)

    def _started(self, generation: int, future: Any) -> None:
        error = future.exception()
        if generation != self._generation:
            return
        if error is not None:
            log.warning(
                "the Ray actor of %s slice %d did not start: %s",
                self.device.device_id,
                self.slice_index,
                error,
            )
        with self._lock:
            self._ready.set()  # a dead actor answers its jobs as failures, not silence
            if self.running is None:
                self._start_next()

    def _dispatch(self, job: SliceJob) -> bool:
        try:
            artifact = self.cluster.artifact(job.digest, job.artifact_path)
        except OSError as error:
            self._answer_later(job, FailureCode.ARTIFACT_UNAVAILABLE, str(error))
            return True
        generation = self._generation
        ref = self._actor.execute.remote(
            job.digest, [artifact], job.inputs, self.device.holds_host_memory
        )
        self.cluster.when_done(ref, self._done, job, generation)
        return True

    def _answer_later(self, job: SliceJob, code: FailureCode, message: str) -> None:
        # Dispatched under the slice's lock: the answer goes out once it is released.
        self.cluster.later(self._finish, self._failure(job, code, message), self.warm)

    def _done(self, job: SliceJob, generation: int, future: Any) -> None:
        error = future.exception()
        if error is None:
            outcome, outputs, warm = future.result()
            answer = JobResult(
                job.job_id, job.attempt, outcome, outputs, device_id=self.device.device_id
            )
            self._finish(answer, tuple(warm))
            return
        message = (
            f"the Ray actor running it on {self.device.device_id} (Ray node"
            f" {self.device.extra.get('ray_node_id', '')[:8]}) failed:"
            f" {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        )
        with self._lock:
            if generation == self._generation and not self._closed:
                log.warning("%s; starting a fresh actor", message)
                self._spawn()
        self.cluster.nudge()
        self._finish(self._failure(job, FailureCode.WORKER_DIED, message), ())

    def _abandon_running(self) -> None:
        # Killed like a worker process: a hung model must not hold the slice.
        actor = self._actor
        self.cluster.ray.kill(actor, no_restart=True)
        self._spawn()

    def close(self) -> None:
        super().close()
        actor, self._actor = self._actor, None
        self._generation += 1
        if actor is not None:
            try:
                self.cluster.ray.kill(actor, no_restart=True)
            except Exception:  # the cluster or its node is gone already
                log.debug("could not kill a slice's Ray actor", exc_info=True)
