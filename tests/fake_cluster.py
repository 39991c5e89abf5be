"""A whole cluster in one thread: the real state machines, a real SQLite store, a fake clock.

``FakeCluster`` wires a ``SchedulerState`` to ``FakeAgent``s, each a real ``AgentState``
with the I/O shell replaced by a few lines: launches wait in ``agent.running`` until the
test finishes them, messages cross in order through one queue, time moves only when the
test calls ``advance``.  Writes go to a real ``StateStore`` when ``commit`` is called, so
``crash_scheduler`` can lose what a crashed scheduler had not committed yet.

Faults are injected by subclassing ``FakeAgent`` (as Dask's tests subclass the worker):
override ``send`` to drop or duplicate messages, ``on_launch`` to crash the worker.
Every run is deterministic: no threads, no sleeps, no wall clock.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from pathlib import Path

from anypu import scheduler
from anypu.agents._state import (
    AgentIdentity,
    AgentState,
    CancelAtWorker,
    Fetch,
    Fetched,
    Instruction,
    RunningJob,
    SchedulerSaid,
    Send,
    StreamBroke,
    Submit,
    Tick,
    WorkerAnswered,
)
from anypu.devices import Device
from anypu.protos import messages as m
from tests.builders import cpu_device, ran, submit_request

__all__ = ["CrashingAgent", "FakeAgent", "FakeCluster", "PartitionedAgent", "ResultLosingAgent"]


class FakeAgent:
    """An agent whose slices are the test's hands: ``finish(job_id)`` answers a launch."""

    def __init__(self, cluster: FakeCluster, name: str, devices: tuple[Device, ...]) -> None:
        self.cluster = cluster
        self.name = name
        self.state = AgentState(AgentIdentity(name, "edge", devices))
        self.running: dict[tuple[str, int], tuple[m.Launch, float]] = {}
        self.launched: list[tuple[str, int]] = []  # every (job, attempt) a slice was handed
        self.epoch = 0  # of the stream the scheduler knows this agent by
        self.linked = False

    # -------------------------------------------------------------- the stream

    def join(self) -> None:
        join = self.state.join_message(list(self.running), warm=())
        self.cluster.agent_joined(self, join)

    def deliver(self, message: m.SchedulerMessage) -> None:
        """A message down the stream (fault point: override to lose some)."""
        event = SchedulerSaid(message, self.cluster.now, "fake", artifact_cached=True)
        self.carry_out(self.state.handle(event))

    def send(self, message: m.AgentMessage) -> None:
        """A message up the stream (fault point: override to lose or repeat some)."""
        self.cluster.from_agent(self, message)

    def stream_broke(self, reason: str) -> None:
        self.linked = False
        self.carry_out(self.state.handle(StreamBroke(reason, self.cluster.now, "fake")))

    # -------------------------------------------------------------- the shell

    def carry_out(self, instructions: list[Instruction]) -> None:
        for instruction in instructions:
            if isinstance(instruction, Send):
                if self.linked:
                    self.send(instruction.message)
            elif isinstance(instruction, Submit):
                launch = instruction.launch
                self.running[(launch.job_id, launch.attempt)] = (launch, self.cluster.now)
                self.launched.append((launch.job_id, launch.attempt))
                self.on_launch(launch)
            elif isinstance(instruction, Fetch):
                launch = instruction.launch
                fetched = Fetched(launch, launch.inputs, "", self.cluster.now, "fake")
                self.carry_out(self.state.handle(fetched))
            elif isinstance(instruction, CancelAtWorker):
                self.running.pop((instruction.job_id, instruction.attempt), None)

    def on_launch(self, launch: m.Launch) -> None:
        """A slice took ``launch`` (fault point: override to crash it)."""

    def finish(
        self, job_id: str, outcome: m.Outcome | None = None, outputs: bytes = b"out"
    ) -> None:
        """The slice running ``job_id`` answers."""
        key = next(k for k in self.running if k[0] == job_id)
        launch, _ = self.running.pop(key)
        result = m.JobResult(
            job_id, launch.attempt, outcome or ran(run_seconds=0.01), outputs, "", launch.device_id
        )
        self.carry_out(self.state.handle(WorkerAnswered(result, self.cluster.now, "fake")))
        self.cluster.pump()

    def finish_all(self) -> None:
        for job_id, _ in list(self.running):
            self.finish(job_id)

    def tick(self) -> None:
        running = tuple(RunningJob(j, a, at) for (j, a), (_, at) in self.running.items())
        busy = frozenset(
            (launch.device_id, launch.slice_index) for launch, _ in self.running.values()
        )
        self.carry_out(self.state.handle(Tick(self.cluster.now, "tick", running, busy)))


