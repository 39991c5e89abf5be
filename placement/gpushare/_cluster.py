"""The trace-level model of a GPU-sharing cluster: node and pod tables, and the live state.

A node has CPU milli-cores, memory MiB and up to ``MAX_GPUS`` GPUs of one model; each GPU
has 1000 milli of capacity that sharing pods split. Everything is held in numpy arrays
indexed by node so that a policy scores all nodes at once. GPUs are kept in their
physical order (the index is the device index), because policies that break ties by the
first GPU must see the same order every time.
"""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from anypu.errors import ConfigError

__all__ = [
    "MAX_GPUS",
    "MILLI",
    "ClusterState",
    "NodeTable",
    "PodTable",
    "load_nodes",
    "load_pods",
    "parse_nodes",
    "parse_pods",
]

MILLI = 1000
MAX_GPUS = 8
_VERSIONS = itertools.count(1)  # node versions, unique across all states and their copies


@dataclass(frozen=True)
class NodeTable:
    """Static description of the nodes: capacities and GPU model (an index into ``models``)."""

    names: tuple[str, ...]
    cpu: NDArray[np.int64]  # milli-cores
    mem: NDArray[np.int64]  # MiB
    gpus: NDArray[np.int64]  # number of GPUs (0..MAX_GPUS)
    model: NDArray[np.int64]  # index into models; -1 for a CPU-only node
    models: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.names)

    @property
    def gpu_capacity_milli(self) -> int:
        return int(self.gpus.sum()) * MILLI

    def take(self, order: np.ndarray) -> NodeTable:
        """The nodes in ``order`` (a permutation): policies break ties by node order, so
        reordering the table is how a replay meets the nodes in another order."""
        return NodeTable(
            names=tuple(self.names[i] for i in order),
            cpu=self.cpu[order],
            mem=self.mem[order],
            gpus=self.gpus[order],
            model=self.model[order],
            models=self.models,
        )


@dataclass(frozen=True)
class PodTable:
    """Pods as columns. ``spec`` is a bit mask over ``NodeTable.models``; 0 means any model."""

    names: tuple[str, ...]
    cpu: NDArray[np.int64]
    mem: NDArray[np.int64]
    num_gpu: NDArray[np.int64]
    gpu_milli: NDArray[np.int64]  # per-GPU share; 1000 = a whole GPU
    spec: NDArray[np.int64]
    spec_text: tuple[str, ...] = field(default=())

    def __len__(self) -> int:
        return len(self.names)

    @property
    def total_gpu_milli(self) -> NDArray[np.int64]:
        return self.num_gpu * self.gpu_milli

    def take(self, order: np.ndarray) -> PodTable:
        """The pods in ``order`` (indices may repeat: inflation samples with replacement)."""
        return PodTable(
            names=tuple(self.names[i] for i in order),
            cpu=self.cpu[order],
            mem=self.mem[order],
            num_gpu=self.num_gpu[order],
            gpu_milli=self.gpu_milli[order],
            spec=self.spec[order],
            spec_text=tuple(self.spec_text[i] for i in order) if self.spec_text else (),
        )


def _require(row: Mapping[str, str], column: str, source: str, line: int) -> int:
    value = row.get(column)
    if value is None or value == "":
        raise ConfigError(f"{source}, line {line}: column {column!r} is missing or empty")
    try:
        return int(float(value))
    except ValueError:
        raise ConfigError(
            f"{source}, line {line}: column {column!r} must be a number, got {value!r}"
        ) from None


