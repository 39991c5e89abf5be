"""An agent stopped on purpose says goodbye (Leave) on its stream, so the scheduler lists
it as left and moves its jobs at once, even when it stops before its JoinAck arrived."""

from __future__ import annotations

from anypu.agents._agent import Agent, AgentConfig
from anypu.protos import messages as m
from tests.builders import cpu_device


class _RecordingLink:
    """A link whose stream is open (the Join went out) but answered nothing yet."""

    outputs_inline_bytes = None

    def __init__(self) -> None:
        self.sent: list[m.AgentMessage] = []
        self.closed = 0

    def send(self, message: m.AgentMessage) -> None:
        self.sent.append(message)

    def close(self) -> None:
        self.closed += 1


def test_an_agent_stopped_before_its_join_ack_still_says_goodbye(tmp_path) -> None:
    link = _RecordingLink()
    config = AgentConfig(
        "edge-1", "edge", [cpu_device()], cache_dir=str(tmp_path), isolation="thread"
    )
    agent = Agent(config, link)  # type: ignore[arg-type]
    assert not agent.connected.is_set()
    agent.stop()
    agent.stop()  # a second stop says nothing more
    assert [type(message) for message in link.sent] == [m.Leave]
    assert link.closed == 2
