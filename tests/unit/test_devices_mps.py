"""NVIDIA MPS: seen where its control daemon's pipe is, started with ``--start-mps``
through the real tool's command line (a stand-in binary on PATH here)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from anypu.devices import mps_running, start_mps
from anypu.errors import ConfigError


def _tool(folder: Path, body: str) -> None:
    path = folder / "nvidia-cuda-mps-control"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.fixture
def pipes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "pipes"
    folder.mkdir()
    monkeypatch.setenv("CUDA_MPS_PIPE_DIRECTORY", str(folder))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return folder


def test_the_daemon_is_seen_by_its_control_pipe(pipes: Path) -> None:
    assert not mps_running()
    (pipes / "control").touch()
    assert mps_running()


def test_start_mps_runs_the_tool_in_daemon_mode_once(pipes: Path) -> None:
    # The real tool forks a daemon that creates the control pipe; the stand-in does that.
    _tool(pipes.parent / "bin", f'[ "$1" = "-d" ] && touch "{pipes}/control"\n')
    assert start_mps().startswith("started the MPS control daemon")
    assert mps_running()
    assert start_mps().startswith("MPS control daemon already running")


def test_start_mps_says_why_it_could_not(pipes: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(pipes.parent / "bin"))
    with pytest.raises(ConfigError, match="nvidia-cuda-mps-control is not on PATH"):
        start_mps()
    _tool(
        pipes.parent / "bin", 'echo "An instance of this daemon is already running" >&2\nexit 1\n'
    )
    with pytest.raises(ConfigError, match="-d failed \\(1\\): An instance of this daemon"):
        start_mps()
