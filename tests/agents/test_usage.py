"""The usage sampler of the ``dynamic`` scheduler (agents/usage.py, issue #14).

On real cgroups where the host has them (cgroup v2 is writable here), else on a
temp dir with the kernel's file formats, driven by a fake clock.
"""

from __future__ import annotations

import math
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agents import usage as u
from agents.usage import MIB, Usage, UsageSampler
from tests.agents.helpers import wait_until
from tests.envstubs import Clock


def fake_cgroup(path: Path, usec: int, mem: int | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "cgroup.procs").write_text("")
    (path / "cpu.stat").write_text(f"usage_usec {usec}\nuser_usec {usec}\nsystem_usec 0\n")
    if mem is not None:
        (path / "memory.current").write_text(f"{mem}\n")
    return path


# -- real cgroups -------------------------------------------------------------------------------

BURN = "import time\nwhile True: pass\n"


def _in_cgroup(cg: Path, code: str) -> subprocess.Popen[bytes]:
    """A python process that joins ``cg`` before it runs ``code``."""
    cg.mkdir()
    join = f"open({str(cg / 'cgroup.procs')!r}, 'w').write('0')\n"
    return subprocess.Popen([sys.executable, "-c", join + code])


def test_a_busy_service_is_measured_in_its_own_cgroup(cgroup_base: Path) -> None:
    node = cgroup_base / "node1"
    node.mkdir()
    procs = [
        _in_cgroup(node / "burn", BURN),
        _in_cgroup(node / "ocf:idle", "import time\ntime.sleep(60)\n"),
        _in_cgroup(node / "_daemon", "import time\ntime.sleep(60)\n"),
    ]
    (node / "empty").mkdir()  # a cgroup without a process: no service
    try:
        wait_until(lambda: all((node / n / "cgroup.procs").read_text().strip() for n in ("burn", "_daemon")))
        sampler = UsageSampler(node, interval=0.5)
        assert sampler.sample() and sampler.snapshot() is None  # no rate from one reading
        assert not sampler.sample()  # not due yet
        time.sleep(1.0)
        assert sampler.sample()
        snap = sampler.snapshot()
        assert snap is not None
        assert set(snap.services) == {"proc:burn", "ocf:idle"}  # not _daemon, not the empty one
        burn_cpu, burn_mem = snap.services["proc:burn"]
        assert 0.2 <= burn_cpu <= 1.1  # one busy thread on a shared 2-core host
        assert burn_mem >= MIB and burn_mem % MIB == 0  # resident python, rounded to MiB
        assert snap.services["ocf:idle"][0] < 0.05
        # the node counts everything in it: its services and ha-node's cgroup
        assert snap.cpu >= burn_cpu - 0.05
        assert snap.mem >= burn_mem + snap.services["ocf:idle"][1]
        # the busy service stops and its cgroup goes: it leaves the next sample
        procs[0].kill()
        procs[0].wait()
        wait_until(lambda: not (node / "burn" / "cgroup.procs").read_text().strip())
        (node / "burn").rmdir()
        time.sleep(0.5)
        assert sampler.sample(force=True)
        snap2 = sampler.snapshot()
        assert snap2 is not None and set(snap2.services) == {"ocf:idle"}
    finally:
        for p in procs:
            p.kill()
            p.wait()


# -- the arithmetic, on files of the kernel's format ----------------------------------------------------


