"""Placement's extension points: plugins and strategies as data, checked against protocols."""

from __future__ import annotations

import dataclasses
import inspect

import numpy as np
import pytest

from anypu.errors import ConfigError
from anypu.placement import (
    DEFAULT_FILTERS,
    DEFAULT_SCORES,
    POLICY_NAMES,
    STRATEGIES,
    ClusterSnapshot,
    FilterPlugin,
    PlacementConfig,
    ScorePlugin,
    Strategy,
    plan,
)
from tests.unit.test_placement_live import GiB, device, job, node

PROTOCOL_OF = [
    *((f, FilterPlugin) for f in DEFAULT_FILTERS),
    *((s, ScorePlugin) for s in DEFAULT_SCORES),
    *((s, Strategy) for s in STRATEGIES.values()),
]


@pytest.mark.parametrize(("plugin", "protocol"), PROTOCOL_OF, ids=lambda v: getattr(v, "name", ""))
def test_every_plugin_and_strategy_fulfils_its_protocol(plugin, protocol):
    assert isinstance(plugin, protocol)
    for name, member in inspect.getmembers(protocol, inspect.isfunction):
        if name.startswith("_"):
            continue
        ours = inspect.signature(getattr(plugin, name))
        theirs = inspect.signature(member)
        assert list(ours.parameters) == list(theirs.parameters)[1:], (plugin.name, name)
    if protocol is FilterPlugin:
        assert isinstance(plugin.node_level, bool) and isinstance(plugin.unresolvable, bool)


def test_the_registry_holds_one_strategy_per_policy_name():
    assert tuple(STRATEGIES) == POLICY_NAMES
    assert [s.name for s in STRATEGIES.values()] == list(POLICY_NAMES)


def test_a_config_refuses_what_is_not_a_plugin_saying_what_it_must_be():
    with pytest.raises(ConfigError, match="is not a FilterPlugin"):
        PlacementConfig(filters=(*DEFAULT_FILTERS, object()))
    with pytest.raises(ConfigError, match="is not a ScorePlugin"):
        PlacementConfig(scores=(lambda job: 0,))
    with pytest.raises(ConfigError, match="more than once"):
        PlacementConfig(filters=(*DEFAULT_FILTERS, DEFAULT_FILTERS[0]))
    with pytest.raises(ConfigError, match="tuple of plugins"):
        PlacementConfig(filters=list(DEFAULT_FILTERS))


@dataclasses.dataclass
class Reserved:
    """A site rule of an operator's own: never place on node ``reserved``."""

    reserved: str = "b"
    name: str = "reserved"
    node_level: bool = True
    unresolvable: bool = True

    def check(self, job, node, device, ctx):
        return f"node {self.reserved} is reserved" if node.node_id == self.reserved else None

    def mask(self, job, ctx):
        t = ctx.table
        return np.array([t.nodes[n].node_id != self.reserved for n in t.dev_node], dtype=bool)


@dataclasses.dataclass
class PreferB:
    """A score of an operator's own: every node but ``b`` costs a second more."""

    name: str = "prefer-b"

    def terms(self, job, ctx, idx, dev_idle):
        t = ctx.table
        names = np.array([t.nodes[n].node_id for n in t.dev_node])[idx]
        return {"preference": np.where(names == "b", 0.0, 1.0)}


def _two_nodes() -> ClusterSnapshot:
    return ClusterSnapshot((node("a", device("g", tflops=10)), node("b", device("g", tflops=50))))


@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_filters_and_scores_from_the_config_rule_every_strategy(policy):
    snapshot = _two_nodes()
    for reserved, other in (("a", "b"), ("b", "a")):
        ruled = PlacementConfig(policy=policy, filters=(*DEFAULT_FILTERS, Reserved(reserved)))
        assert plan(snapshot, [job()], config=ruled).placements[0].node_id == other
    bare = PlacementConfig(policy=policy, filters=(Reserved(),), scores=())
    placed = plan(snapshot, [job()], config=bare).placements[0]
    assert placed.node_id == "a" and "compute" not in placed.terms
    alone_b = ClusterSnapshot((node("b", device("g")),))
    ruled = PlacementConfig(policy=policy, filters=(*DEFAULT_FILTERS, Reserved()))
    assert plan(alone_b, [job()], config=ruled).unschedulable["j"] == {"b": "node b is reserved"}


def test_a_score_from_the_config_is_a_term_of_the_objective():
    snapshot = ClusterSnapshot((node("a", device("g", tflops=50)), node("b", device("g"))))
    assert plan(snapshot, [job(flops=1e9)]).placements[0].node_id == "a"  # faster
    config = PlacementConfig(scores=(*DEFAULT_SCORES, PreferB()))
    placed = plan(snapshot, [job(flops=1e9)], config=config).placements[0]
    assert placed.node_id == "b" and placed.terms["preference"] == 0.0
    assert list(placed.terms)[-1] == "preference"  # reported after the built-in terms


def test_unresolvable_says_whether_waiting_for_a_node_can_help():
    lost_gpu = node("far", device("g", memory_gib=16), healthy=False)
    cpu = node("near", device("c", kind="cpu", memory_gib=8))
    snapshot = ClusterSnapshot((lost_gpu, cpu))
    waits = job("waits", memory_bytes=12 * GiB)  # only the lost node's GPU holds it
    hopeless = job("hopeless", memory_bytes=64 * GiB)  # no node has that much
    wrong_kind = job("wrong-kind", device_kinds=frozenset({"npu"}))
    for policy in ("cost", "fgd"):
        result = plan(
            snapshot, [waits, hopeless, wrong_kind], config=PlacementConfig(policy=policy)
        )
        assert set(result.unschedulable) == {"waits", "hopeless", "wrong-kind"}
        assert result.unresolvable == {"hopeless", "wrong-kind"}, policy
        assert "unhealthy" in result.unschedulable["waits"]["far"]


def test_a_placement_says_which_node_came_second_and_by_what():
    snapshot = ClusterSnapshot(
        (
            node("slow", device("g", tflops=10)),
            node("fast", device("g", tflops=50), warm=("model",)),
        )
    )
    placed = plan(snapshot, [job(flops=1e12)]).placements[0]
    assert placed.node_id == "fast"
    runner_up = placed.runner_up
    assert runner_up is not None and runner_up.node_id == "slow" and runner_up.device_id == "g"
    assert runner_up.terms["compute"] > placed.terms["compute"]
    assert runner_up.terms["warm"] > 0 == placed.terms["warm"]  # not warm there
    assert runner_up.predicted_seconds > placed.predicted_seconds
    alone = ClusterSnapshot((node("only", device("g", slices=2)),))
    assert plan(alone, [job()]).placements[0].runner_up is None  # no other node


def test_a_batch_placed_by_cp_sat_keeps_a_runner_up_on_another_node():
    snapshot = ClusterSnapshot(
        (node("a", device("g", tflops=10)), node("b", device("g", tflops=12)))
    )
    jobs = [job(f"j{i}", flops=1e12 * (i + 1)) for i in range(6)]
    result = plan(snapshot, jobs)
    for p in result.placements:
        assert p.runner_up is not None and p.runner_up.node_id != p.node_id, (result.solver, p)
