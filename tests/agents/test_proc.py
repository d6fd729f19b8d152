"""The proc agent with real processes, process groups and cgroups (no mocks)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agents import procutil
from agents.proc import ProcPlugin, ProcState
from ha.agent import exec_resource_agent
from ha.constants import ExitCode
from tests.agents.helpers import REPO, AgentEnv, conf, free_port, kill_everything, tcp_open, wait_until

SLEEP = "exec sleep 1000"


def start(plugin: ProcPlugin, sid: str, node: str = "n1", **props: str) -> AgentEnv:
    env = AgentEnv(node, {"proc": plugin})
    rc = exec_resource_agent(env.env, sid, conf(sid, node, **props), "started", {})
    assert rc == ExitCode.SUCCESS, env.text()
    return env


def stop(env: AgentEnv, sid: str, timeout: int | None = None, **props: str) -> int:
    params = {} if timeout is None else {"timeout": timeout}
    props.setdefault("cmd", SLEEP)
    return exec_resource_agent(env.env, sid, conf(sid, env.node, **props), "stopped", params)


def test_sleep_service_lifecycle(proc: ProcPlugin) -> None:
    env = start(proc, "proc:sleeper", cmd=SLEEP)
    assert ("info", "service status proc:sleeper started") in env.lines
    st = proc.load_state("n1", "sleeper")
    assert st is not None
    assert st.pgid == st.pid
    assert procutil.read_stat(st.pid) is not None
    # detached: not our child, its own session and process group
    assert os.getsid(st.pid) == st.pid
    with open(f"/proc/{st.pid}/status") as f:
        ppid = next(int(line.split()[1]) for line in f if line.startswith("PPid:"))
    assert ppid != os.getpid()
    # idempotent start
    assert exec_resource_agent(env.env, "proc:sleeper", conf("proc:sleeper", cmd=SLEEP), "started", {}) == 0
    assert stop(env, "proc:sleeper") == ExitCode.SUCCESS
    assert ("info", "service status proc:sleeper stopped") in env.lines
    assert not procutil.pid_alive(st.pid)
    assert proc.load_state("n1", "sleeper") is None


def test_runs_in_own_cgroup_which_is_removed_after_stop(proc: ProcPlugin, cgroup_base: Path) -> None:
    env = start(proc, "proc:cg", cmd=SLEEP)
    st = proc.load_state("n1", "cg")
    assert st is not None
    assert st.cgroup == str(cgroup_base / "n1" / "cg")
    assert procutil.cgroup_procs(Path(st.cgroup)) == [st.pid]
    with open(f"/proc/{st.pid}/cgroup") as f:
        assert any(line.startswith("0::") and line.strip().endswith("/n1/cg") for line in f)
    assert stop(env, "proc:cg") == 0
    assert not Path(st.cgroup).exists()


def test_fresh_process_sees_and_stops_the_service(proc: ProcPlugin, cgroup_base: Path) -> None:
    start(proc, "proc:survivor", cmd=SLEEP)
    args = [str(proc.state_dir), str(cgroup_base), "n1", "proc:survivor", SLEEP]

    def probe(action: str) -> str:
        res = subprocess.run(
            [sys.executable, "-m", "tests.agents.probe", *args, action],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        )
        return res.stdout.strip()

    assert probe("check") == "running"
    fresh = ProcPlugin(proc.state_dir, cgroup_base=cgroup_base)  # a new instance in this process too
    env = AgentEnv("n1")
    assert fresh.check_running(env.env, "proc:survivor", conf("proc:survivor", cmd=SLEEP))
    assert probe("stop") == "stopped"
    assert not fresh.check_running(env.env, "proc:survivor", conf("proc:survivor", cmd=SLEEP))


def test_http_server_with_tcp_health_check(proc: ProcPlugin) -> None:
    port = free_port()
    cmd = f"exec {sys.executable} -m http.server {port} --bind 127.0.0.1"
    env = start(proc, "proc:web", cmd=cmd, check_tcp=f"127.0.0.1:{port}")
    assert tcp_open(port)  # start returned only once the port accepted connections
    assert proc.healthy(env.env, "proc:web", conf("proc:web", cmd=cmd, check_tcp=f"127.0.0.1:{port}"))
    st = proc.load_state("n1", "web")
    assert st is not None and proc.live_pids(st)
    assert stop(env, "proc:web") == 0
    # the server's processes are gone (the port itself may be taken by anyone afterwards)
    assert proc.live_pids(st) == []


def test_check_cmd_gates_start(proc: ProcPlugin, tmp_path: Path) -> None:
    flag = tmp_path / "ready"
    cmd = f"sleep 0.4; touch {flag}; exec sleep 1000"
    t0 = time.monotonic()
    env = start(proc, "proc:slow", cmd=cmd, check_cmd=f"test -f {flag}")
    assert time.monotonic() - t0 >= 0.4
    assert flag.exists()
    assert stop(env, "proc:slow") == 0


def test_never_healthy_fails_start_and_leaves_nothing(proc: ProcPlugin) -> None:
    proc.start_timeout = 0.6
    port = free_port()  # nobody listens there
    env = AgentEnv("n1", {"proc": proc})
    cd = conf("proc:sick", cmd=SLEEP, check_tcp=f"127.0.0.1:{port}")
    t0 = time.monotonic()
    assert exec_resource_agent(env.env, "proc:sick", cd, "started", {}) == ExitCode.ERROR
    assert time.monotonic() - t0 < 4
    assert "not healthy within 0.6s" in env.text()
    assert ("warning", "unable to start service proc:sick") in env.lines
    assert not proc.check_running(env.env, "proc:sick", cd)


def test_sigterm_stops_gracefully(proc: ProcPlugin, tmp_path: Path) -> None:
    mark = tmp_path / "got-term"
    cmd = f"trap 'touch {mark}; exit 0' TERM; while :; do sleep 0.05; done"
    env = start(proc, "proc:polite", cmd=cmd)
    t0 = time.monotonic()
    assert stop(env, "proc:polite", stop_timeout="5", cmd=cmd) == 0
    assert time.monotonic() - t0 < 3
    assert mark.exists()


def test_sigterm_ignored_gets_sigkill_after_timeout(proc: ProcPlugin) -> None:
    cmd = "trap '' TERM; sleep 1000 & wait; sleep 1000"
    env = start(proc, "proc:stubborn", cmd=cmd)
    st = proc.load_state("n1", "stubborn")
    assert st is not None
    t0 = time.monotonic()
    assert stop(env, "proc:stubborn", stop_timeout="0.5", cmd=cmd) == ExitCode.SUCCESS
    took = time.monotonic() - t0
    assert 0.5 <= took < 3, took
    assert "still running 0.5s after SIGTERM, killing it" in env.text()
    assert not procutil.pid_alive(st.pid)


def test_request_stop_timeout_param_wins(proc_nocg: ProcPlugin) -> None:
    cmd = "trap '' TERM; sleep 1000 & wait; sleep 1000"
    env = start(proc_nocg, "proc:hard", cmd=cmd)
    t0 = time.monotonic()
    assert stop(env, "proc:hard", timeout=0, stop_timeout="30", cmd=cmd) == 0  # 0 = kill at once
    assert time.monotonic() - t0 < 2
    assert ("info", "stopping service proc:hard (timeout=0)") in env.lines


def _children(tmp_path: Path, name: str) -> tuple[str, Path]:
    pids = tmp_path / f"{name}.pids"
    cmd = f"sleep 1000 & echo $! >> {pids}; sh -c 'sleep 1000' & echo $! >> {pids}; exec sleep 1000"
    return cmd, pids


def test_children_die_with_the_service_process_group(proc_nocg: ProcPlugin, tmp_path: Path) -> None:
    cmd, pids_file = _children(tmp_path, "kids")
    env = start(proc_nocg, "proc:kids", cmd=cmd)
    wait_until(lambda: pids_file.exists() and len(pids_file.read_text().split()) == 2)
    kids = [int(x) for x in pids_file.read_text().split()]
    assert all(procutil.pid_alive(k) for k in kids)
    st = proc_nocg.load_state("n1", "kids")
    assert st is not None
    assert st.cgroup is None
    assert stop(env, "proc:kids", stop_timeout="2", cmd=cmd) == 0
    assert not any(procutil.pid_alive(k) for k in kids)


def test_cgroup_catches_processes_that_left_the_group(proc: ProcPlugin, tmp_path: Path) -> None:
    escaped = tmp_path / "escaped.pid"
    # a daemon that starts its own session, i.e. leaves our process group
    cmd = f"setsid sh -c 'echo $$ > {escaped}; trap \"\" TERM; exec sleep 1000' & exec sleep 1000"
    env = start(proc, "proc:escape", cmd=cmd)
    wait_until(escaped.exists)
    wait_until(lambda: escaped.read_text().strip() != "")
    pid = int(escaped.read_text())
    st = proc.load_state("n1", "escape")
    assert st is not None
    ps = procutil.read_stat(pid)
    assert ps is not None
    assert ps.pgrp != st.pgid  # really outside the process group
    assert pid in proc.live_pids(st)  # but still counted as part of the service
    assert stop(env, "proc:escape", stop_timeout="0.3", cmd=cmd) == 0
    assert not procutil.pid_alive(pid)


def test_crashed_service_is_not_running(proc: ProcPlugin) -> None:
    env = start(proc, "proc:crashy", cmd=SLEEP)
    st = proc.load_state("n1", "crashy")
    assert st is not None
    os.kill(st.pid, signal.SIGKILL)
    cd = conf("proc:crashy", cmd=SLEEP)
    wait_until(lambda: not proc.check_running(env.env, "proc:crashy", cd))
    # and it can be started again
    assert exec_resource_agent(env.env, "proc:crashy", cd, "started", {}) == 0
    st2 = proc.load_state("n1", "crashy")
    assert st2 is not None
    assert st2.pid != st.pid


def test_service_exiting_by_itself_is_detected(proc: ProcPlugin) -> None:
    cmd = "sleep 0.4; exit 3"
    env = start(proc, "proc:short", cmd=cmd)
    wait_until(lambda: not proc.check_running(env.env, "proc:short", conf("proc:short", cmd=cmd)), timeout=3)


def test_start_failure_is_reported(proc: ProcPlugin) -> None:
    env = AgentEnv("n1", {"proc": proc})
    cd = conf("proc:broken", cmd="echo 'no such thing' >&2; exit 1")
    assert exec_resource_agent(env.env, "proc:broken", cd, "started", {}) == ExitCode.ERROR
    assert "service proc:broken exited right after start: no such thing" in env.text()
    assert not proc.check_running(env.env, "proc:broken", cd)
    assert proc.load_state("n1", "broken") is None


def test_bad_cwd_and_env_are_reported(proc: ProcPlugin) -> None:
    env = AgentEnv("n1", {"proc": proc})
    cd = conf("proc:nocwd", cmd=SLEEP, cwd="/nonexistent/dir")
    assert exec_resource_agent(env.env, "proc:nocwd", cd, "started", {}) == ExitCode.ERROR
    assert "cannot start:" in env.text() and "/nonexistent/dir" in env.text()
    cd2 = conf("proc:badenv", cmd=SLEEP, env="1BAD=x")
    assert exec_resource_agent(env.env, "proc:badenv", cd2, "started", {}) == ExitCode.ERROR
    assert "property 'env': '1BAD=x' is not KEY=VALUE" in env.text()


def test_env_and_cwd_reach_the_service(proc: ProcPlugin, tmp_path: Path) -> None:
    out = tmp_path / "seen"
    cmd = f'echo "$GREETING|$PYHA_SID|$PYHA_NODE|$(pwd)" > {out}; exec sleep 1000'
    start(proc, "proc:envy", cmd=cmd, env="GREETING='hello world'", cwd=str(tmp_path))
    wait_until(lambda: out.exists() and out.read_text().strip() != "")
    assert out.read_text().strip() == f"hello world|proc:envy|n1|{tmp_path}"


def test_nodes_on_one_host_are_separate(proc: ProcPlugin) -> None:
    start(proc, "proc:shared", node="n1", cmd=SLEEP)
    n2 = AgentEnv("n2", {"proc": proc})
    assert not proc.check_running(n2.env, "proc:shared", conf("proc:shared", "n2", cmd=SLEEP))


def test_stale_state_is_not_running(proc_nocg: ProcPlugin) -> None:
    env = AgentEnv("n1")
    cd = conf("proc:ghost", cmd=SLEEP)
    me = procutil.read_stat(os.getpid())
    assert me is not None
    proc_nocg._dir("n1").mkdir(parents=True)
    # a pid that is alive but is not ours any more (reused: other start time)
    proc_nocg._save_state("n1", "ghost", ProcState(me.pgrp, me.pgrp, 1, proc_nocg.boot_id, None, SLEEP, 0))
    leader = procutil.read_stat(me.pgrp)
    assert leader is not None
    assert leader.starttime != 1
    assert not proc_nocg.check_running(env.env, "proc:ghost", cd)
    # a state file from an earlier boot
    proc_nocg._save_state("n1", "ghost", ProcState(me.pid, me.pgrp, me.starttime, "old-boot", None, SLEEP, 0))
    assert not proc_nocg.check_running(env.env, "proc:ghost", cd)
    proc_nocg.shutdown(env.env, "proc:ghost", cd, 1)  # must not signal anything of ours
    assert procutil.pid_alive(os.getpid())


def test_migrate_relocates_by_stopping(proc: ProcPlugin) -> None:
    env = start(proc, "proc:mover", cmd=SLEEP)
    cd = conf("proc:mover", cmd=SLEEP)
    assert exec_resource_agent(env.env, "proc:mover", cd, "migrate", {"target": "n2"}) == ExitCode.SUCCESS
    assert not proc.check_running(env.env, "proc:mover", cd)
    assert "proc services cannot migrate live" in env.text()
    assert proc.remove_locks(env.env, "proc:mover", ["backup"]) is None


def test_unusable_cgroup_base_falls_back_to_process_group(tmp_path: Path, token: str) -> None:
    plugin = ProcPlugin(tmp_path / "state", cgroup_base=tmp_path / "not-a-cgroup", settle=0.1)
    try:
        env = start(plugin, "proc:plain", cmd=SLEEP)
        assert "using process groups only" in env.text()
        st = plugin.load_state("n1", "plain")
        assert st is not None
        assert st.cgroup is None
        assert stop(env, "proc:plain") == 0
    finally:
        kill_everything(plugin, token)


def test_untracked_service_in_its_cgroup_is_adopted(proc: ProcPlugin) -> None:
    """An LRM that died before writing the state file: the cgroup still knows the service."""
    env = start(proc, "proc:lost", cmd=SLEEP)
    st = proc.load_state("n1", "lost")
    assert st is not None
    proc.state_path("n1", "lost").unlink()  # as if never written
    cd = conf("proc:lost", cmd=SLEEP)
    assert proc.check_running(env.env, "proc:lost", cd)
    assert exec_resource_agent(env.env, "proc:lost", cd, "started", {}) == 0  # no second copy
    assert procutil.cgroup_procs(Path(str(st.cgroup))) == [st.pid]
    assert stop(env, "proc:lost") == 0
    assert not procutil.pid_alive(st.pid)


def test_the_service_environment_is_built_from_scratch(
    proc: ProcPlugin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing of the starting user's environment leaks into a service (issue #10)."""
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "do-not-leak")
    out = tmp_path / "env"
    start(proc, "proc:clean", cmd=f"env > {out}; exec sleep 1000", env="ONE=1")
    wait_until(lambda: out.exists() and "ONE=1" in out.read_text())
    seen = dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line)
    assert "AWS_SECRET_ACCESS_KEY" not in seen
    assert seen["PYHA_SID"] == "proc:clean" and seen["PYHA_NODE"] == "n1" and seen["HOME"] == "/"
    allowed = {"PATH", "HOME", "LANG", "ONE", "PWD", "SHLVL", "_"}  # the last three: set by /bin/sh
    assert {k for k in seen if not k.startswith("PYHA_")} <= allowed, sorted(seen)