def test_rates_are_smoothed_and_a_new_service_starts_at_its_first_rate(tmp_path: Path) -> None:
    node = tmp_path / "node1"
    clock = Clock(1000.0)
    fake_cgroup(node, 0)
    fake_cgroup(node / "_daemon", 0, 60 * MIB)
    fake_cgroup(node / "web", 0, 40 * MIB)
    sampler = UsageSampler(node, interval=2.0, smoothing=4.0, clock=clock)
    assert sampler.sample() and sampler.snapshot() is None
    clock.now += 2.0
    fake_cgroup(node / "_daemon", 1_000_000, 60 * MIB)  # half a core over 2 s
    fake_cgroup(node / "web", 1_000_000, 40 * MIB)  # half a core
    assert sampler.sample()
    # the node: the sum of its cgroups (ha-node's included), memory too (no memory.current)
    assert sampler.snapshot() == Usage(1.0, 100 * MIB, {"proc:web": (0.5, 40 * MIB)})
    clock.now += 2.0
    fake_cgroup(node / "_daemon", 1_000_000 + 5_000_000, 60 * MIB)  # now 2.5 cores
    fake_cgroup(node / "web", 1_000_000, 40 * MIB)  # idle now
    fake_cgroup(node / "db", 0, 10 * MIB)  # new: no rate yet
    assert sampler.sample()
    alpha = 1.0 - math.exp(-2.0 / 4.0)
    snap = sampler.snapshot()
    assert snap is not None
    assert snap.cpu == round(0.5 + alpha * 2.0 + 0.5 - alpha * 0.5, 2)
    assert snap.services == {"proc:web": (round(0.5 - alpha * 0.5, 2), 40 * MIB)}
    clock.now += 2.0
    fake_cgroup(node / "db", 500_000, 10 * MIB)  # a quarter core, taken as it is
    assert sampler.sample()
    snap = sampler.snapshot()
    assert snap is not None and snap.services["proc:db"] == (0.25, 10 * MIB)
    # web leaves: gone from the services and from the node's CPU at once
    for f in (node / "web").iterdir():
        f.unlink()
    (node / "web").rmdir()
    clock.now += 2.0
    assert sampler.sample()
    snap = sampler.snapshot()
    assert snap is not None and set(snap.services) == {"proc:db"}
    # both left idle since: ha-node's and db's rates decay, web's counts no more
    assert snap.cpu == round((0.5 + alpha * 2.0) * (1 - alpha) ** 2 + 0.25 * (1 - alpha), 2)
    (node / "memory.current").write_text(f"{300 * MIB}\n")  # with the memory controller: the node's own
    clock.now += 2.0
    assert sampler.sample()
    snap = sampler.snapshot()
    assert snap is not None and snap.mem == 300 * MIB


def test_samples_are_paced_and_a_forced_one_keeps_a_minimum_gap(tmp_path: Path) -> None:
    clock = Clock(1000.0)
    sampler = UsageSampler(fake_cgroup(tmp_path / "n", 0, 0), interval=5.0, clock=clock)
    assert sampler.due() and sampler.sample()
    clock.now += 0.1
    assert not sampler.due() and not sampler.sample() and not sampler.sample(force=True)
    # no rate yet: the second sample is due after MIN_GAP already
    clock.now += u.MIN_GAP
    assert sampler.due() and sampler.sample() and sampler.snapshot() is not None
    # then every interval, or forced after MIN_GAP
    clock.now += 0.1
    assert not sampler.sample(force=True)
    clock.now += u.MIN_GAP
    assert not sampler.due() and not sampler.sample() and sampler.sample(force=True)
    clock.now += 5.0
    assert sampler.due() and sampler.sample()
    assert sampler.samples == 4


def test_memory_falls_back_to_the_resident_set_of_the_cgroups_processes(tmp_path: Path) -> None:
    """A hybrid host keeps the memory controller on cgroup v1: no memory.current in cgroup v2."""
    cg = fake_cgroup(tmp_path / "svc", 0)
    assert u.read_memory(cg) == 0  # no process listed
    (cg / "cgroup.procs").write_text("1\n")  # pid 1 exists in every namespace
    statm = Path("/proc/1/statm").read_text().split()
    assert u.read_memory(cg) == pytest.approx(int(statm[1]) * u._PAGE, rel=0.5)
    assert u.read_memory(tmp_path / "nothing") is None


def test_without_a_node_cgroup_the_node_is_the_host(tmp_path: Path) -> None:
    stat, meminfo = tmp_path / "stat", tmp_path / "meminfo"
    tick = u._TICK

    def write(busy: int, idle: int) -> None:
        stat.write_text(f"cpu  {busy} 0 0 {idle} 0 0 0 0 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n")

    meminfo.write_text("MemTotal:       8388608 kB\nMemFree: 1 kB\nMemAvailable:   6291456 kB\n")
    clock = Clock(1000.0)
    sampler = UsageSampler(None, interval=1.0, clock=clock, proc_stat=str(stat), meminfo=str(meminfo))
    write(0, 0)
    sampler.sample()
    clock.now += 2.0
    write(3 * tick, 1 * tick)  # 3 s busy over 2 s: 1.5 cores
    sampler.sample()
    assert sampler.snapshot() == Usage(1.5, 2048 * MIB, {})
    meminfo.write_text("MemTotal: 1 kB\n")  # unreadable parts: memory 0, not a failure
    assert u.host_memory(str(meminfo)) is None
    assert u.host_cpu_usec(str(tmp_path / "missing")) is None


def test_service_ids_of_cgroup_names() -> None:
    assert u.service_id("web") == "proc:web"
    assert u.service_id("ocf:db") == "ocf:db"
    assert u.service_id("_daemon") is None
    assert u.service_id(".hidden") is None
