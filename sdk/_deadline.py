"""Client-side work under the call's deadline, stopped when it runs out.

Exporting a model and estimating its cost run the user's ``forward`` in Python (traced by
``torch.export``, then under fake tensors or once for real), so a ``while True:`` in it
would hang ``sdk.run`` for ever at 100% CPU. ``within`` runs such work on a helper thread
with a trace function of its own, and at the deadline the trace function raises
``_Stopped`` at the next line the thread runs *in the user's code* (any file outside the
standard library, installed packages and anypu): to torch that is the model's forward
raising, which it unwinds as it does any model error. Stopping it anywhere else (an
asynchronous exception between two of torch's own bytecodes) can leave torch's global
mode stacks half-pushed and break every later export in the process, which is why it is
not done. The caller gets a ``JobTimeoutError`` naming the phase either way; work that
never comes back to the user's code (inside one native operator, or looping inside torch)
stops when it does. The trace function costs export about twice its time (small CNN
0.09 → 0.19 s, transformer block 0.17 → 0.41 s here), paid on the first call of a model
with given input shapes only.
"""

from __future__ import annotations

import logging
import os
import sys
import sysconfig
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any, TypeVar

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
    stop = threading.Event()

    def run() -> None:
        sys.settrace(_stopper(stop))
        try:
            outcome.append(work(phase))
        except _Stopped:
            pass
        except BaseException as error:  # handed to the caller
            failure.append(error)
        finally:
            sys.settrace(None)

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
        stop.set()
        helper.join(1.0)
        still = (
            " (it is not running the model's own code now, inside torch or one native"
            " operator, and stops when it returns to it)"
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


def _library_roots() -> tuple[str, ...]:
    """Where code that is not the user's lives: the standard library, installed packages,
    and anypu's own packages."""
    paths = sysconfig.get_paths()
    roots = {paths["stdlib"], paths["platstdlib"], paths["purelib"], paths["platlib"]}
    for name, module in list(sys.modules.items()):
        source = getattr(module, "__file__", None)
        if source and (name == "anypu" or name.startswith("anypu.")):
            roots.add(os.path.dirname(source))
    return tuple(os.path.realpath(root) + os.sep for root in roots if root)


def _stopper(stop: threading.Event) -> Callable[..., Any]:
    """A trace function that leaves library frames untraced and, once ``stop`` is set,
    raises ``_Stopped`` at the next line of a user frame."""
    roots = _library_roots()
    user: dict[str, bool] = {}

    def local(frame: FrameType, event: str, arg: object) -> Callable[..., Any] | None:
        if stop.is_set() and event == "line":
            raise _Stopped
        return local

    def calls(frame: FrameType, event: str, arg: object) -> Callable[..., Any] | None:
        filename = frame.f_code.co_filename
        mine = user.get(filename)
        if mine is None:
            path = os.path.realpath(filename)
            mine = user[filename] = not filename.startswith("<") and not path.startswith(roots)
        return local if mine else None

    return calls
