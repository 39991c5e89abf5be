"""Start a real scheduler and real agents as processes on loopback, for integration tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["Cluster"]

_LISTENING = re.compile(r"listening on [\d.]+:(\d+)")
_AGENT_PORT = re.compile(r"(?:mutual-TLS port|agents' port) (\d+)")
_CA_HASH = re.compile(r"CA hash: (sha256:[0-9a-f]{64})")


#: A node of one simulated 0.5 TFLOPS CPU, as ``--devices`` takes it.
SIMULATED_CPU = (
    "devices:\n"
    "  - {kind: cpu, vendor: intel, model: Xeon, memory: 4GiB, tflops: 0.5}\n"
    "include_host: false\n"
)


class Cluster:
    """A scheduler process plus any number of agent processes, all torn down on close.

    By default the scheduler runs ``--insecure`` (plaintext on loopback, token still
    checked); ``tls=True`` runs it as deployed: TLS for clients, mutual TLS for agents,
    which enrol with ``--ca-hash`` (``ca_hash``) and a token.
    """

    def __init__(
        self,
        workdir: Path,
        token: str = "test-token",
        tls: bool = False,
        **scheduler_flags: object,
    ):
        self.workdir = workdir
        self.token = token
        self.tls = tls
        self.ca_hash = ""
        self.agent_port = 0
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        flags = {
            "heartbeat-interval": 0.2,
            "lost-after": 1.5,
            "unschedulable-timeout": 0,
            **scheduler_flags,
        }
        self.state_dir = workdir / "state"
        self.port = 0
        self.start_scheduler(flags)

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{name}.log", "wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "anypu", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    def printed(self, name: str, pattern: str, timeout: float = 30) -> str:
        """The last match of ``pattern``'s first group in process ``name``'s log, once
        it has printed one (an address it listens at)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.findall(pattern, self.log(name))
            if found:
                return str(found[-1])
            time.sleep(0.1)
        raise AssertionError(f"{name} printed no {pattern!r}:\n" + self.log(name))

    def start_scheduler(self, flags: dict[str, object]) -> None:
        args = ["scheduler", "--port", str(self.port), "--state-dir", str(self.state_dir)]
        args += ["--token", self.token]
        if not self.tls:
            args.append("--insecure")
        if self.agent_port:
            args += ["--agent-port", str(self.agent_port)]  # agents find it again on restart
        for key, value in flags.items():
            args += [f"--{key}", str(value)]
        self._flags = flags
        self._spawn("scheduler", args)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            text = self.log("scheduler")
            match = _LISTENING.search(text)
            if match and (not self.tls or "join an agent" in text):
                self.port = int(match.group(1))
                self.agent_port = int(_AGENT_PORT.search(text).group(1))  # type: ignore[union-attr]
                if self.tls:
                    self.ca_hash = _CA_HASH.search(text).group(1)  # type: ignore[union-attr]
                return
            if self.procs["scheduler"].poll() is not None:
                raise RuntimeError("scheduler exited:\n" + self.log("scheduler"))
            time.sleep(0.05)
        raise RuntimeError("scheduler did not start:\n" + self.log("scheduler"))

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def agents_address(self) -> str:
        """The agents' port (an event loop's streams; with TLS, the mutual-TLS one)."""
        return f"127.0.0.1:{self.agent_port}"

    def add_agent(
        self,
        name: str,
        tier: str = "edge",
        devices_yaml: str | None = None,
        site: str = "",
        address: str | None = None,
        token: str | None = None,
        direct: bool = False,
        extra: tuple[str, ...] = (),
    ) -> subprocess.Popen[bytes]:
        """Start an agent; ``address`` overrides the scheduler's (e.g. a proxy in front);
        ``token`` what it presents (default the scheduler's token; e.g. a join token);
        ``direct``: it takes calls under leases on a loopback port of its own; ``extra``:
        more ``anypu agent`` flags."""
        token = self.token if token is None else token
        args = ["agent", "--scheduler", address or self.address, "--token", token]
        args += ["--tier", tier]
        args += ["--name", name, "--cache-dir", str(self.workdir / f"cache-{name}")]
        if self.tls:
            args += ["--ca-hash", self.ca_hash]
        if site:
            args += ["--site", site]
        if direct:
            args += ["--direct-address", "127.0.0.1:0"]
        if devices_yaml is not None:
            path = self.workdir / f"{name}.yaml"
            path.write_text(devices_yaml)
            args += ["--devices", str(path)]
        return self._spawn(name, [*args, *extra])

    def stop(self, name: str) -> None:
        """Stop a process as an operator does (SIGTERM) and wait for it to exit."""
        proc = self.procs.pop(name)
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def restart_scheduler(self) -> None:
        self.kill("scheduler")
        self.start_scheduler(self._flags)

    @contextmanager
    def connected_client(self, nodes: int) -> Iterator[Any]:
        """An SDK client over gRPC, once ``nodes`` agents are ready; closed afterwards."""
        from anypu.sdk import Client
        from anypu.sdk._transport import GrpcTransport

        ca_pem = None
        if self.tls:
            from anypu.comm import client_ca

            ca_pem = client_ca(self.address, self.ca_hash)
        client = Client(GrpcTransport(self.address, self.token, ca_pem))
        try:
            self.wait_nodes(client, nodes)
            yield client
        finally:
            client.close()

    def wait_nodes(self, client, count: int, timeout: float = 60) -> None:
        from anypu.errors import SchedulerUnavailableError

        deadline = time.monotonic() + timeout
        ready: list = []
        while time.monotonic() < deadline:
            try:
                ready = [n for n in client.transport.list_nodes() if n.state == "ready"]
            except SchedulerUnavailableError:  # restarting: the channel reconnects
                ready = []
            if len(ready) >= count:
                return
            time.sleep(0.1)
        raise AssertionError(f"only {len(ready)} of {count} nodes joined")

    def close(self) -> None:
        for name in list(self.procs):
            proc = self.procs.pop(name)
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(5)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(5)


def submit_estimated(
    client: Any, model: Any, inputs: Any, memory_bytes: int, options: Any = None
) -> str:
    """Submit ``model(inputs)`` as if its estimate said ``memory_bytes`` (what a slice
    must hold and a share reserves): how tests make an estimate wrong on purpose."""
    import dataclasses

    from anypu.sdk import RunOptions

    request, args = client._describe(model, inputs, options or RunOptions())
    request = dataclasses.replace(client._with_inputs(request, args), memory_bytes=memory_bytes)
    info, _ = client.transport.submit(request)
    return str(info.job_id)