def parse_nodes(rows: Iterable[Mapping[str, str]], source: str = "node list") -> NodeTable:
    """Build a node table from CSV rows with columns ``sn, cpu_milli, memory_mib, gpu, model``."""
    names: list[str] = []
    cpu: list[int] = []
    mem: list[int] = []
    gpus: list[int] = []
    model_names: list[str] = []
    for line, row in enumerate(rows, start=2):
        names.append(row.get("sn") or f"node-{line - 2}")
        cpu.append(_require(row, "cpu_milli", source, line))
        mem.append(_require(row, "memory_mib", source, line))
        n = _require(row, "gpu", source, line)
        if not 0 <= n <= MAX_GPUS:
            raise ConfigError(
                f"{source}, line {line}: a node holds 0..{MAX_GPUS} GPUs, got {n}; "
                "split larger machines into several nodes"
            )
        gpus.append(n)
        model_names.append((row.get("model") or "").strip())
    if not names:
        raise ConfigError(f"{source} has no nodes: give a CSV with at least one node row")
    models = tuple(sorted({m for m in model_names if m}))
    index = {m: i for i, m in enumerate(models)}
    return NodeTable(
        names=tuple(names),
        cpu=np.asarray(cpu, dtype=np.int64),
        mem=np.asarray(mem, dtype=np.int64),
        gpus=np.asarray(gpus, dtype=np.int64),
        model=np.asarray([index.get(m, -1) for m in model_names], dtype=np.int64),
        models=models,
    )


def spec_mask(spec: str, models: Sequence[str]) -> int:
    """Bit mask of the allowed models in a ``'|'``-separated ``gpu_spec``; 0 = any model.

    A spec naming only models the cluster lacks gets the sentinel bit ``1 << len(models)``,
    which no node has, so such a pod fits nowhere instead of everywhere.
    """
    wanted = [s.strip() for s in spec.split("|") if s.strip()]
    if not wanted:
        return 0
    mask = 0
    for name in wanted:
        if name in models:
            mask |= 1 << models.index(name)
    return mask or 1 << len(models)


def parse_pods(
    rows: Iterable[Mapping[str, str]], models: Sequence[str], source: str = "pod list"
) -> PodTable:
    """Build a pod table from CSV rows (``name, cpu_milli, memory_mib, num_gpu, gpu_milli``
    and optionally ``gpu_spec``)."""
    names: list[str] = []
    cols: dict[str, list[int]] = {"cpu": [], "mem": [], "num": [], "milli": []}
    specs: list[str] = []
    for line, row in enumerate(rows, start=2):
        names.append(row.get("name") or f"pod-{line - 2}")
        num = _require(row, "num_gpu", source, line)
        milli = _require(row, "gpu_milli", source, line) if num else 0
        if num < 0 or num > MAX_GPUS:
            raise ConfigError(f"{source}, line {line}: num_gpu must be 0..{MAX_GPUS}, got {num}")
        if num and not 0 < milli <= MILLI:
            raise ConfigError(
                f"{source}, line {line}: gpu_milli must be in 1..{MILLI} for a GPU pod, got {milli}"
            )
        if num > 1 and milli != MILLI:
            raise ConfigError(
                f"{source}, line {line}: a multi-GPU pod takes whole GPUs, so gpu_milli must be "
                f"{MILLI}, got {milli}"
            )
        cols["cpu"].append(_require(row, "cpu_milli", source, line))
        cols["mem"].append(_require(row, "memory_mib", source, line))
        cols["num"].append(num)
        cols["milli"].append(milli)
        specs.append((row.get("gpu_spec") or "").strip())
    if not names:
        raise ConfigError(f"{source} has no pods: give a CSV with at least one pod row")
    return PodTable(
        names=tuple(names),
        cpu=np.asarray(cols["cpu"], dtype=np.int64),
        mem=np.asarray(cols["mem"], dtype=np.int64),
        num_gpu=np.asarray(cols["num"], dtype=np.int64),
        gpu_milli=np.asarray(cols["milli"], dtype=np.int64),
        spec=np.asarray([spec_mask(s, models) for s in specs], dtype=np.int64),
        spec_text=tuple(specs),
    )


def _read_csv(path: Path, what: str) -> list[dict[str, str]]:
    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist: pass the path of a CSV file")
    return list(csv.DictReader(io.StringIO(path.read_text())))


def load_nodes(path: str | Path) -> NodeTable:
    p = Path(path)
    return parse_nodes(_read_csv(p, "node list"), source=str(p))


