"""``ha-watchdog`` with real processes, a real UNIX socket and a real cgroup."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from fence.procfs import read_boot_id, read_stat

CGROUP_ROOT = Path("/sys/fs/cgroup/unified")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie counts as dead
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def wait_for(pred, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return bool(pred())


class Victims:
    """Processes standing in for a node's services and daemon; always cleaned up."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, *, new_group: bool = True) -> subprocess.Popen[bytes]:
        p = subprocess.Popen(["sleep", "300"], start_new_session=new_group)
        self.procs.append(p)
        return p

    def cleanup(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=5)


@pytest.fixture
def victims() -> Iterator[Victims]:
    v = Victims()
    yield v
    v.cleanup()


@pytest.fixture
def cgroup() -> Iterator[Path]:
    path = CGROUP_ROOT / f"pyha-test-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    yield path
    for _ in range(50):
        try:
            path.rmdir()
            break
        except OSError:
            (path / "cgroup.kill").write_text("1")
            time.sleep(0.05)


def record(path: Path, proc: subprocess.Popen[bytes], **override: object) -> None:
    """A process-group record as the proc agent writes it (agents/proc.py state file)."""
    st = read_stat(proc.pid)
    assert st is not None
    rec = {"pid": proc.pid, "pgid": os.getpgid(proc.pid), "starttime": st.starttime,
           "boot_id": read_boot_id(), **override}  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rec))


def start_watchdog(tmp_path: Path, *extra: str, timeout: float = 0.6) -> tuple[subprocess.Popen[str], Path]:
    sock = tmp_path / "wd.sock"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cli.watchdog",
            "--node",
            "n1",
            "--socket",
            str(sock),
            "--timeout",
            str(timeout),
            "--no-harden",
            *extra,
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert wait_for(sock.exists, 10), "watchdog socket did not appear"
    return proc, sock


# A stand-in node daemon: pets N times every 0.1 s, then either hangs (stops petting),
# disconnects, or sends the magic close. The watchdog kills its client, so it must be
# a separate process, never pytest itself.
_CLIENT = """
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
for _ in range(int(sys.argv[2])):
    s.send(b"\\0")
    time.sleep(0.1)
mode = sys.argv[3]
if mode == "magic":
    s.send(b"V")
    s.close()
elif mode == "close":
    s.close()
    time.sleep(300)
else:
    time.sleep(300)
"""


def client(victims: Victims, sock: Path, pets: int, mode: str) -> subprocess.Popen[bytes]:
    p = subprocess.Popen([sys.executable, "-c", _CLIENT, str(sock), str(pets), mode])
    victims.procs.append(p)
    return p


def test_socket_is_private(tmp_path: Path) -> None:
    proc, sock = start_watchdog(tmp_path, "--exit-on-disarm")
    try:
        assert (sock.stat().st_mode & 0o777) == 0o600
    finally:
        proc.kill()
        proc.wait()


def test_regular_pets_keep_it_quiet_and_magic_close_disarms(tmp_path: Path, victims: Victims) -> None:
    svc = victims.spawn()
    pgids = tmp_path / "pgids"
    pgids.mkdir()
    record(pgids / "svc.json", svc)
    proc, sock = start_watchdog(tmp_path, "--pgid-dir", str(pgids), "--exit-on-disarm")
    c = client(victims, sock, 15, "magic")  # 1.5 s of pets, more than twice the timeout
    time.sleep(1.0)
    assert proc.poll() is None and alive(svc.pid)
    assert proc.wait(timeout=5) == 0
    assert alive(svc.pid)
    assert c.wait(timeout=5) == 0  # the client was not killed


def test_missing_pets_fire_and_kill_services_and_daemon(
    tmp_path: Path, victims: Victims, cgroup: Path
) -> None:
    in_cgroup = victims.spawn()
    (cgroup / "cgroup.procs").write_text(str(in_cgroup.pid))
    grouped = victims.spawn()
    agent_state = victims.spawn()
    pgids = tmp_path / "pgids"
    record(pgids / "svc.json", grouped)
    record(pgids / "node1" / "proc" / "web.json", agent_state)
    other = victims.spawn(new_group=False)
    proc, sock = start_watchdog(
        tmp_path, "--cgroup", str(cgroup), "--pgid-dir", str(pgids), "--kill-pid", str(other.pid), timeout=0.5
    )
    daemon = client(victims, sock, 3, "hang")  # pets for 0.3 s, then hangs like a stopped daemon
    started = time.monotonic()
    assert proc.wait(timeout=10) == 3
    fired_after = time.monotonic() - started
    assert 0.65 <= fired_after < 4.0  # last pet at ~0.2-0.3 s, plus the 0.5 s timeout
    for p in (in_cgroup, grouped, agent_state, other, daemon):
        assert wait_for(lambda p=p: not alive(p.pid), 5), f"pid {p.pid} survived the watchdog"
    assert "FIRING: no pet" in (proc.stderr.read() if proc.stderr else "")


