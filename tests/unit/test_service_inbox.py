"""The service's inbox: agents' messages after their Join, handled in batches in order;
one that fails is logged and skipped, and the others' effects are still carried out."""

from __future__ import annotations

import logging
import time

from anypu.scheduler import SchedulerService
from anypu.scheduler._state import AgentSaid, Tick


def test_a_failing_event_loses_nothing_else_of_its_batch(tmp_path, caplog):
    service = SchedulerService(tmp_path)
    handled: list[object] = []
    real = service.state.handle

    def handle(event):
        if isinstance(event, AgentSaid) and event.node_id == "bad":
            raise RuntimeError("a bug in handling one message")
        handled.append(event)
        return real(event)

    service.state.handle = handle  # type: ignore[method-assign]
    try:
        with caplog.at_level(logging.ERROR, "anypu.scheduler"):
            service._handle_batch(
                [Tick(1.0), AgentSaid("bad", 1, object(), 1.0), Tick(2.0)]  # type: ignore[arg-type]
            )
        assert [e.now for e in handled if isinstance(e, Tick)] == [1.0, 2.0]
        assert "could not handle AgentSaid" in caplog.text
        # The inbox thread keeps going: a posted tick is still handled afterwards.
        service.post(Tick(3.0))
        deadline = time.monotonic() + 5
        while not any(isinstance(e, Tick) and e.now == 3.0 for e in handled):
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        service.close()
