"""Fencing that no single fault defeats (issue #9): real processes, real faults, overlap markers.

Each test injects one fault an operator meets in practice and checks, from the
services' own markers (a flock held while a copy runs), that no service ever
ran on two nodes at once, and that the cluster recovered what it should.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from admin.ports import free_port
from agents.procutil import pid_alive, read_stat
from bench.livecluster import PY, LiveCluster, wait_for

pytestmark = pytest.mark.timeout(180)


def first_copy_pid(c: LiveCluster, sid: str) -> int:
    ans = c.ask(sid)
    assert ans is not None, f"{sid} does not answer"
    return int(ans["pid"])  # type: ignore[call-overload]


def test_watchdog_sigkill_alone_fences_the_node(cluster: LiveCluster) -> None:
    """SIGKILL of ha-watchdog only (what the OOM killer does): the node's services die with it."""
    cluster.add_service("proc:a", "node2")
    cluster.add_service("proc:b", "node3")
    cluster.up()
    cluster.wait_serving("proc:a", 30, on="node2")
    old = first_copy_pid(cluster, "proc:a")
    wd = cluster.pid("node2", "ha-watchdog")
    assert wd is not None
    os.kill(wd, signal.SIGKILL)
    # the node daemon notices at once and takes its services down itself
    wait_for(lambda: not pid_alive(old), 5, "node2's copy of proc:a to die with its watchdog")
    cluster.wait_serving("proc:a", 30, not_on="node2")
    assert cluster.serving_node("proc:b") == "node3"
    assert "watchdog" in cluster.log("node2") and "fencing this node" in cluster.log("node2")


def test_watchdog_stalled_then_daemon_stalled(cluster: LiveCluster) -> None:
    """SIGSTOP of ha-watchdog, then of ha-node (a starved host): the daemon fences itself in between."""
    cluster.add_service("proc:a", "node2")
    cluster.up()
    cluster.wait_serving("proc:a", 30, on="node2")
    old = first_copy_pid(cluster, "proc:a")
    wd, daemon = cluster.pid("node2", "ha-watchdog"), cluster.pid("node2")
    assert wd is not None and daemon is not None
    os.kill(wd, signal.SIGSTOP)
    time.sleep(2.5)
    with_daemon = pid_alive(daemon)
    if with_daemon:
        os.kill(daemon, signal.SIGSTOP)
    wait_for(lambda: not pid_alive(old), 10, "node2's copy of proc:a to be killed")
    cluster.wait_serving("proc:a", 30, not_on="node2")
    assert not with_daemon or "watchdog" in cluster.log("node2")


def test_fencing_reaches_ocf_daemons(cluster: LiveCluster) -> None:
    """An OCF agent's daemon (ocf:heartbeat:anything) dies when its node is fenced."""
    port = free_port()
    cluster.ports["ocf:web"] = port
    opts = f"PYHA_SID=ocf:web {PY} -m agents.demo_service --port {port} --markers {cluster.markers}"
    cluster.up()
    cluster.manager(
        "add", "ocf:web", "--node", "node2", "--agent", "heartbeat:anything",
        "--params", f"binfile=/usr/bin/env cmdline_options='{opts}'",
    )  # fmt: skip
    cluster.wait_serving("ocf:web", 40)
    old = first_copy_pid(cluster, "ocf:web")
    cluster.signal("node2", signal.SIGKILL)  # the daemon dies: its watchdog fires
    wait_for(lambda: not pid_alive(old), 10, "the OCF daemon to die with its fenced node")
    cluster.wait_serving("ocf:web", 40)
    assert first_copy_pid(cluster, "ocf:web") != old


