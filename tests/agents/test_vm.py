"""The ``vm`` agent (agents/vm.py) on real QEMU processes.

One boot of the default guest (the host's Debian kernel and the busybox
initramfs of agents/guestimage.py, TCG: ~6-10 s of CPU) covers the whole
life of a VM: start through ``exec_resource_agent``, QEMU in the service's
cgroup, QMP ``running``, the guest's health answer and boot id, a fresh
plugin (a new LRM) finding it, an idempotent second start, and the ACPI
power-down stop. The other cases boot no kernel: a VM with only an empty
raw ``disk`` runs the firmware, which finds nothing to boot and idles, and
never answers the power button; that is enough for the kill path, a fence
(``cgroup.kill`` of the node's cgroup) and a guest that never gets healthy.

No skip: a host without QEMU, the kernel or busybox fails (``make deps``
installs them).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agents import procutil
from agents.guestimage import HEALTH_PORT
from agents.validate import check_agent_properties
from agents.vm import VmConfigError, VmPlugin, parse_spec, ping_guest, qmp
from ha.agent import exec_resource_agent
from ha.constants import ExitCode
from tests.agents.helpers import AgentEnv, conf, kill_everything, wait_until

pytestmark = pytest.mark.timeout(180)

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@pytest.fixture
def vm(tmp_path: Path, cgroup_base: Path, token: str) -> Iterator[VmPlugin]:
    plugin = VmPlugin(tmp_path / "state", cgroup_base=cgroup_base, start_timeout=60.0, kill_wait=3.0)
    try:
        yield plugin
    finally:
        for state_file in plugin.state_dir.glob("*/vm/*.json"):
            st = plugin.load_state(state_file.parent.parent.name, state_file.stem)
            if st is not None and st.cgroup:
                procutil.cgroup_kill(Path(st.cgroup))
        assert not kill_everything(plugin, token), "a QEMU survived its test"


@pytest.fixture
def blank_disk(tmp_path: Path) -> str:
    """A raw disk with nothing to boot: the firmware runs and idles; no kernel, no ACPI handling."""
    disk = tmp_path / "blank.raw"
    with open(disk, "wb") as f:
        f.truncate(1 << 20)
    return str(disk)


def qemu_pids(plugin: VmPlugin, node: str, name: str) -> list[int]:
    st = plugin.load_state(node, name)
    return [] if st is None else plugin.live_pids(st)


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def test_default_guest_lifecycle(vm: VmPlugin, cgroup_base: Path) -> None:
    sid = "vm:100"
    env = AgentEnv("n1", {"vm": vm})
    cd = conf(sid, memory="256", cores="1")

    t0 = time.monotonic()
    assert exec_resource_agent(env.env, sid, cd, "started", {}) == ExitCode.SUCCESS, env.text()
    boot = time.monotonic() - t0
    assert ("info", f"service status {sid} started") in env.lines

    # one QEMU process, the leader of its group, in the service's cgroup below the node's
    st = vm.load_state("n1", "100")
    assert st is not None and st.cgroup == str(cgroup_base / "n1" / "vm:100")
    assert comm(st.pid).startswith("qemu-system")
    assert st.pid in procutil.cgroup_procs(Path(st.cgroup))
    cmdline = Path(f"/proc/{st.pid}/cmdline").read_bytes().split(b"\0")
    assert b"tcg" in cmdline and b"256" in cmdline, cmdline

    # QMP says running; the guest answers with its own boot id (not the host's)
    status = vm.status(env.env, sid, cd)
    assert status.running and status.qmp_status == "running" and status.guest is not None, status
    assert UUID.match(status.guest.boot_id) and status.guest.boot_id != procutil.read_boot_id()
    assert vm.healthy(env.env, sid, cd)
    (ret,) = qmp(vm.qmp_path("n1", "100"), "query-name")
    assert ret == {"name": sid}

    # a fresh plugin (a restarted LRM) finds it by its state file; a second start changes nothing
    fresh = VmPlugin(vm.state_dir, cgroup_base=cgroup_base)
    assert fresh.check_running(env.env, sid, cd)
    again = fresh.status(env.env, sid, cd)
    assert again.guest is not None and again.guest.boot_id == status.guest.boot_id
    assert again.guest.uptime > status.guest.uptime
    assert exec_resource_agent(env.env, sid, cd, "started", {}) == ExitCode.SUCCESS
    assert vm.load_state("n1", "100") == st

    # stop: the ACPI power button, the guest powers itself off, well before the timeout
    t1 = time.monotonic()
    assert exec_resource_agent(env.env, sid, cd, "stopped", {}) == ExitCode.SUCCESS, env.text()
    took = time.monotonic() - t1
    assert took < 20, took
    assert not vm.check_running(env.env, sid, cd)
    assert not procutil.pid_alive(st.pid)
    log = vm.log_path("n1", "100").read_text(errors="replace")
    assert f"PYHA-GUEST: up boot_id={status.guest.boot_id}" in log, log
    assert "PYHA-GUEST: power button: powering off" in log, log
    assert not any(lvl == "warning" for lvl, _ in env.lines), env.text()  # no kill was needed
    # nothing left: state file, cgroup, sockets
    assert vm.load_state("n1", "100") is None
    assert not Path(st.cgroup).exists()
    assert not vm.qmp_path("n1", "100").exists() and not vm.health_path("n1", "100").exists()
    assert ping_guest(vm.health_path("n1", "100"), timeout=0.5) is None
    print(f"\ndefault guest: started and healthy in {boot:.1f}s, ACPI power-down in {took:.1f}s")


def test_guest_ignoring_the_power_button_is_killed_after_stop_timeout(vm: VmPlugin, blank_disk: str) -> None:
    sid = "vm:101"
    env = AgentEnv("n1", {"vm": vm})
    cd = conf(sid, disk=blank_disk, memory="32", stop_timeout="1")
    assert exec_resource_agent(env.env, sid, cd, "started", {}) == ExitCode.SUCCESS, env.text()
    status = vm.status(env.env, sid, cd)
    assert status.qmp_status == "running" and status.guest is None  # own disk: health "none"
    pids = qemu_pids(vm, "n1", "101")
    assert pids

    t0 = time.monotonic()
    assert exec_resource_agent(env.env, sid, cd, "stopped", {}) == ExitCode.SUCCESS, env.text()
    took = time.monotonic() - t0
    assert ("warning", f"service {sid}: guest still running 1s after ACPI power-down") in env.lines
    assert 1.0 <= took < 8, took
    assert not any(procutil.pid_alive(p) for p in pids)
    assert vm.load_state("n1", "101") is None

    # a request's timeout wins over stop_timeout; 0 is a hard stop (no power-down wait)
    env.lines.clear()
    assert exec_resource_agent(env.env, sid, cd, "started", {}) == ExitCode.SUCCESS, env.text()
    t0 = time.monotonic()
    rc = exec_resource_agent(env.env, sid, cd, "request_stop", {"timeout": 0})
    assert rc == ExitCode.SUCCESS, env.text()
    assert time.monotonic() - t0 < 5
    assert not any("ACPI" in msg for _, msg in env.lines), env.text()


def test_fencing_the_node_cgroup_kills_its_vms(vm: VmPlugin, blank_disk: str, cgroup_base: Path) -> None:
    sid = "vm:102"
    env = AgentEnv("n1", {"vm": vm})
    cd = conf(sid, disk=blank_disk, memory="32")
    assert exec_resource_agent(env.env, sid, cd, "started", {}) == ExitCode.SUCCESS, env.text()
    pids = qemu_pids(vm, "n1", "102")
    assert pids and all(comm(p).startswith("qemu-system") for p in pids)
    procutil.cgroup_kill(cgroup_base / "n1")  # what the node's fence does (fence/kill.py NodeKiller)
    wait_until(lambda: not vm.check_running(env.env, sid, cd), timeout=5)
    assert not any(procutil.pid_alive(p) for p in pids)


def test_guest_never_healthy_fails_the_start_and_leaves_nothing(vm: VmPlugin, blank_disk: str) -> None:
    sid = "vm:103"
    env = AgentEnv("n1", {"vm": vm})
    vm.start_timeout = 2.0
    cd = conf(sid, disk=blank_disk, memory="32", health="guest")  # the firmware never answers
    assert exec_resource_agent(env.env, sid, cd, "started", {}) == ExitCode.ERROR
    assert ("err", f"service {sid}: guest not up within 2s, stopping it") in env.lines, env.text()
    assert ("warning", f"unable to start service {sid}") in env.lines
    assert not vm.check_running(env.env, sid, cd)
    assert vm.load_state("n1", "103") is None


def test_qemu_failing_at_once_is_reported(vm: VmPlugin, tmp_path: Path) -> None:
    sid = "vm:104"
    env = AgentEnv("n1", {"vm": vm})
    junk = tmp_path / "not-an-image.qcow2"  # read as qcow2: QEMU refuses it and exits
    junk.write_bytes(b"\0" * 4096)
    cd = conf(sid, disk=str(junk), memory="32")
    assert exec_resource_agent(env.env, sid, cd, "started", {}) == ExitCode.ERROR
    errors = [msg for lvl, msg in env.lines if lvl == "err"]
    assert errors and errors[0].startswith(f"service {sid}: QEMU exited during start: "), env.text()
    assert "qcow2" in errors[0], errors  # the last line of QEMU's own message
    assert not vm.check_running(env.env, sid, cd)

    # a missing image is refused before QEMU runs
    env.lines.clear()
    cd = conf(sid, disk=str(tmp_path / "missing.qcow2"))
    assert exec_resource_agent(env.env, sid, cd, "started", {}) == ExitCode.ERROR
    assert ("err", f"service {sid}: property 'disk': no readable file '{tmp_path}/missing.qcow2' "
            "(on this node)") in env.lines, env.text()  # fmt: skip


def test_relocate_stops_here(vm: VmPlugin, blank_disk: str) -> None:
    sid = "vm:105"
    env = AgentEnv("n1", {"vm": vm})
    cd = conf(sid, disk=blank_disk, memory="32", stop_timeout="0")
    assert exec_resource_agent(env.env, sid, cd, "started", {}) == ExitCode.SUCCESS, env.text()
    assert exec_resource_agent(env.env, sid, cd, "relocate", {"target": "n2"}) == ExitCode.SUCCESS
    assert ("info", f"stopping service {sid} (relocate to node 'n2')") in env.lines, env.text()
    assert not vm.check_running(env.env, sid, cd)

    # a migrate without a way to reach the target (no peer: not in a live cluster) relocates too
    env.lines.clear()
    assert exec_resource_agent(env.env, sid, cd, "started", {}) == ExitCode.SUCCESS, env.text()
    assert vm.peer is None
    assert exec_resource_agent(env.env, sid, cd, "migrate", {"target": "n2"}) == ExitCode.SUCCESS
    assert ("info", f"service {sid}: no way to reach node 'n2' for a live migration, relocating") in env.lines
    assert not vm.check_running(env.env, sid, cd)


def test_config_parsing_and_validation(tmp_path: Path) -> None:
    spec = parse_spec({})
    assert spec.default_guest and spec.health == "guest" and spec.memory_mb == 256 and spec.cores == 1
    own = parse_spec({"kernel": "/k", "initrd": "/i", "append": "console=ttyS0", "cores": "2"})
    assert not own.default_guest and own.health == "none" and own.cores == 2
    assert parse_spec({"disk": "/d.qcow2", "health": "guest"}).health == "guest"
    for bad, msg in (
        ({"memory": "8"}, "'memory'"),
        ({"cores": "x"}, "'cores'"),
        ({"kernel": "relative"}, "absolute"),
        ({"initrd": "/i"}, "need 'kernel'"),
        ({"health": "maybe"}, "'health'"),
    ):
        with pytest.raises(VmConfigError, match=msg):
            parse_spec(bad)

    # ha-manager add/set: image files must exist on the node taking the request
    image = tmp_path / "disk.raw"
    image.write_bytes(b"")
    check_agent_properties("vm", {"disk": str(image), "memory": "512"})
    with pytest.raises(ValueError, match="no readable file"):
        check_agent_properties("vm", {"kernel": str(tmp_path / "nope")})
    with pytest.raises(ValueError, match="stop_timeout"):
        check_agent_properties("vm", {"stop_timeout": "-1"})


def test_sockets_fit_in_sun_path_and_accel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    deep = tmp_path / ("d" * 120)
    plugin = VmPlugin(deep, cgroup_base=None)
    path = plugin.qmp_path("node1", "100")
    assert len(str(path)) < 108 and path.parent == plugin.health_path("node1", "100").parent
    assert path == VmPlugin(deep, cgroup_base=None).qmp_path("node1", "100")  # stable for a fresh LRM
    assert path != VmPlugin(tmp_path / "other", cgroup_base=None).qmp_path("node1", "100")
    short = VmPlugin("/var/lib/pyha", cgroup_base=None)
    assert short.qmp_path("n1", "100") == Path("/var/lib/pyha/n1/vm/100.qmp")
    monkeypatch.delenv("PYHA_VM_ACCEL", raising=False)
    argv = " ".join(short.command("vm:100", "n1", "100", parse_spec({"disk": "/d"})))
    assert argv.startswith("/") and HEALTH_PORT in argv and "-kernel" not in argv
    assert "-accel tcg -machine pc -cpu max" in argv
    monkeypatch.setenv("PYHA_VM_ACCEL", "kvm")
    argv = " ".join(short.command("vm:100", "n1", "100", parse_spec({"disk": "/d"})))
    assert "-accel kvm -machine pc -cpu host" in argv


def test_the_default_guest_is_looked_up_once_while_its_files_exist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A live migration's target must not pay the image check (40-60 ms) before its QEMU listens."""
    import agents.vm as vm_mod  # noqa: PLC0415

    kernel, initrd = tmp_path / "vmlinux", tmp_path / "initrd.cpio"
    kernel.write_bytes(b"k")
    initrd.write_bytes(b"i")
    calls: list[Path | None] = []

    def lookup(cache: Path | None) -> tuple[Path, Path]:
        calls.append(cache)
        return kernel, initrd

    monkeypatch.setattr(vm_mod, "default_vm_guest", lookup)
    plugin = VmPlugin(tmp_path / "state", cgroup_base=None)
    spec = parse_spec({})
    for _ in range(3):
        argv = plugin.command("vm:100", "node1", "100", spec)
        assert str(kernel) in argv and str(initrd) in argv
    assert len(calls) == 1
    initrd.unlink()  # the cache was cleaned: built (looked up) again
    plugin.command("vm:100", "node1", "100", spec)
    assert len(calls) == 2