class CrashingAgent(FakeAgent):
    """Every worker dies under every job it is handed (as a segfaulting model would)."""

    def on_launch(self, launch: m.Launch) -> None:
        crashed = m.Outcome.failed(m.FailureCode.WORKER_DIED, "worker exited with signal 11")
        self.finish(launch.job_id, crashed, b"")


class ResultLosingAgent(FakeAgent):
    """The stream breaks under the first result it sends: the result never arrives."""

    def __init__(self, cluster: FakeCluster, name: str, devices: tuple[Device, ...]) -> None:
        super().__init__(cluster, name, devices)
        self.lost: list[m.JobResult] = []

    def send(self, message: m.AgentMessage) -> None:
        if isinstance(message, m.JobResult) and not self.lost:
            self.lost = [message]
            self.cluster.break_stream(self, "connection reset while sending a result")
            return
        super().send(message)


class PartitionedAgent(FakeAgent):
    """While ``cut``, nothing crosses the network either way; the streams stay up."""

    cut = False

    def send(self, message: m.AgentMessage) -> None:
        if not self.cut:
            super().send(message)

    def deliver(self, message: m.SchedulerMessage) -> None:
        if not self.cut:
            super().deliver(message)


class FakeCluster:
    """A scheduler state machine, its store, and fake agents, moved by a fake clock."""

    def __init__(self, state_dir: Path, **config: object) -> None:
        defaults: dict[str, object] = {
            "heartbeat_interval_s": 0.2,
            "lost_after_s": 1.5,
            "retry_backoff_s": 0.0,
            "unschedulable_timeout_s": 5.0,
            "lease_idle_s": 0.0,
        }
        self.config = scheduler.SchedulerConfig(**{**defaults, **config})  # type: ignore[arg-type]
        self.state_dir = state_dir
        self.store = scheduler.StateStore(state_dir)
        self.now = 0.0
        self.scheduler = scheduler.SchedulerState(self.config)
        self.agents: dict[str, FakeAgent] = {}
        self.notified: list[str] = []
        self.received: list[tuple[str, m.AgentMessage]] = []  # (agent, message) as they arrived
        self._writes: list[tuple] = []
        self._queue: deque[Callable[[], None]] = deque()
        self._pumping = False

    def close(self) -> None:
        self.store.close()

    # -------------------------------------------------------------- set-up

    def add_agent(
        self,
        name: str,
        devices: tuple[Device, ...] = (cpu_device(),),
        kind: type[FakeAgent] = FakeAgent,
    ) -> FakeAgent:
        agent = kind(self, name, devices)
        self.agents[name] = agent
        agent.join()
        self.pump()
        return agent

    def submit(self, job_id: str, **request: object) -> str:
        submit = submit_request(**request)
        self._later(
            lambda: self._apply(
                self.scheduler.handle(scheduler.JobSubmitted(job_id, submit, self.now))
            )
        )
        self.pump()
        return job_id

    def cancel(self, job_id: str) -> None:
        self._later(
            lambda: self._apply(self.scheduler.handle(scheduler.CancelRequested(job_id, self.now)))
        )
        self.pump()

    # -------------------------------------------------------------- time and faults

    def advance(self, seconds: float, step: float = 0.05) -> None:
        """Move the clock on in steps; every agent and the scheduler tick at each."""
        end = self.now + seconds
        while self.now < end - 1e-9:
            self.now = min(end, self.now + step)
            for agent in self.agents.values():
                self._later(agent.tick)
            self._later(lambda: self._apply(self.scheduler.handle(scheduler.Tick(self.now))))
            self.pump()

    def commit(self) -> None:
        """Make every write so far durable (the real service's writer does this at once)."""
        self.store.commit(self._writes)
        self._writes = []

    def crash_scheduler(self) -> None:
        """The scheduler dies (uncommitted writes are lost) and starts again from its store."""
        self._writes = []
        self.store.close()
        self.store = scheduler.StateStore(self.state_dir)
        self.scheduler = scheduler.SchedulerState(self.config)
        self.scheduler.restore(self.store.load_unfinished_jobs(), self.store.load_nodes(), self.now)
        self.scheduler.learned.restore(self.store.load_learned())
        for agent in self.agents.values():
            agent.stream_broke("the scheduler went away")
        for agent in self.agents.values():
            agent.join()
        self.pump()

    def break_stream(self, agent: FakeAgent, reason: str) -> None:
        """``agent``'s stream ends; it re-joins at once (its backoff is not the point here)."""
        self._later(lambda: self._disconnect(agent, reason))

    def _disconnect(self, agent: FakeAgent, reason: str) -> None:
        if agent.linked:
            self._apply(
                self.scheduler.handle(
                    scheduler.AgentDisconnected(agent.name, agent.epoch, self.now)
                )
            )
        agent.stream_broke(reason)
        agent.join()

    # -------------------------------------------------------------- the wire

    def agent_joined(self, agent: FakeAgent, join: m.Join) -> None:
        def connect() -> None:
            actions = self.scheduler.handle(scheduler.AgentConnected(join, self.now))
            agent.epoch = self.scheduler.nodes[join.name].epoch
            agent.linked = True
            self._apply(actions)

        self._later(connect)

    def from_agent(self, agent: FakeAgent, message: m.AgentMessage) -> None:
        epoch = agent.epoch

        def arrive() -> None:
            self.received.append((agent.name, message))
            event = scheduler.AgentSaid(agent.name, epoch, message, self.now)
            self._apply(self.scheduler.handle(event))

        self._later(arrive)

    def _apply(self, actions: list) -> None:
        for action in actions:
            if isinstance(action, scheduler.Send):
                agent = self.agents.get(action.node_id)
                if agent is not None and agent.linked and agent.epoch == action.epoch:
                    message = action.message
                    self._later(lambda agent=agent, message=message: agent.deliver(message))
            elif isinstance(action, scheduler.Drop):
                agent = self.agents.get(action.node_id)
                if agent is not None and agent.epoch == action.epoch:
                    reason = action.reason
                    self._later(lambda agent=agent, why=reason: self._disconnect(agent, why))
            elif isinstance(action, scheduler.PersistJob):
                self._writes.append(
                    self.store.job_write(action.job, action.transition, action.detail, self.now)
                )
            elif isinstance(action, scheduler.PersistNode):
                self._writes.append(self.store.node_write(action.node))
            elif isinstance(action, scheduler.PersistLearned):
                self._writes.append(self.store.learned_write(action.lesson, self.now))
            elif isinstance(action, scheduler.Notify):
                self.notified.append(action.job_id)

    def _later(self, step: Callable[[], None]) -> None:
        self._queue.append(step)

    def pump(self) -> None:
        """Carry every queued step out, in order; steps queue further steps."""
        if self._pumping:
            return
        self._pumping = True
        try:
            while self._queue:
                self._queue.popleft()()
        finally:
            self._pumping = False

    # -------------------------------------------------------------- looking

    def job(self, job_id: str) -> m.JobInfo:
        return self.scheduler.jobs[job_id].info()

    def transitions(self, job_id: str) -> list[str]:
        self.commit()
        return [state for _, state, _, _ in self.store.transitions(job_id)]

    def node_state(self, name: str) -> str:
        return self.scheduler.nodes[name].state