def test_disconnect_without_magic_close_fires(tmp_path: Path, victims: Victims) -> None:
    svc = victims.spawn()
    pgids = tmp_path / "pgids"
    record(pgids / "svc.json", svc)
    proc, sock = start_watchdog(tmp_path, "--pgid-dir", str(pgids), timeout=30)
    client(victims, sock, 1, "close")  # a crashed node daemon: its socket closes without 'V'
    assert proc.wait(timeout=5) == 3
    assert wait_for(lambda: not alive(svc.pid), 5)


def test_sigterm_is_ignored_while_armed(tmp_path: Path, victims: Victims) -> None:
    proc, sock = start_watchdog(tmp_path, timeout=0.8)
    client(victims, sock, 2, "hang")
    time.sleep(0.15)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    assert proc.poll() is None, "an armed watchdog must not stop on SIGTERM"
    assert proc.wait(timeout=5) == 3  # and it still fires once pets stop


def test_unarmed_watchdog_stops_on_sigterm(tmp_path: Path) -> None:
    proc, _ = start_watchdog(tmp_path)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=5) == 0


def test_stale_records_are_not_killed(tmp_path: Path, victims: Victims) -> None:
    """Records of another boot or of a reused pid name somebody else's process group now."""
    ours, other_boot, reused = victims.spawn(), victims.spawn(), victims.spawn()
    pgids = tmp_path / "pgids"
    record(pgids / "ours.json", ours)
    record(pgids / "otherboot.json", other_boot, boot_id="an-earlier-boot")
    st = read_stat(reused.pid)
    assert st is not None
    record(pgids / "reused.json", reused, starttime=st.starttime - 1)
    (pgids / "legacy.pgid").write_text(str(reused.pid))  # a bare number proves nothing
    proc, sock = start_watchdog(tmp_path, "--pgid-dir", str(pgids), timeout=0.4)
    client(victims, sock, 2, "hang")
    assert proc.wait(timeout=10) == 3
    assert wait_for(lambda: not alive(ours.pid), 5)
    time.sleep(0.3)
    assert alive(other_boot.pid) and alive(reused.pid)
    err = proc.stderr.read() if proc.stderr else ""
    assert "recorded in another boot" in err and "the pid was reused" in err


@contextlib.contextmanager
def armed_client(tmp_path: Path, every: float, timeout: float) -> Iterator[socket.socket]:
    """A client of a new ha-watchdog (``--status-every EVERY``), armed: its 'd', a pet, its 'a'.

    Disarmed and closed afterwards, also when an assertion failed (a client closing armed
    makes the watchdog fire); the watchdog must then exit 0.
    """
    proc, sock = start_watchdog(tmp_path, "--exit-on-disarm", "--status-every", str(every), timeout=5)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(str(sock))
        s.settimeout(timeout)
        assert s.recv(1) == b"d"
        s.send(b"\0")
        deadline = time.monotonic() + 2
        seen = b""
        while not seen.endswith(b"a") and time.monotonic() < deadline:
            seen += s.recv(64)
        assert seen.endswith(b"a")  # armed: a change is told at once; a status period starts
        yield s
    finally:
        with contextlib.suppress(OSError):
            s.send(b"V")
        s.close()
    assert proc.wait(timeout=5) == 0


@pytest.mark.parametrize("every", [0.1, 0.25])
def test_status_bytes_tell_armed_and_disarmed(tmp_path: Path, every: float) -> None:
    """The node daemon's guard hears from the watchdog every --status-every s: 'd' disarmed, 'a' armed."""
    with armed_client(tmp_path, every, timeout=2) as s:
        t0 = time.monotonic()
        n = len(s.recv(64))
        while time.monotonic() - t0 < 5 * every:
            n += len(s.recv(64))
        took = time.monotonic() - t0
        # about one per `every` s (a late one on a loaded host is fine, a flood is not)
        assert 3 <= n <= took / every + 2, f"{n} status bytes in {took:.2f}s, one every {every}s expected"