def test_disarmed_node_crash_is_not_recovered_while_its_services_may_run(cluster: LiveCluster) -> None:
    """disarm-ha ignore, the node daemon dies (no watchdog armed), arm-ha: no recovery elsewhere."""
    cluster.add_service("proc:a", "node2")
    cluster.up()
    cluster.wait_serving("proc:a", 30, on="node2")
    old = first_copy_pid(cluster, "proc:a")
    cluster.manager("crm-command", "disarm-ha", "ignore")
    wait_for(lambda: "HA disarm requested" in cluster.log("node2"), 20, "node2's LRM to disarm")
    time.sleep(1)
    cluster.signal("node2", signal.SIGKILL)  # no watchdog armed: its services keep running
    time.sleep(1)
    cluster.manager("crm-command", "arm-ha")
    # SAFETY: the master may not recover proc:a while its old copy may still run unwatched
    wait_for(
        lambda: "its services may still run" in "".join(cluster.log(n) for n in ("node1", "node3")),
        30,
        "the master to refuse fencing the disarmed node",
    )
    time.sleep(3)
    assert pid_alive(old) and cluster.serving_node("proc:a") == "node2"
    # the node comes back: its LRM stops what the master fenced meanwhile, clears its mark,
    # and only then is the service recovered
    cluster.up("node2")
    wait_for(lambda: not pid_alive(old), 30, "node2 to stop its fenced copy of proc:a")
    cluster.wait_state("proc:a", "started", 40)
    cluster.wait_serving("proc:a", 30)
    assert first_copy_pid(cluster, "proc:a") != old


def test_second_daemon_for_one_node_is_refused(cluster: LiveCluster) -> None:
    cluster.up()
    res = subprocess.run(
        [sys.executable, "-m", "cli.ha_node", "--node", "node2", "--cluster", str(cluster.dir)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert res.returncode == 1
    pid = cluster.pid("node2")
    want = f"ha-node: node2 is already running, pid {pid}; not starting a second ha-node"
    assert res.stderr.strip() == want
    assert cluster.pid("node2") is not None and pid_alive(int(cluster.pid("node2") or 0))


def test_stale_process_group_record_is_not_killed(cluster: LiveCluster) -> None:
    """A state file left from another boot or a reused pid must not get a stranger killed."""
    cluster.add_service("proc:a", "node2")  # node2's LRM holds its watchdog armed
    cluster.up()
    cluster.wait_serving("proc:a", 30, on="node2")
    stranger = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        st = read_stat(stranger.pid)
        assert st is not None
        d = cluster.dir / "state" / "node2" / "proc"
        d.mkdir(parents=True, exist_ok=True)
        common = {"pid": stranger.pid, "pgid": stranger.pid, "cgroup": None, "cmd": "x", "started_at": 0}
        import json  # noqa: PLC0415

        (d / "otherboot.json").write_text(json.dumps({**common, "starttime": st.starttime,
                                                      "boot_id": "not-this-boot"}))  # fmt: skip
        (d / "reused.json").write_text(json.dumps({**common, "starttime": st.starttime - 1,
                                                   "boot_id": Path("/proc/sys/kernel/random/boot_id")
                                                   .read_text().strip()}))  # fmt: skip
        cluster.signal("node2", signal.SIGKILL)  # fires node2's watchdog
        wait_for(lambda: "fired" in cluster.watchdog_log("node2"), 15, "node2's watchdog to fire")
        time.sleep(0.5)
        assert stranger.poll() is None, "the watchdog killed a process group that was not ours"
    finally:
        stranger.kill()
        stranger.wait()


def test_fencing_token_grows_across_failover(cluster: LiveCluster) -> None:
    """Every start gets HA_FENCING_TOKEN; a recovered copy gets a larger one than the fenced copy."""
    cluster.add_service("proc:a", "node2")
    cluster.up()
    cluster.wait_serving("proc:a", 30, on="node2")
    before = cluster.ask("proc:a")
    assert before is not None and before["fencing_token"] is not None
    cluster.kill("node2")
    cluster.wait_serving("proc:a", 30, not_on="node2")
    after = cluster.ask("proc:a")
    assert after is not None
    assert int(str(after["fencing_token"])) > int(str(before["fencing_token"]))


def test_device_watchdog_required_but_missing_refuses_to_start(tmp_path: Path) -> None:
    """watchdog: device and no such device: ha-node does not start (no services without a watchdog)."""
    root = tmp_path / "c"
    subprocess.run(
        [PY, "-m", "cli.ha_cluster", "init", str(root), "--nodes", "3", "--watchdog", "device"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    cfg = root / "cluster.json"
    import json  # noqa: PLC0415

    data = json.loads(cfg.read_text())
    assert data["watchdog"] == "device"
    data["watchdog_device"] = str(tmp_path / "no-watchdog-here")
    cfg.write_text(json.dumps(data))
    res = subprocess.run(
        [PY, "-m", "cli.ha_node", "--node", "node1", "--cluster", str(root)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert res.returncode == 1
    assert "watchdog 'device' configured but" in res.stderr and "no-watchdog-here" in res.stderr
