"""Trace replays and what-if studies that call the same ``placement`` code as the scheduler.

The openb protocol (Alibaba's GPU-sharing traces, as in the FGD paper): ``replay`` one
policy over a trace, ``replay_batch`` a CP-SAT batch placer, ``replay_repack`` with
re-placement; ``allocation_bound`` and ``online_floor`` are the floors no placement
(respectively no work-conserving online policy) can go below; ``offline_placement`` a
placement near the first. The command lines are ``python -m anypu.simulations.openb``
and ``python -m anypu.simulations.openb_bound``.
"""

from anypu.simulations._openb_bound import BoundModel, SeedBound, allocation_bound, bound_seed
from anypu.simulations._openb_offline import Offline, offline_placement, verify
from anypu.simulations._openb_online_bound import OnlineFloor, online_floor
from anypu.simulations._openb_protocol import (
    ARRIVAL_LEVELS,
    Replay,
    by_arrival,
    inflate,
    replay,
    replay_batch,
    shuffle_nodes,
)
from anypu.simulations._openb_repack import Repacker, replay_repack
from anypu.simulations._openb_report import Reference, RunRow, format_table, load_reference

__all__ = [
    "ARRIVAL_LEVELS",
    "BoundModel",
    "Offline",
    "OnlineFloor",
    "Reference",
    "Repacker",
    "Replay",
    "RunRow",
    "SeedBound",
    "allocation_bound",
    "bound_seed",
    "by_arrival",
    "format_table",
    "inflate",
    "load_reference",
    "offline_placement",
    "online_floor",
    "replay",
    "replay_batch",
    "replay_repack",
    "shuffle_nodes",
    "verify",
]
