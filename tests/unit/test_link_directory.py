"""The gateway agent's directory: look-ups over its link, answers kept briefly."""

from __future__ import annotations

from typing import Any, cast

import pytest

from anypu.agents._gateway import LinkDirectory
from anypu.comm import GatewayRefusal
from anypu.errors import AnypuError
from anypu.protos import messages as m


class RecordedLink:
    """A link answering look-ups from ``answers`` and keeping what was asked."""

    def __init__(self, listing: object, refusal: str = "") -> None:
        self.listing = listing
        self.refusal = refusal
        self.asked: list[m.DeploymentLookup] = []
        self.down = False

    def look_up_deployment(self, lookup: m.DeploymentLookup) -> m.DeploymentLookupReply:
        self.asked.append(lookup)
        if self.down:
            raise AnypuError("connection refused")
        listing = cast(Any, self.listing) if lookup.name == "scale" else None
        return m.DeploymentLookupReply(listing, ("scale",), self.refusal)


def _directory(link: RecordedLink) -> LinkDirectory:
    return LinkDirectory(cast(Any, link), "shop-gw")


def test_an_authorized_call_costs_one_look_up_not_two():
    listing = object()
    link = RecordedLink(listing)
    directory = _directory(link)
    assert directory.authorize("caller-token", "scale") == ""
    assert directory.deployment("scale") is listing
    assert len(link.asked) == 1
    assert link.asked[0].token == "caller-token"
    # The listing it brought stands in once: the next asks the scheduler again.
    assert directory.deployment("scale") is listing
    assert len(link.asked) == 2


def test_a_brought_listing_does_not_answer_for_another_model():
    link = RecordedLink(object())
    directory = _directory(link)
    directory.authorize("caller-token", "other")
    assert directory.deployment("scale") is link.listing
    assert [lookup.name for lookup in link.asked] == ["other", "scale"]


def test_refusals_are_kept_briefly_and_calls_reported_once():
    link = RecordedLink(object(), refusal="the token is not this deployment's")
    directory = _directory(link)
    assert directory.authorize("guess", "scale") == "the token is not this deployment's"
    assert directory.authorize("guess", "scale") == "the token is not this deployment's"
    assert len(link.asked) == 1
    directory.answered("scale", 0.004)
    directory.answered("scale", 0.006)
    directory.deployment("scale")  # the refusing look-up's listing
    directory.deployment("scale")
    directory.deployment("scale")
    reported = [lookup.calls for lookup in link.asked]
    assert reported == [(), (("scale", 2),), ()]


def test_an_unreachable_scheduler_is_a_503_and_the_calls_are_kept():
    link = RecordedLink(object())
    directory = _directory(link)
    directory.answered("scale", 0.004)
    link.down = True
    with pytest.raises(GatewayRefusal) as refused:
        directory.deployment("scale")
    assert refused.value.status == 503
    assert "cannot reach the scheduler" in str(refused.value)
    link.down = False
    directory.deployment("scale")
    assert link.asked[-1].calls == (("scale", 1),)