def load_pods(path: str | Path, models: Sequence[str]) -> PodTable:
    p = Path(path)
    return parse_pods(_read_csv(p, "pod list"), models, source=str(p))


class ClusterState:
    """Free resources of every node, changed only through :meth:`bind`.

    ``gpu_left[n, g]`` is the free milli of GPU ``g`` on node ``n`` (0 for a GPU slot the
    node does not have, which no request can use). ``tags[n, k]`` counts the GPU pods of
    each kind (share, 1-GPU, 2-GPU, ...) on a node, which GPU-clustering needs.

    ``version[n]`` changes whenever node ``n`` does, to a number no other bind in this
    process has used, so a cache keyed by versions stays right across :meth:`copy`
    (a trial copy and the original never reach the same version with different contents).
    """

    N_TAGS = MAX_GPUS + 1  # 0 = shared GPU, k = k whole GPUs

    def __init__(self, nodes: NodeTable) -> None:
        self.nodes = nodes
        self.cpu_left = nodes.cpu.copy()
        self.mem_left = nodes.mem.copy()
        slots = np.arange(MAX_GPUS)[None, :] < nodes.gpus[:, None]
        self.gpu_left = np.where(slots, MILLI, 0).astype(np.int64)
        self.tags = np.zeros((len(nodes), self.N_TAGS), dtype=np.int64)
        self.version = np.zeros(len(nodes), dtype=np.int64)
        self.allocated_milli = 0

    def copy(self) -> ClusterState:
        other = ClusterState.__new__(ClusterState)
        other.nodes = self.nodes
        other.cpu_left = self.cpu_left.copy()
        other.mem_left = self.mem_left.copy()
        other.gpu_left = self.gpu_left.copy()
        other.tags = self.tags.copy()
        other.version = self.version.copy()
        other.allocated_milli = self.allocated_milli
        return other

    def feasible(self, cpu: int, mem: int, num: int, milli: int, spec: int) -> NDArray[np.intp]:
        """Indices of the nodes that can hold the request now."""
        ok = (self.cpu_left >= cpu) & (self.mem_left >= mem)
        if num:
            ok &= (self.gpu_left >= milli).sum(axis=1) >= num
            if spec:
                model = self.nodes.model
                ok &= (model >= 0) & (((spec >> np.maximum(model, 0)) & 1) == 1)
        return np.flatnonzero(ok)

    def bind(self, node: int, gpus: Sequence[int], cpu: int, mem: int, milli: int) -> None:
        """Reserve a pod's resources on ``node`` and the GPUs ``gpus`` (``milli`` each)."""
        if self.cpu_left[node] < cpu or self.mem_left[node] < mem:
            raise ValueError(f"node {self.nodes.names[node]} lacks CPU or memory for the pod")
        for g in gpus:
            if self.gpu_left[node, g] < milli:
                raise ValueError(f"GPU {g} of node {self.nodes.names[node]} lacks {milli} milli")
        self.cpu_left[node] -= cpu
        self.mem_left[node] -= mem
        for g in gpus:
            self.gpu_left[node, g] -= milli
        if gpus:
            self.tags[node, 0 if milli < MILLI else len(gpus)] += 1
        self.allocated_milli += milli * len(gpus)
        self.version[node] = next(_VERSIONS)

    def release(self, node: int, gpus: Sequence[int], cpu: int, mem: int, milli: int) -> None:
        """Undo a :meth:`bind` of the same arguments (a pod leaves, or is moved away)."""
        if self.cpu_left[node] + cpu > self.nodes.cpu[node] or any(
            self.gpu_left[node, g] + milli > MILLI for g in gpus
        ):
            raise ValueError(f"node {self.nodes.names[node]} does not hold such a pod")
        self.cpu_left[node] += cpu
        self.mem_left[node] += mem
        for g in gpus:
            self.gpu_left[node, g] += milli
        if gpus:
            self.tags[node, 0 if milli < MILLI else len(gpus)] -= 1
        self.allocated_milli -= milli * len(gpus)
        self.version[node] = next(_VERSIONS)
