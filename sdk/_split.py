"""Cuts of a model's exported graph, offered to the scheduler to split a call across two
devices (``placement._split`` decides whether and where).

A cut after node :math:`i` of the graph's topological order is valid when exactly one
tensor computed at or before :math:`i` is used after it (the *activation*), and no
input of the model is: the *head* computes the model's inputs into that tensor, the
*tail* that tensor into the model's outputs. ``find_cuts`` sweeps the order once,
keeping the set of values still live (:math:`O(N · live)`), keeps the cuts whose
activation is smaller than the inputs (a larger one is never worth moving instead of
them), and offers the ``MAX_CUTS`` smallest, the earliest of those of equal size (the
least work for the head's device); each half is exported with
``torch.export`` from the graph itself, profiled as any model, and checked: the tail
of the head must give the model's outputs on the example inputs.

Only models called with plain tensors are cut, and only exported graphs
(``torch.export``): a TorchScript fallback has no graph to cut here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
from torch.utils import _pytree as pytree

from anypu._codec import tree_nbytes
from anypu.devices import DEVICE_KINDS, format_bytes
from anypu.sdk._estimate import Profile, estimate_profile
from anypu.sdk._export import Artifact, quiet_torch, via_export

__all__ = ["MAX_CUTS", "Cut", "find_cuts"]

#: The most cuts offered for one model (each is two artifacts to upload once).
MAX_CUTS = 3

_log = logging.getLogger(__name__)
_COMPUTE = ("call_function", "call_method", "call_module")


@dataclass(frozen=True)
class Cut:
    """One cut: the two halves as artifacts with their profiles, and what crosses."""

    label: str
    head: Artifact
    head_profile: Profile
    tail: Artifact
    tail_profile: Profile
    activation_bytes: int


class _Tail(torch.nn.Module):
    """The tail's graph, its flat outputs put back in the model's own structure."""

    def __init__(self, graph: fx.GraphModule, spec: pytree.TreeSpec) -> None:
        super().__init__()
        self.graph_module = graph
        self.spec = spec

    def forward(self, activation: torch.Tensor) -> Any:
        return pytree.tree_unflatten(list(self.graph_module(activation)), self.spec)


def _is_guard(node: fx.Node) -> bool:
    return node.op == "call_module" and str(node.target).startswith("_guards")


def _label(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    where = next(reversed(stack.values()), ("", None))[0] if stack else ""
    return f"after {where} ({node.name})" if where else f"after {node.name}"


def _valid_cuts(graph: fx.Graph) -> list[tuple[int, fx.Node]]:
    """``(position, activation)`` of every valid cut (the module docstring)."""
    order = [n for n in graph.nodes if n.op != "get_attr" and not _is_guard(n)]
    position = {n: i for i, n in enumerate(order)}
    last_use = {n: max((position[u] for u in n.users if u in position), default=-1) for n in order}
    live: set[fx.Node] = set()
    cuts: list[tuple[int, fx.Node]] = []
    for i, node in enumerate(order[:-1]):
        live.add(node)
        live = {n for n in live if last_use[n] > i}
        if node.op not in _COMPUTE or len(live) != 1:
            continue
        (crossing,) = live
        value = crossing.meta.get("val")
        if crossing.op in _COMPUTE and isinstance(value, torch.Tensor):
            tail_computes = any(n.op in _COMPUTE for n in order[i + 1 :])
            if tail_computes:
                cuts.append((i, crossing))
    return cuts


def _copy(graph: fx.Graph, node: fx.Node, env: dict[fx.Node, fx.Node]) -> None:
    def arg(a: fx.Node) -> fx.Node:
        if a not in env and a.op == "get_attr":  # weights: copied into each half using them
            env[a] = graph.node_copy(a)
        return env[a]

    env[node] = graph.node_copy(node, arg)


def _halves(module: fx.GraphModule, position: int) -> tuple[fx.GraphModule, fx.GraphModule]:
    order = [n for n in module.graph.nodes if n.op != "get_attr" and not _is_guard(n)]
    head, tail = fx.Graph(), fx.Graph()
    head_env: dict[fx.Node, fx.Node] = {}
    for node in order[: position + 1]:
        if node.op == "placeholder":
            head_env[node] = head.placeholder(node.name)
        else:
            _copy(head, node, head_env)
    later = set(order[position + 1 :])
    (crossing,) = [n for n in order[: position + 1] if any(u in later for u in n.users)]
    head.output(head_env[crossing])
    tail_env: dict[fx.Node, fx.Node] = {crossing: tail.placeholder("activation")}
    for node in order[position + 1 :]:
        if node.op == "output":
            flat = pytree.tree_leaves(node.args[0])
            tail.output(tuple(tail_env[a] if isinstance(a, fx.Node) else a for a in flat))
        else:
            _copy(tail, node, tail_env)
    return fx.GraphModule(module, head), fx.GraphModule(module, tail)


def _artifact(module: torch.nn.Module, args: tuple[Any, ...]) -> Artifact:
    payload, operators = via_export(module, args)
    return Artifact.build("torch.export", frozenset(DEVICE_KINDS), payload, operators)


def find_cuts(
    model: torch.nn.Module,
    args: tuple[Any, ...],
    max_cuts: int = MAX_CUTS,
    check: Callable[[], None] = lambda: None,
) -> tuple[Cut, ...]:
    """Up to ``max_cuts`` cuts of ``model(*args)`` (the module docstring); none when the
    model is not cut (nested inputs, a graph torch.export refuses, no single-tensor
    cut smaller than its inputs). ``check`` is called between halves (a deadline)."""
    if not args or not all(isinstance(a, torch.Tensor) for a in args):
        return ()
    input_bytes = tree_nbytes(args)
    try:
        with quiet_torch():
            program = torch.export.export(model, args, strict=False)
            module = program.module()
            out_spec = program.call_spec.out_spec
            with torch.no_grad():
                expected = model(*args)
    except Exception as exc:  # the whole model still runs: it is just not split
        _log.debug("not cutting %s: %s", type(model).__name__, exc)
        return ()
    assert isinstance(module, fx.GraphModule) and out_spec is not None
    candidates = []
    for position, crossing in _valid_cuts(module.graph):
        value = crossing.meta["val"]
        nbytes = value.numel() * value.element_size()
        if nbytes < input_bytes:
            candidates.append((nbytes, position, crossing))
    cuts: list[Cut] = []
    sizes: set[int] = set()
    for nbytes, position, crossing in sorted(candidates, key=lambda c: (c[0], c[1])):
        if len(cuts) >= max_cuts:
            break
        if nbytes in sizes:  # the earliest of equal activations: the least head to run
            continue
        sizes.add(nbytes)
        check()
        try:
            cuts.append(_cut(module, position, out_spec, args, expected, nbytes, crossing))
        except Exception as exc:
            _log.debug("cut %s of %s refused: %s", crossing.name, type(model).__name__, exc)
    return tuple(cuts)


def _cut(
    module: fx.GraphModule,
    position: int,
    out_spec: pytree.TreeSpec,
    args: tuple[Any, ...],
    expected: Any,
    nbytes: int,
    crossing: fx.Node,
) -> Cut:
    head_graph, tail_graph = _halves(module, position)
    tail = _Tail(tail_graph, out_spec)
    with torch.no_grad(), quiet_torch():
        activation = head_graph(*args)
        torch.testing.assert_close(tail(activation), expected, equal_nan=True)
        head_artifact = _artifact(head_graph, args)
        tail_artifact = _artifact(tail, (activation,))
    label = f"{_label(crossing)}, {format_bytes(nbytes)} across"
    return Cut(
        label=label,
        head=head_artifact,
        head_profile=estimate_profile(head_graph, args),
        tail=tail_artifact,
        tail_profile=estimate_profile(tail, (activation,)),
        activation_bytes=nbytes,
    )
