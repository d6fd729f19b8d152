"""fence/kill.py on real processes and a real cgroup: what is killed, and what is provably not ours."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from fence.kill import NodeKiller, ProcessRef, load_group_records, verify
from fence.procfs import cgroup2_mount, pid_alive, read_boot_id, read_stat


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    out: list[subprocess.Popen[bytes]] = []
    yield out
    for p in out:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=5)


@pytest.fixture
def cgroup() -> Iterator[Path]:
    mount = cgroup2_mount()
    assert mount is not None, "no cgroup v2 hierarchy mounted"
    path = mount / f"pyha-test-kill-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    yield path
    for _ in range(100):
        for sub in sorted(path.rglob("*"), reverse=True):
            if sub.is_dir():
                with contextlib.suppress(OSError):
                    sub.rmdir()
        try:
            path.rmdir()
            return
        except OSError:
            time.sleep(0.05)


def spawn(procs: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    p = subprocess.Popen(["sleep", "300"], start_new_session=True)
    procs.append(p)
    return p


def gone(p: subprocess.Popen[bytes], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(p.pid):
            return True
        time.sleep(0.01)
    return False


def write_record(path: Path, p: subprocess.Popen[bytes], **override: object) -> None:
    st = read_stat(p.pid)
    assert st is not None
    path.parent.mkdir(parents=True, exist_ok=True)
    rec = {"pgid": p.pid, "starttime": st.starttime, "boot_id": read_boot_id(), **override}
    path.write_text(json.dumps(rec))


def test_verify_names_each_reason(tmp_path: Path, procs: list[subprocess.Popen[bytes]]) -> None:
    p = spawn(procs)
    write_record(tmp_path / "ok.json", p)
    write_record(tmp_path / "boot.json", p, boot_id="x")
    write_record(tmp_path / "reused.json", p, starttime=1)
    write_record(tmp_path / "init.json", p, pgid=1)
    (tmp_path / "junk.json").write_text("{not json")
    recs, notes = load_group_records([tmp_path])
    by = {Path(r.source).stem: verify(r, read_boot_id()) for r in recs}
    assert by["ok"] is None
    assert by["boot"] == "recorded in another boot"
    assert by["reused"] == "the pid was reused by another process"
    assert by["init"] is not None
    assert len(notes) == 1 and "junk.json" in notes[0]


def test_cgroup_kill_takes_the_whole_subtree_with_one_write(
    cgroup: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    (cgroup / "svc").mkdir()
    (cgroup / "_daemon").mkdir()
    a, b = spawn(procs), spawn(procs)
    (cgroup / "svc" / "cgroup.procs").write_text(str(a.pid))
    (cgroup / "_daemon" / "cgroup.procs").write_text(str(b.pid))
    killer = NodeKiller([cgroup])
    assert killer.problems == []
    rep = killer.fire()
    assert rep.cgroups == 1
    assert gone(a) and gone(b)
    killer.close()


def test_stale_pids_are_spared(procs: list[subprocess.Popen[bytes]]) -> None:
    p = spawn(procs)
    ref = ProcessRef.of(p.pid)
    assert ref.current()
    stale = ProcessRef(p.pid, (ref.starttime or 0) - 1)  # as if the pid had been reused since
    assert not stale.current()
    killer = NodeKiller()
    killer.pids = [stale]
    assert killer.fire().pids == 0
    assert pid_alive(p.pid)
    killer.pids = [ref]
    assert killer.fire().pids == 1
    assert gone(p)


def test_cgroups_last_leaves_the_caller_for_the_end(
    tmp_path: Path, cgroup: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    """ha-node's order: recorded groups and pids first, then the cgroup that holds ha-node itself."""
    grouped, listed, in_cg = spawn(procs), spawn(procs), spawn(procs)
    write_record(tmp_path / "state" / "proc" / "g.json", grouped)
    (cgroup / "cgroup.procs").write_text(str(in_cg.pid))
    killer = NodeKiller([cgroup], [tmp_path / "state"], [listed.pid, os.getpid()])
    rep = killer.fire(cgroups_last=True)
    assert (rep.groups, rep.pids, rep.cgroups) == (1, 1, 1)  # never our own pid
    assert gone(grouped) and gone(listed) and gone(in_cg)
