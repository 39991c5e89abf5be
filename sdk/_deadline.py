"""Client-side work under the call's deadline, stopped when it runs out.

Exporting a model and estimating its cost run the user's ``forward`` in Python (traced by
``torch.export``, then under fake tensors or once for real), so a ``while True:`` in it
would hang ``sdk.run`` for ever at 100% CPU. ``within`` runs such work on a helper thread
and, at the deadline, raises an exception *in* that thread (CPython's
``PyThreadState_SetAsyncExc``: delivered at its next bytecode, which a Python loop reaches
at once) and a ``JobTimeoutError`` naming the phase in the caller. The exception derives
from ``BaseException`` so that torch's own ``except Exception`` handlers let it through.
Work stuck inside one native operator stops when that operator returns; the caller does
not wait for it.
"""

from __future__ import annotations

import ctypes
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from anypu.errors import JobTimeoutError

__all__ = ["Phase", "within"]

_T = TypeVar("_T")
log = logging.getLogger("anypu.sdk")
_SLOW_S = 30.0  # say so when preparing a call takes this long


class _Stopped(BaseException):
    """Raised in a helper thread whose work ran out of time."""


class Phase:
    """What the helper is doing now, for the timeout's message (``phase.now = "…"``)."""

    def __init__(self, now: str) -> None:
        self.now = now


def within(seconds: float, what: str, work: Callable[[Phase], _T], flag: str) -> _T:
    """``work(phase)`` on a helper thread, stopped after ``seconds``.

    ``what`` names the thing worked on (``"model Loop"``); ``flag`` the setting that sets
    the deadline, for the message. Exceptions of ``work`` reach the caller unchanged.
    """
    phase = Phase("starting")
    outcome: list[object] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            outcome.append(work(phase))
        except _Stopped:
            pass
        except BaseException as error:  # handed to the caller
            failure.append(error)

    helper = threading.Thread(target=run, name="anypu-prepare", daemon=True)
    helper.start()
    helper.join(min(seconds, _SLOW_S))
    if helper.is_alive() and seconds > _SLOW_S:
        log.warning(
            "%s has taken %.0f s so far (%s); it is stopped after %.0f s (%s)",
            what,
            _SLOW_S,
            phase.now,
            seconds,
            flag,
        )
        helper.join(seconds - _SLOW_S)
    if helper.is_alive():
        stuck = phase.now
        _interrupt(helper)
        helper.join(1.0)
        still = (
            " (it is inside a native operator and stops when that returns)"
            if helper.is_alive()
            else ""
        )
        raise JobTimeoutError(
            f"{what} did not finish {stuck} within {seconds:g} s and was stopped{still}:"
            f" does its forward loop without end? If it only needs longer, raise {flag}"
        )
    if failure:
        raise failure[0]
    return outcome[0]  # type: ignore[return-value]


def _interrupt(thread: threading.Thread, patience_s: float = 5.0) -> None:
    """Raise ``_Stopped`` in ``thread``, but never while it imports a module: torch imports
    lazily (the first export imports dynamo), and a module left half-imported in
    ``sys.modules`` would break every later export in the process."""
    deadline = time.monotonic() + patience_s
    while thread.ident is not None and thread.is_alive():
        frame = sys._current_frames().get(thread.ident)
        importing = False
        while frame is not None and not importing:
            importing = frame.f_code.co_filename.startswith("<frozen importlib")
            frame = frame.f_back
        if not importing or time.monotonic() > deadline:
            ctypes.pythonapi.PyThreadState_SetAsyncExc(
                ctypes.c_ulong(thread.ident), ctypes.py_object(_Stopped)
            )
            return
        time.sleep(0.01)