def test_a_pet_late_in_a_status_period_is_answered_at_once(tmp_path: Path) -> None:
    """Issue #17: the status byte rides on the wake-up a pet caused (its period starts again
    there) instead of waking the watchdog once more; it only ever comes earlier."""
    with armed_client(tmp_path, 1.0, timeout=3) as s:
        time.sleep(0.7)  # late in the period: the timer's byte would come in 0.3 s
        s.send(b"\0")
        t0 = time.monotonic()
        assert s.recv(1) == b"a"
        assert time.monotonic() - t0 < 0.2
        t1 = time.monotonic()
        assert s.recv(1) == b"a"  # the next one a whole period later, not at the old timer
        assert 0.6 < time.monotonic() - t1 < 2.0


def test_one_watchdog_per_socket(tmp_path: Path) -> None:
    first, sock = start_watchdog(tmp_path)
    try:
        second = subprocess.run(
            [sys.executable, "-m", "cli.watchdog", "--node", "n1", "--socket", str(sock), "--no-harden"],
            capture_output=True, text=True, timeout=10, check=False,
        )  # fmt: skip
        assert second.returncode == 1 and "another ha-watchdog" in second.stderr
        assert first.poll() is None and sock.exists()
    finally:
        first.kill()
        first.wait()


def test_device_driver_refuses_without_a_device(tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "cli.watchdog", "--node", "n1", "--socket", str(tmp_path / "s"),
         "--driver", "device", "--device", str(tmp_path / "no-such-watchdog")],
        capture_output=True, text=True, timeout=10, check=False,
    )  # fmt: skip
    assert res.returncode == 1
    assert "no-such-watchdog" in res.stderr


def test_hardening_is_applied_and_reported(tmp_path: Path) -> None:
    """What ha-watchdog says about its protections is what /proc shows (hosts may refuse some)."""
    sock = tmp_path / "wd.sock"
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.watchdog", "--node", "n1", "--socket", str(sock), "--timeout", "5"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert wait_for(sock.exists, 10)
        oom = Path(f"/proc/{proc.pid}/oom_score_adj").read_text().strip()
        status = Path(f"/proc/{proc.pid}/status").read_text()
        locked = int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("VmLck:")))
        policy = os.sched_getscheduler(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=5)
    err = proc.stderr.read() if proc.stderr else ""
    assert ("memory locked" in err) == (locked > 0), err
    assert ("oom_score_adj -1000" in err) == (oom == "-1000"), err
    assert ("SCHED_RR" in err) == (policy == os.SCHED_RR), err
    assert "oom_score_adj" in err and ("SCHED_RR" in err or "nice" in err), err


def test_a_socket_path_longer_than_sun_path_works(tmp_path: Path) -> None:
    """A deep cluster directory: run/<node>/watchdog.sock over 107 bytes (fence/unixpath.py).
    It made every ha-watchdog fail with "AF_UNIX path too long", so no node of a cluster in a
    deep directory could start (found under pytest-xdist's longer temporary paths)."""
    from actors.watchdog import SocketDriver  # noqa: PLC0415

    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    assert len(str(deep / "wd.sock")) > 107
    proc, sock = start_watchdog(deep, "--exit-on-disarm", timeout=5)
    lost: list[str] = []
    try:
        drv = SocketDriver(sock, lost.append, guard_timeout=1.0, watchdog_timeout=5.0)
        drv.pet()
        assert wait_for(lambda: drv.confirmed, 5), "ha-watchdog never confirmed the pet over the long path"
        drv.disarm()
        drv.close()
        assert proc.wait(timeout=10) == 0 and lost == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("bad", ["0", "-1", "2", "nan"])
def test_a_bad_status_cadence_is_refused(tmp_path: Path, bad: str) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "cli.watchdog", "--node", "n1", "--socket", str(tmp_path / "s"),
         "--no-harden", "--status-every", bad],
        capture_output=True, text=True, timeout=10, check=False,
    )  # fmt: skip
    assert res.returncode == 2 and "--status-every must be" in res.stderr
    assert not (tmp_path / "s").exists()
