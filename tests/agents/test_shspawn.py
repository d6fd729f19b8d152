"""agents/shspawn.py: the vm agent's launcher through /bin/sh does what agents/launcher.py does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agents import procutil, shspawn
from agents.proc import LAUNCHER, ProcPlugin
from agents.vm import VmPlugin


def _wait(path: Path) -> str:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().endswith("done\n"):
            return path.read_text()
        time.sleep(0.01)
    raise AssertionError(f"{path}: {path.read_text() if path.exists() else 'missing'}")


@pytest.mark.parametrize("fd_table", [None, 1024])  # 1024: through bash (the file table grown)
def test_the_service_leads_its_session_in_its_cgroup_with_exactly_its_environment(
    tmp_path: Path, cgroup_base: Path, fd_table: int | None
) -> None:
    cg = cgroup_base / "svc"
    cg.mkdir()
    log = tmp_path / "svc.log"
    log.write_text("earlier\n")
    script = (
        'echo "pid $$ sid $(ps -o sid= -p $$) pgid $(ps -o pgid= -p $$)"; '
        'echo "cg $(grep ^0:: /proc/$$/cgroup)"; echo "cwd $(pwd) umask $(umask)"; '
        'echo "env ${ONLY:-unset} ${HOME:-nohome}"; read x || echo "stdin eof"; sleep 0.2; echo done'
    )
    spec: dict[str, object] = {
        "argv": ["/bin/sh", "-c", script],
        "cwd": str(tmp_path),
        "env": {"ONLY": "this", "PATH": "/usr/bin:/bin"},
        "cgroup": str(cg),
        "log": str(log),
    }
    if fd_table is not None:
        spec["fd_table"] = fd_table
    out = shspawn.spawn(spec)
    pid = out["pid"]
    assert out["starttime"] > 0
    assert os.getpgid(pid) == pid and os.getsid(pid) == pid  # when spawn returns, not later
    assert procutil.pid_alive(pid)
    text = _wait(log)
    lines = text.splitlines()
    assert lines[0] == "earlier"  # appended, not truncated
    assert lines[1].split() == ["pid", str(pid), "sid", str(pid), "pgid", str(pid)]
    assert lines[2].startswith("cg 0::") and lines[2].endswith("/svc")
    assert lines[3] == f"cwd {tmp_path} umask 0022"
    assert lines[4] == "env this nohome"
    assert lines[5] == "stdin eof"
    deadline = time.monotonic() + 5
    while procutil.pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.01)  # not our child: init (or the nearest subreaper) reaps it
    assert not procutil.pid_alive(pid)


def test_a_command_that_cannot_run_is_an_error(tmp_path: Path) -> None:
    spec = {"argv": ["/no/such/qemu"], "cwd": "/", "env": {}, "cgroup": None, "log": str(tmp_path / "l")}
    assert "not an executable" in shspawn.spawn(spec)["error"]
    spec = {"argv": ["/bin/true"], "cwd": "/", "env": {}, "cgroup": str(tmp_path / "nocg"), "log": "/x"}
    assert "exit 125" in shspawn.spawn(spec)["error"]


# What the service's process sees of its file table: its size, and its open descriptors (the
# shell's own, 0-2, and the one ``ls`` opens to list them).
_TABLE = 'grep FDSize /proc/$$/status; echo "fds $(ls /proc/$$/fd | sort -n | tr "\\n" " ")"; echo done'


def _table(out: dict[str, object], log: Path) -> tuple[int, list[str]]:
    assert "pid" in out, out
    lines = _wait(log).splitlines()
    size = int(lines[0].split()[1])
    return size, lines[1].split()[1:]


def _spec(tmp_path: Path, name: str, fd_table: int | None) -> dict[str, object]:
    spec: dict[str, object] = {
        "argv": ["/bin/sh", "-c", _TABLE],
        "cwd": str(tmp_path),
        "env": {"PATH": "/usr/bin:/bin"},
        "cgroup": None,
        "log": str(tmp_path / name),
    }
    if fd_table is not None:
        spec["fd_table"] = fd_table
    return spec


def test_fd_table_starts_the_service_with_a_grown_table_and_no_extra_descriptor(tmp_path: Path) -> None:
    """A QEMU's ``cont`` after a live migration opened 70 eventfds; growing the table past 64 then
    waited for an RCU grace period (10-17 ms of the guest's pause): the vm agent asks for 256."""
    size, fds = _table(shspawn.spawn(_spec(tmp_path, "plain", None)), tmp_path / "plain")
    assert size == 64  # the kernel's default: what the service got before
    out = shspawn.spawn(_spec(tmp_path, "grown", 256))
    size, fds = _table(out, tmp_path / "grown")
    assert size == 256
    assert fds[:3] == ["0", "1", "2"] and len(fds) == 4  # the growing descriptor is closed again


def test_the_python_launcher_grows_the_table_too(tmp_path: Path) -> None:

    def launch(name: str, fd_table: int | None) -> dict[str, object]:
        res = subprocess.run(
            [sys.executable, "-I", "-S", str(LAUNCHER), json.dumps(_spec(tmp_path, name, fd_table))],
            capture_output=True,
            text=True,
            check=True,
        )
        out: dict[str, object] = json.loads(res.stdout)
        return out

    assert _table(launch("plain", None), tmp_path / "plain")[0] == 64
    size, fds = _table(launch("grown", 256), tmp_path / "grown")
    assert size == 256 and len(fds) == 4


def test_the_vm_agent_asks_for_room_for_qemus_descriptors() -> None:
    assert ProcPlugin.fd_table == 0  # other services: unchanged
    assert VmPlugin.fd_table >= 256  # a running QEMU of the default guest holds about 75
