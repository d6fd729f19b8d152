"""agents/shspawn.py: the vm agent's launcher through /bin/sh does what agents/launcher.py does."""

from __future__ import annotations

import os
import time
from pathlib import Path

from agents import procutil, shspawn


def _wait(path: Path) -> str:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().endswith("done\n"):
            return path.read_text()
        time.sleep(0.01)
    raise AssertionError(f"{path}: {path.read_text() if path.exists() else 'missing'}")


def test_the_service_leads_its_session_in_its_cgroup_with_exactly_its_environment(
    tmp_path: Path, cgroup_base: Path
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
    out = shspawn.spawn(
        {
            "argv": ["/bin/sh", "-c", script],
            "cwd": str(tmp_path),
            "env": {"ONLY": "this", "PATH": "/usr/bin:/bin"},
            "cgroup": str(cg),
            "log": str(log),
        }
    )
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
