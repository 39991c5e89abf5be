r"""Where a deployment's calls come from, and which site each replica is placed for.

Callers say how many calls they sent each deployment and where they are: an SDK
``Service`` on each listing (its client's origin, named or inferred from the round trips
it timed, as for a job), a gateway agent on each look-up (its node's site). The
scheduler keeps a deployment's calls by site over the last ``TRAFFIC_WINDOW_S``.

With :math:`n` replicas of a version wanted and :math:`c_s` of its :math:`C` calls from
site :math:`s`, site :math:`s`'s **quota** is :math:`q_s = n c_s / C` replicas; with no
call measured, the deployment's declared origin holds all :math:`n`. A replica is placed
*for* a site: its warm-up's origin is that site, so placement costs the network from
there (it may still land elsewhere when nothing near fits, and it keeps counting for the
site it was placed for, so a site without nodes does not draw replicas without end).
With :math:`p_s` replicas placed for :math:`s` and :math:`d_s = q_s - p_s`, the
placement keeps :math:`\sum_s d_s^2` small:

- a new replica is placed for the site with the largest :math:`d_s` (ties: more calls,
  then the name);
- a replica released (scaled down, or after a move) is one placed for the site with
  the smallest :math:`d_s` (``release_order``);
- **moving**: moving one replica from site :math:`t` to :math:`s` lowers the sum iff
  :math:`d_s - d_t > 1` (before :math:`d_s^2 + d_t^2`, after
  :math:`(d_s - 1)^2 + (d_t + 1)^2`). When it does by more than ``MOVE_MARGIN`` (so
  traffic near a tie does not flap), the window holds at least ``MIN_CALLS_TO_MOVE``
  calls, nothing is warming and no move was made in the last ``MOVE_EVERY_S``, one
  replica is placed for :math:`s` as a surge; once it is ready the reconcile releases
  one, the one for the smallest :math:`d` (:math:`t`'s). One move at a time, so
  capacity never dips.

Pure: no I/O, no clock of its own.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = [
    "MIN_CALLS_TO_MOVE",
    "MOVE_EVERY_S",
    "MOVE_MARGIN",
    "TRAFFIC_WINDOW_S",
    "SiteTraffic",
    "move",
    "next_site",
    "quotas",
    "release_order",
]

#: How long a reported call counts towards where a deployment's traffic comes from.
TRAFFIC_WINDOW_S = 60.0
#: Calls the window must hold before a replica is moved after them.
MIN_CALLS_TO_MOVE = 20
#: At most one move per this many seconds per deployment.
MOVE_EVERY_S = 30.0
#: How much a move must lower the squared deviation's terms by (in replicas) beyond 1.
MOVE_MARGIN = 0.2


@dataclass
class SiteTraffic:
    """A deployment's reported calls over the last ``TRAFFIC_WINDOW_S``, by site."""

    samples: deque[tuple[float, str, int]] = field(default_factory=deque)

    def add(self, now: float, site: str, calls: int) -> None:
        if calls > 0:
            self.samples.append((now, site, calls))
        self._prune(now)

    def by_site(self, now: float) -> dict[str, int]:
        self._prune(now)
        totals: dict[str, int] = {}
        for _, site, calls in self.samples:
            totals[site] = totals.get(site, 0) + calls
        return totals

    def _prune(self, now: float) -> None:
        while self.samples and self.samples[0][0] < now - TRAFFIC_WINDOW_S:
            self.samples.popleft()


def quotas(replicas: int, calls: Mapping[str, int], declared: str) -> dict[str, float]:
    """Each site's quota of ``replicas`` (the module docstring): in proportion to its
    calls, or all for the ``declared`` origin when none were measured."""
    total = sum(calls.values())
    if total <= 0:
        return {declared: float(replicas)}
    return {site: replicas * count / total for site, count in calls.items()}


def _deviation(share: Mapping[str, float], placed: Mapping[str, int], site: str) -> float:
    return share.get(site, 0.0) - placed.get(site, 0)


def next_site(
    share: Mapping[str, float], placed: Mapping[str, int], calls: Mapping[str, int]
) -> str:
    """The site the next replica is placed for: the largest quota left unplaced."""
    sites = set(share) | set(placed)
    return max(sorted(sites), key=lambda s: (_deviation(share, placed, s), calls.get(s, 0)))


def release_order(
    share: Mapping[str, float], replicas: Iterable[tuple[str, str, float]]
) -> list[str]:
    """``replicas`` as (replica id, site placed for, last used), in the order they are
    released: each next from the site furthest over its quota, the idle longest first
    (ties: in the order given)."""
    left = sorted(replicas, key=lambda r: r[2])  # stable: ties keep the order given
    placed: dict[str, int] = {}
    for _, site, _ in left:
        placed[site] = placed.get(site, 0) + 1
    order: list[str] = []
    while left:
        pick = min(left, key=lambda r: _deviation(share, placed, r[1]))
        left.remove(pick)
        placed[pick[1]] -= 1
        order.append(pick[0])
    return order


def move(
    share: Mapping[str, float], placed: Mapping[str, int], calls: Mapping[str, int]
) -> tuple[str, str] | None:
    """(to, from): the sites a replica should move between, or None (the module
    docstring's rule; the caller checks the window and the pace)."""
    if sum(calls.values()) < MIN_CALLS_TO_MOVE:
        return None
    to = next_site(share, placed, calls)
    over = [s for s, n in placed.items() if n > 0]
    if not over:
        return None
    source = min(sorted(over), key=lambda s: _deviation(share, placed, s))
    gain = _deviation(share, placed, to) - _deviation(share, placed, source)
    if to == source or gain <= 1 + MOVE_MARGIN:
        return None
    return to, source
