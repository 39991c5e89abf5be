"""cgroup v2 for host-memory workers, at the kernel's boundary: a directory tree laid out
as a delegated cgroup2 hierarchy (this machine mounts cgroup v1, so the kernel's side —
moving processes, counting memory, killing — is what the tree's files say it did)."""

from __future__ import annotations

from pathlib import Path

from anypu.agents._cgroups import CPU_PERIOD_US, host_cgroups


def _proc(tmp_path: Path, mounts: str, cgroup: str) -> Path:
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "mounts").write_text(mounts)
    (proc / "cgroup").write_text(cgroup)
    return proc


def _hierarchy(tmp_path: Path, controllers: str = "cpuset cpu io memory pids") -> Path:
    own = tmp_path / "cg" / "system.slice" / "anypu-agent.service"
    own.mkdir(parents=True)
    (own / "cgroup.controllers").write_text(controllers + "\n")
    (own / "cgroup.subtree_control").write_text("\n")
    (own / "cgroup.procs").write_text("")  # the kernel empties it as the agent moves out
    return own


def _mounts(tmp_path: Path) -> str:
    return (
        "sysfs /sys sysfs rw,nosuid 0 0\n"
        f"cgroup2 {tmp_path / 'cg'} cgroup2 rw,nosuid,nodev,noexec,relatime 0 0\n"
    )


CGROUP = "0::/system.slice/anypu-agent.service\n"


def test_a_delegated_cgroup_hands_cpu_and_memory_to_one_cgroup_per_worker(tmp_path):
    own = _hierarchy(tmp_path)
    cgroups, line = host_cgroups(_proc(tmp_path, _mounts(tmp_path), CGROUP), pid=4242)
    assert cgroups is not None and str(own) in line
    assert (own / "anypu-agent" / "cgroup.procs").read_text() == "4242"  # out of the way
    assert (own / "cgroup.subtree_control").read_text() == "+cpu +memory"
    worker = cgroups.worker("cpu0", 1)
    assert worker.path == own / "anypu-cpu0-1"
    (worker.path / "memory.current").write_text("300000000\n")  # torch imported
    (worker.path / "memory.swap.max").write_text("max\n")
    worker.add(5151)
    worker.limit_cpu(4)
    assert worker.limit_memory_above_current(1 << 30) == 300000000 + (1 << 30)
    assert (worker.path / "cgroup.procs").read_text() == "5151"
    assert (worker.path / "cpu.max").read_text() == f"{4 * CPU_PERIOD_US} {CPU_PERIOD_US}"
    assert (worker.path / "memory.max").read_text() == str(300000000 + (1 << 30))
    assert (worker.path / "memory.swap.max").read_text() == "0"


def test_an_oom_kill_is_seen_once(tmp_path):
    _hierarchy(tmp_path)
    cgroups, _ = host_cgroups(_proc(tmp_path, _mounts(tmp_path), CGROUP), pid=1)
    assert cgroups is not None
    worker = cgroups.worker("cpu0", 0)
    events = worker.path / "memory.events"
    events.write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n")
    worker.add(77)  # what happened before this worker does not count
    assert not worker.killed_for_memory()
    events.write_text("low 0\nhigh 0\nmax 9\noom 2\noom_kill 2\noom_group_kill 0\n")
    assert worker.killed_for_memory() and not worker.killed_for_memory()
    (worker.path / "memory.max").write_text("1073741824\n")
    assert worker.peak() == 1 << 30  # no memory.peak (before Linux 5.19): the cap


def test_without_cgroup_v2_the_rlimits_are_the_cap(tmp_path):
    v1 = "cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n"
    cgroups, line = host_cgroups(_proc(tmp_path, v1, "9:memory:/\n"))
    assert cgroups is None
    assert line == "cgroup v2 is not mounted here: host-memory jobs are capped by RLIMIT_DATA only"


def test_controllers_not_delegated_are_named(tmp_path):
    _hierarchy(tmp_path, controllers="pids")
    cgroups, line = host_cgroups(_proc(tmp_path, _mounts(tmp_path), CGROUP), pid=1)
    assert cgroups is None
    assert "controller(s) cpu, memory not delegated" in line and "RLIMIT_DATA only" in line


def test_a_cgroup_shared_with_other_processes_is_not_taken_over(tmp_path):
    own = _hierarchy(tmp_path)
    (own / "cgroup.procs").write_text("100\n101\n")
    cgroups, line = host_cgroups(_proc(tmp_path, _mounts(tmp_path), CGROUP), pid=1)
    assert cgroups is None
    assert "holds other processes (100, 101)" in line
    assert "run the agent in a cgroup of its own" in line
