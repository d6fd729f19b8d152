"""The ocf agent: Debian's resource-agents (heartbeat:Dummy) plus small test agents."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agents import procutil
from agents.ocf import OcfPlugin, OcfRc, OcfStatus, monitor_status, parse_agent, parse_params, rc_name
from ha.agent import exec_resource_agent
from ha.constants import ExitCode
from tests.agents.helpers import TOKEN_VAR, AgentEnv, conf, pids_with_token, wait_until

OCF_ROOT = Path("/usr/lib/ocf")
DUMMY = OCF_ROOT / "resource.d" / "heartbeat" / "Dummy"

TEST_AGENT = r"""#!/bin/sh
# A test OCF agent driven by its params.
[ -n "$OCF_RESKEY_dump" ] && env > "$OCF_RESKEY_dump.$1"
case "$1" in
start)
    if [ -n "$OCF_RESKEY_hang" ]; then sleep 1000 & echo $! > "$OCF_RESKEY_hang"; wait; fi
    if [ -n "$OCF_RESKEY_daemon" ]; then (exec sleep 1000 </dev/null >/dev/null 2>&1 &); fi
    [ -n "$OCF_RESKEY_state" ] && touch "$OCF_RESKEY_state"
    echo "starting, rc ${OCF_RESKEY_start_rc:-0}"
    exit "${OCF_RESKEY_start_rc:-0}" ;;
stop)
    [ -n "$OCF_RESKEY_state" ] && rm -f "$OCF_RESKEY_state"
    exit "${OCF_RESKEY_stop_rc:-0}" ;;
monitor)
    [ -n "$OCF_RESKEY_monitor_rc" ] && exit "$OCF_RESKEY_monitor_rc"
    [ -n "$OCF_RESKEY_state" ] && [ -f "$OCF_RESKEY_state" ] && exit 0
    exit 7 ;;