def test_a_service_runs_with_umask_022_whatever_the_node_has(proc: ProcPlugin, tmp_path: Path) -> None:
    out = tmp_path / "umask"
    old = os.umask(0o077)  # as ha-node runs (admin/private.py)
    try:
        start(proc, "proc:um", cmd=f"umask > {out}; exec sleep 1000")
    finally:
        os.umask(old)
    wait_until(lambda: out.exists() and out.read_text().strip() != "")
    assert out.read_text().strip() == "0022"


# -- O(1) status checks (issue #17) ------------------------------------------------------------


class _ScanCounter:
    """Counts (and can forbid) the scans of every process in /proc for a process group."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        self.allowed = False
        real = procutil.pgroup_members

        def counted(pgid: int) -> list[int]:
            self.calls += 1
            assert self.allowed, "check_running scanned /proc while the service runs"
            return real(pgid)

        monkeypatch.setattr(procutil, "pgroup_members", counted)


@pytest.mark.parametrize("cgroups", [True, False])
def test_check_running_of_a_running_service_scans_no_proc(
    proc: ProcPlugin, proc_nocg: ProcPlugin, monkeypatch: pytest.MonkeyPatch, cgroups: bool
) -> None:
    plugin = proc if cgroups else proc_nocg
    env = start(plugin, "proc:cheap", cmd=SLEEP)
    st = plugin.load_state("n1", "cheap")
    assert st is not None
    assert (st.cgroup is not None) == cgroups
    scans = _ScanCounter(monkeypatch)
    cd = conf("proc:cheap", cmd=SLEEP)
    for _ in range(20):
        assert plugin.check_running(env.env, "proc:cheap", cd)
    assert scans.calls == 0
    # once the service is dead, "not running" is the full scan's answer
    scans.allowed = True
    os.kill(st.pid, signal.SIGKILL)
    wait_until(lambda: not plugin.check_running(env.env, "proc:cheap", cd))
    assert scans.calls >= 1


def test_child_outliving_the_leader_counts_as_running_without_cgroup(
    proc_nocg: ProcPlugin, tmp_path: Path
) -> None:
    # SAFETY: the leader's death alone must not make the service "not running"
    kid = tmp_path / "kid.pid"
    cmd = f"sh -c 'echo $$ > {kid}; exec sleep 1000' & sleep 0.3; exit 0"
    env = start(proc_nocg, "proc:orphan", cmd=cmd)
    st = proc_nocg.load_state("n1", "orphan")
    assert st is not None
    wait_until(lambda: not procutil.pid_alive(st.pid))  # the leader exited
    wait_until(lambda: kid.exists() and kid.read_text().strip() != "")
    pid = int(kid.read_text())
    assert procutil.pid_alive(pid)
    cd = conf("proc:orphan", cmd=cmd)
    assert proc_nocg.check_running(env.env, "proc:orphan", cd)
    assert stop(env, "proc:orphan", stop_timeout="1", cmd=cmd) == 0
    assert not procutil.pid_alive(pid)
    assert not proc_nocg.check_running(env.env, "proc:orphan", cd)


def test_process_that_left_group_and_cgroup_still_counts(
    proc: ProcPlugin, tmp_path: Path, cgroup_base: Path
) -> None:
    # SAFETY: a process of the service moved out of its cgroup, with the leader gone,
    # is still found (by the scan of its process group)
    kid = tmp_path / "kid.pid"
    cmd = f"sh -c 'echo $$ > {kid}; exec sleep 1000' & sleep 0.5; exit 0"
    env = start(proc, "proc:mover", cmd=cmd)
    st = proc.load_state("n1", "mover")
    assert st is not None and st.cgroup is not None
    wait_until(lambda: kid.exists() and kid.read_text().strip() != "")
    pid = int(kid.read_text())
    other = cgroup_base / "elsewhere"
    other.mkdir()
    try:
        (other / "cgroup.procs").write_text(str(pid))
        wait_until(lambda: not procutil.pid_alive(st.pid))
        assert procutil.cgroup_populated(Path(st.cgroup)) is False
        cd = conf("proc:mover", cmd=cmd)
        assert proc.check_running(env.env, "proc:mover", cd)
        assert stop(env, "proc:mover", stop_timeout="1", cmd=cmd) == 0
        assert not procutil.pid_alive(pid)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not procutil.pid_alive(pid))
        procutil.remove_cgroup(other)
