"""Label selectors: checked where the user writes them, carried on the wire and in the
store, and enforced by placement over node and backend (Ray) labels."""

from __future__ import annotations

import dataclasses

import pytest

from anypu._labels import LabelRequirement, check_requirements, device_labels, label_requirements
from anypu.devices import Device
from anypu.errors import ConfigError
from anypu.placement import ClusterSnapshot, DeviceView, JobRequest, NodeView, PlacementConfig, plan
from anypu.protos import convert
from anypu.protos import messages as m
from anypu.sdk import DoesNotExist, Exists, In, NotIn, RunOptions

GIB = 1 << 30
CPU = Device("cpu0", "cpu", "intel", "Xeon", 16 * GIB, 0.5, "cpu")


def test_a_selector_is_checked_and_kept_in_a_stable_order():
    selector = {"zone": In("shop-8", "shop-7"), "tier-class": "gold", "ssd": Exists()}
    assert label_requirements(selector) == (
        LabelRequirement("ssd", "exists"),
        LabelRequirement("tier-class", "in", ("gold",)),
        LabelRequirement("zone", "in", ("shop-7", "shop-8")),
    )
    options = RunOptions(label_selector={"kubernetes.io/hostname": NotIn("node-1")})
    assert options.label_selector == (
        LabelRequirement("kubernetes.io/hostname", "not_in", ("node-1",)),
    )
    assert hash(options)  # the client keys its requests on the options


@pytest.mark.parametrize(
    ("selector", "says"),
    [
        (["zone=shop-7"], "must be a mapping of label keys"),
        ({"": In("a")}, "keys must be label names"),
        ({"-zone": In("a")}, "is not a label name"),
        ({"zone": In()}, "needs at least one value"),
        ({"zone": In("shop 7")}, "is not a label value"),
        ({"zone": Exists()} | {"ssd": 3}, "give In(…), NotIn(…), Exists()"),
    ],
)
def test_every_mistake_says_what_was_wrong_with_an_example(selector, says):
    with pytest.raises(ConfigError, match=None) as raised:
        RunOptions(label_selector=selector)
    assert says in str(raised.value)
    assert "label_selector" in str(raised.value)


def test_requirements_match_as_kubernetes_operators_do():
    labels = {"zone": "shop-7", "ssd": ""}
    assert LabelRequirement("zone", "in", ("shop-7",)).matches(labels)
    assert not LabelRequirement("zone", "not_in", ("shop-7",)).matches(labels)
    assert LabelRequirement("rack", "not_in", ("r1",)).matches(labels)  # absent: not in
    assert LabelRequirement("ssd", "exists").matches(labels)
    assert LabelRequirement("gpu", "does_not_exist").matches(labels)
    assert not LabelRequirement("rack", "in", ("r1",)).matches(labels)
    # A Ray node's own labels (on its devices) join the agent's, and win.
    assert device_labels({"zone": "dc", "site": "dc"}, {"label.zone": "shop-7", "x": 1}) == {
        "zone": "shop-7",
        "site": "dc",
    }


def test_requirements_off_the_wire_are_checked_like_the_sdk_s():
    check_requirements([LabelRequirement("zone", "in", ("a",))])
    with pytest.raises(ConfigError, match="operator 'gt' is unknown"):
        check_requirements([LabelRequirement("zone", "gt", ("3",))])
    with pytest.raises(ConfigError, match="take no values"):
        check_requirements([LabelRequirement("zone", "exists", ("a",))])


def test_the_selector_survives_the_wire():
    selector = label_requirements({"zone": In("shop-7"), "gpu": DoesNotExist()})
    request = m.SubmitRequest("a" * 64, label_selector=selector)
    back = convert.submit_request_from_pb(convert.submit_request_to_pb(request))
    assert back.label_selector == selector


def _cluster() -> ClusterSnapshot:
    ray_device = dataclasses.replace(CPU, device_id="9b7e44aa-cpu0", extra={"label.zone": "shop-7"})
    return ClusterSnapshot(
        nodes=(
            NodeView("dc-1", "cloud", "dc", labels={"zone": "dc", "ssd": "yes"},
                     devices=(DeviceView("dc-1", CPU, (0.0,)),)),
            NodeView("ray", "cloud", "dc", labels={"zone": "dc"},
                     devices=(DeviceView("ray", CPU, (0.0,)),
                              DeviceView("ray", ray_device, (0.0,)))),
        )
    )  # fmt: skip


def _job(**selector: object) -> JobRequest:
    return JobRequest("j", "d" * 64, 1e9, GIB, 0, 0, label_selector=label_requirements(selector))


CONFIG = PlacementConfig(use_cpsat=False)


def test_placement_takes_only_devices_whose_labels_match():
    (placed,) = plan(_cluster(), [_job(zone=In("shop-7"))], config=CONFIG).placements
    assert (placed.node_id, placed.device_id) == ("ray", "9b7e44aa-cpu0")
    (placed,) = plan(_cluster(), [_job(ssd=Exists())], config=CONFIG).placements
    assert placed.node_id == "dc-1"
    unplaced = plan(_cluster(), [_job(zone=In("shop-9"))], config=CONFIG)
    assert unplaced.placements == ()
    reasons = unplaced.unschedulable["j"]
    assert "labels {ssd=yes, zone=dc} do not match zone in (shop-9)" in reasons["dc-1"]
    assert "9b7e44aa-cpu0: labels {zone=shop-7} do not match zone in (shop-9)" in reasons["ray"]


def test_the_selector_survives_the_scheduler_s_store():
    from anypu.scheduler._store import _request_document, _request_from

    selector = label_requirements({"zone": In("shop-7"), "gpu": DoesNotExist()})
    request = m.SubmitRequest("a" * 64, label_selector=selector, tiers=("edge",))
    import json

    document = json.loads(json.dumps(_request_document(request)))
    assert _request_from(document) == request


def test_the_command_line_writes_selectors_as_kubectl_does():
    from anypu._labels import parse_selector

    selector = parse_selector(["zone=shop-7,shop-8", "rack!=r9", "ssd", "!gpu"])
    assert label_requirements(selector) == (
        LabelRequirement("gpu", "does_not_exist"),
        LabelRequirement("rack", "not_in", ("r9",)),
        LabelRequirement("ssd", "exists"),
        LabelRequirement("zone", "in", ("shop-7", "shop-8")),
    )
    with pytest.raises(ConfigError, match="names 'zone' twice"):
        parse_selector(["zone=a", "zone!=b"])
