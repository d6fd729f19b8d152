"""A local cluster's node processes: start, wait, stop, kill (for ``ha-cluster``).

Each node is one detached ``ha-node`` process (in the node's network
namespace when it has one) with its pid file in ``DIR/run/<node>/``, its
``ha-watchdog`` beside it, and its services in the cluster's cgroup.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable

from admin.cluster import SHUTDOWN_FILE, ClusterConfig
from admin.errors import AdminError, ExitCode
from fence.kill import NodeKiller
from fence.procfs import pid_alive, read_pid_file
from ha.errors import HaError
from store.records import read_lrm_status


def check_nodes(c: ClusterConfig, nodes: Iterable[str]) -> list[str]:
    """NODES as a list; :class:`AdminError` (usage) for a name the cluster does not have."""
    out = list(nodes)
    for n in out:
        if n not in c.nodes:
            raise AdminError(f"no such node '{n}'", ExitCode.USAGE)
    return out


def node_pid(c: ClusterConfig, node: str) -> int | None:
    return read_pid_file(c.run_dir(node) / "ha-node.pid")


def running_nodes(c: ClusterConfig) -> list[str]:
    return [n for n in sorted(c.nodes) if node_pid(c, n) is not None]


def start_node(c: ClusterConfig, node: str) -> int:
    if node_pid(c, node) is not None:
        raise AdminError(f"{node} is already running", ExitCode.FAILED)
    c.log_file(node).parent.mkdir(parents=True, exist_ok=True)
    # -P: the working directory (the cluster directory, which holds a ``store/`` folder) is not
    # put on sys.path, where it would shadow the ``store`` package (and nothing placed there runs)
    cmd = [sys.executable, "-P", "-m", "cli.ha_node", "--node", node, "--cluster", str(c.root)]
    netns = c.netns.get(node)
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    with open(c.log_file(node).with_suffix(".out"), "ab") as out:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True, cwd=c.root
        )
    return proc.pid


START_TIMEOUT = 60.0  # seconds; a loaded host can take long to start Python: success ends the wait at once


def wait_started(c: ClusterConfig, node: str, pid: int | None = None, timeout: float = START_TIMEOUT) -> bool:
    """NODE wrote its pid file and its ha-watchdog listens; False at once if PID (ours) exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if node_pid(c, node) is not None and c.watchdog_socket(node).exists():
            return True
        if pid is not None and _exited(pid):
            return False
        time.sleep(0.05)
    return False


def _exited(pid: int) -> bool:
    """Our child PID has exited (and is reaped now)."""
    try:
        return os.waitpid(pid, os.WNOHANG)[0] == pid
    except ChildProcessError:  # not our child, or reaped already
        return not pid_alive(pid)


def wait_quorate(c: ClusterConfig, node: str, since: float, timeout: float = START_TIMEOUT) -> bool:
    """Wait until NODE's LRM wrote its lrm_status after ``since`` (it does only while quorate, §1.4)."""
    store = c.open_store()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(HaError):
                st = read_lrm_status(store, node)
                if st.timestamp is not None and st.timestamp >= since:
                    return True
            time.sleep(0.05)
        return False
    finally:
        store.close()


def request_stop(c: ClusterConfig, node: str, kind: str) -> int | None:
    """Ask NODE to stop (``shutdown``, ``reboot`` or ``restart``); its pid, None if it does not run."""
    pid = node_pid(c, node)
    if pid is None:
        return None
    (c.run_dir(node) / SHUTDOWN_FILE).write_text(kind)
    os.kill(pid, signal.SIGTERM)
    return pid


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Wait until PIDS are gone; those still alive after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = [p for p in pids if pid_alive(p)]
        if not pids:
            return []
        time.sleep(0.05)
    return [p for p in pids if pid_alive(p)]


def dump_stacks(pids: list[int]) -> None:
    """Ask each of PIDS (ha-node processes) to write every thread's stack to its log (SIGUSR2)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGUSR2)
    if pids:
        time.sleep(0.3)


def kill_tree(c: ClusterConfig, node: str) -> list[int]:
    """SIGKILL everything of NODE: its cgroup (daemon, services, launches), process groups, watchdog.

    The same firing path as the node's watchdog (fence/kill.py): records that do not
    provably belong to this boot and group are left alone.
    """
    pids = [p for name in ("ha-node.pid", "ha-watchdog.pid") if (p := read_pid_file(c.run_dir(node) / name))]
    cgroups = [c.cgroup_base / node] if c.cgroup_base is not None else []
    killer = NodeKiller(cgroups, [c.state_dir / node], pids)
    killer.fire()
    killer.close()
    return pids


def remove_empty_cgroups(c: ClusterConfig) -> None:
    """rmdir the empty cgroups this cluster's nodes made (<cgroup_base>/<node>/...); busy ones stay."""
    root = c.cgroup_base
    if root is None:
        return
    from agents.procutil import remove_cgroup  # noqa: PLC0415

    for n in c.nodes:
        remove_cgroup(root / n)  # depth first, only what is empty
    with contextlib.suppress(OSError):
        root.rmdir()