*) exit 3 ;;
esac
"""


@pytest.fixture
def agents_dir(tmp_path: Path) -> Path:
    d = tmp_path / "resource.d"
    (d / "pyhatest").mkdir(parents=True)
    script = d / "pyhatest" / "Test"
    script.write_text(TEST_AGENT)
    script.chmod(0o755)
    return d


@pytest.fixture
def ocf(tmp_path: Path, agents_dir: Path, token: str, cgroup_base: Path) -> Iterator[OcfPlugin]:
    plugin = OcfPlugin(
        tmp_path / "state",
        ocf_root=OCF_ROOT,
        agent_dirs=[agents_dir, OCF_ROOT / "resource.d"],
        cgroup_base=cgroup_base,
    )
    try:
        yield plugin
    finally:
        for pid in pids_with_token(token):
            os.kill(pid, 9)


@pytest.fixture
def dummy_installed() -> None:
    if not DUMMY.is_file():
        pytest.fail(
            f"{DUMMY} missing: the OCF tests need Debian's resource-agents package "
            "(apt-get install -y resource-agents; the Makefile's test setup installs it)"
        )


def env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {k: v for k, v in pairs}


def run(env: AgentEnv, sid: str, cmd: str, node: str = "n1", **props: str) -> int:
    return exec_resource_agent(env.env, sid, conf(sid, node, **props), cmd, {})


def test_dummy_start_monitor_stop(ocf: OcfPlugin, tmp_path: Path, dummy_installed: None) -> None:
    state = tmp_path / "dummy.state"
    props = {"agent": "heartbeat:Dummy", "params": f"state={state} fake=1"}
    env = AgentEnv("n1", {"ocf": ocf})
    cd = conf("ocf:dummy", **props)
    assert not ocf.check_running(env.env, "ocf:dummy", cd)
    assert run(env, "ocf:dummy", "started", **props) == ExitCode.SUCCESS, env.text()
    assert state.exists()
    assert ocf.monitor(env.env, "ocf:dummy", cd) is OcfStatus.RUNNING
    # state lives with the resource, not in the plugin object
    fresh = OcfPlugin(ocf.state_dir, cgroup_base=ocf.cgroup_base)
    assert fresh.check_running(env.env, "ocf:dummy", cd)
    assert run(env, "ocf:dummy", "stopped", **props) == ExitCode.SUCCESS, env.text()
    assert not state.exists()
    assert not ocf.check_running(env.env, "ocf:dummy", cd)


def test_dummy_default_state_is_per_node(ocf: OcfPlugin, dummy_installed: None) -> None:
    props = {"agent": "ocf:heartbeat:Dummy"}
    n1 = AgentEnv("n1", {"ocf": ocf})
    n2 = AgentEnv("n2", {"ocf": ocf})
    assert run(n1, "ocf:shared", "started", **props) == 0, n1.text()
    assert (ocf.rsctmp("n1") / "Dummy-shared.state").exists()
    assert ocf.check_running(n1.env, "ocf:shared", conf("ocf:shared", **props))
    assert not ocf.check_running(n2.env, "ocf:shared", conf("ocf:shared", "n2", **props))
    assert run(n1, "ocf:shared", "stopped", **props) == 0


def test_dummy_relocate(ocf: OcfPlugin, tmp_path: Path, dummy_installed: None) -> None:
    props = {"agent": "heartbeat:Dummy", "params": f"state={tmp_path / 'm.state'}"}
    env = AgentEnv("n1", {"ocf": ocf})
    assert run(env, "ocf:m", "started", **props) == 0
    rc = exec_resource_agent(env.env, "ocf:m", conf("ocf:m", **props), "migrate", {"target": "n2"})
    assert rc == ExitCode.SUCCESS
    assert not (tmp_path / "m.state").exists()
    assert ocf.remove_locks(env.env, "ocf:m", ["migrate"]) is None


def test_agent_daemons_stay_in_the_service_cgroup(ocf: OcfPlugin, tmp_path: Path) -> None:
    """What an agent leaves running is in the service's cgroup, below the node's: a fence reaches it."""
    props = {"agent": "pyhatest:Test", "params": f"daemon=1 state={tmp_path / 's'}"}
    env = AgentEnv("n1", {"ocf": ocf})
    assert run(env, "ocf:d", "started", **props) == 0, env.text()
    cg = ocf.cgroup_path("n1", "d")
    assert cg is not None and cg.parent == ocf.cgroup_base / "n1"  # type: ignore[operator]
    daemons = procutil.cgroup_procs(cg)
    assert len(daemons) == 1, "the agent's daemon (and only it) is left in the service cgroup"
    assert procutil.cgroup_kill(cg.parent)  # what the watchdog does to the node's cgroup
    assert wait_until(lambda: not procutil.pid_alive(daemons[0]), 5)


def test_ocf_environment(ocf: OcfPlugin, tmp_path: Path) -> None:
    dump = tmp_path / "env"
    props = {"agent": "pyhatest:Test", "params": f"dump={dump} state={tmp_path / 's'} 'msg=a b'"}
    env = AgentEnv("n1", {"ocf": ocf})
    assert run(env, "ocf:inst", "started", **props) == 0, env.text()
    seen = dict(
        line.split("=", 1) for line in (tmp_path / "env.start").read_text().splitlines() if "=" in line
    )
    assert seen["OCF_ROOT"] == str(OCF_ROOT)
    assert seen["OCF_RESOURCE_INSTANCE"] == "inst"
    assert seen["OCF_RESOURCE_TYPE"] == "Test"
    assert seen["OCF_RESOURCE_PROVIDER"] == "pyhatest"
    assert seen["OCF_RA_VERSION_MAJOR"] == "1"
    assert seen["OCF_RESKEY_msg"] == "a b"
    assert seen["OCF_RESKEY_CRM_meta_timeout"] == "20000"
    assert seen["HA_RSCTMP"] == str(ocf.rsctmp("n1"))
    mon = dict(
        line.split("=", 1) for line in (tmp_path / "env.monitor").read_text().splitlines() if "=" in line
    )
    assert mon["OCF_RESKEY_CRM_meta_interval"] == "0"
    assert seen[TOKEN_VAR] == os.environ[TOKEN_VAR]  # PYHA_* markers pass through


@pytest.mark.parametrize(
    ("rc", "status"),
    [
        (0, OcfStatus.RUNNING),
        (8, OcfStatus.RUNNING),
        (7, OcfStatus.NOT_RUNNING),
        (5, OcfStatus.NOT_RUNNING),
        (1, OcfStatus.FAILED),
        (2, OcfStatus.FAILED),
        (3, OcfStatus.FAILED),
        (4, OcfStatus.FAILED),
        (6, OcfStatus.FAILED),
        (9, OcfStatus.FAILED),
        (42, OcfStatus.FAILED),
        (None, OcfStatus.FAILED),
    ],
)
def test_monitor_exit_code_mapping(rc: int | None, status: OcfStatus) -> None:
    assert monitor_status(rc) is status


@pytest.mark.parametrize(("rc", "running"), [(0, True), (7, False), (1, True), (6, True), (5, False)])
def test_check_running_through_real_agent(ocf: OcfPlugin, rc: int, running: bool) -> None:
    env = AgentEnv("n1", {"ocf": ocf})
    cd = conf("ocf:codes", agent="pyhatest:Test", params=f"monitor_rc={rc}")
    assert ocf.check_running(env.env, "ocf:codes", cd) is running
    assert (f"monitor failed ({rc_name(rc)})" in env.text()) is (monitor_status(rc) is OcfStatus.FAILED)


def test_failed_monitor_still_gets_stopped(ocf: OcfPlugin, tmp_path: Path) -> None:
    """SAFETY: a resource in an unknown state counts as running, so a stop request runs stop."""
    env = AgentEnv("n1", {"ocf": ocf})
    dump = tmp_path / "d"
    props = {"agent": "pyhatest:Test", "params": f"monitor_rc=1 dump={dump}"}
    run(env, "ocf:weird", "stopped", **props)
    assert (tmp_path / "d.stop").exists()


def test_start_failure_cleans_up_and_reports(ocf: OcfPlugin, tmp_path: Path) -> None:
    state = tmp_path / "half"
    props = {"agent": "pyhatest:Test", "params": f"state={state} start_rc=1"}
    env = AgentEnv("n1", {"ocf": ocf})
    assert run(env, "ocf:bad", "started", **props) == ExitCode.ERROR
    assert "start failed (OCF_ERR_GENERIC): starting, rc 1" in env.text()
    assert not state.exists()  # the stop after the failed start removed the half-started state
    assert ("warning", "unable to start service ocf:bad") in env.lines


def test_hung_agent_is_killed_after_timeout(ocf: OcfPlugin, tmp_path: Path, token: str) -> None:
    hang = tmp_path / "hang.pid"
    ocf.start_timeout = 0.5
    props = {"agent": "pyhatest:Test", "params": f"hang={hang}"}
    env = AgentEnv("n1", {"ocf": ocf})
    t0 = time.monotonic()
    assert run(env, "ocf:hung", "started", **props) == ExitCode.ERROR
    assert time.monotonic() - t0 < 3
    assert "start failed (timeout)" in env.text()
    wait_until(hang.exists)
    child = int(hang.read_text())
    wait_until(lambda: not procutil.pid_alive(child), timeout=3)  # its process group died with it
    assert os.environ[TOKEN_VAR] == token
    assert pids_with_token(token) == []


def test_missing_agent_and_bad_props(ocf: OcfPlugin) -> None:
    env = AgentEnv("n1", {"ocf": ocf})
    cd = conf("ocf:nope", agent="heartbeat:DoesNotExist")
    assert not ocf.check_running(env.env, "ocf:nope", cd)
    assert run(env, "ocf:nope", "started", agent="heartbeat:DoesNotExist") == ExitCode.ERROR
    assert "start failed (OCF_ERR_INSTALLED): agent heartbeat:DoesNotExist not found" in env.text()
    assert run(env, "ocf:bad", "started", agent="Dummy") == ExitCode.ERROR
    assert "is not provider:type" in env.text()


def test_parsers() -> None:
    assert parse_agent("heartbeat:Dummy") == ("heartbeat", "Dummy")
    assert parse_agent("ocf:heartbeat:IPaddr2") == ("heartbeat", "IPaddr2")
    assert parse_params("state=/tmp/x fake=1 'a=b c'") == {"state": "/tmp/x", "fake": "1", "a": "b c"}
    for bad in ("x", "a:b/c", "../x:y"):
        with pytest.raises(ValueError):
            parse_agent(bad)
    for bad_params in ("noequals", "1x=2", "a='unclosed"):
        with pytest.raises(ValueError):
            parse_params(bad_params)
    assert rc_name(OcfRc.NOT_RUNNING) == "OCF_NOT_RUNNING"
    assert rc_name(99) == "exit code 99"


def test_registry(tmp_path: Path) -> None:
    from agents import AGENT_TYPES, make_registry  # noqa: PLC0415

    reg = make_registry(tmp_path, cgroup_base=None)
    assert set(reg) == set(AGENT_TYPES) == {"proc", "ocf", "vm", "ct"}
