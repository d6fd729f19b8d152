"""Shared helpers of the agent tests: a minimal Env, configs, process cleanup."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

from admin.ports import free_port  # noqa: F401 -- re-exported for the agent tests
from agents import procutil
from agents.proc import ProcPlugin
from ha.config.resources import ResourceConfig, resource_from_dict
from ha.env import Env, ResourcePlugin

REPO = Path(__file__).resolve().parents[2]
TOKEN_VAR = "PYHA_TEST_TOKEN"


class AgentEnv:
    """The part of the Env port a plugin and ``exec_resource_agent`` use."""

    def __init__(self, node: str, plugins: dict[str, ResourcePlugin] | None = None) -> None:
        self.node = node
        self.plugins = plugins or {}
        self.lines: list[tuple[str, str]] = []

    def nodename(self) -> str:
        return self.node

    def log(self, level: str, msg: str) -> None:
        self.lines.append((level, msg))

    def resource_plugin(self, rtype: str) -> ResourcePlugin | None:
        return self.plugins.get(rtype)

    @property
    def env(self) -> Env:
        return cast(Env, self)

    def text(self) -> str:
        return "\n".join(f"{lvl}: {msg}" for lvl, msg in self.lines)


def conf(sid: str, node: str = "n1", **props: str) -> ResourceConfig:
    """A resource config parsed by the real resources.cfg code."""
    return resource_from_dict(sid, {"node": node, **props}, "test")


def wait_until(pred: Callable[[], object], timeout: float = 5.0, interval: float = 0.01) -> float:
    start = time.monotonic()
    while True:
        if pred():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def tcp_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def pids_with_token(token: str) -> list[int]:
    """Live processes whose environment carries our test token (the cleanup backstop)."""
    needle = f"{TOKEN_VAR}={token}".encode()
    out: list[int] = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if needle in env and procutil.pid_alive(int(entry.name)):
            out.append(int(entry.name))
    return out


def kill_everything(plugin: ProcPlugin, token: str) -> list[int]:
    """Kill every process a test started; return the pids that were still alive."""
    leftovers: set[int] = set()
    for state_file in plugin.state_dir.glob("*/proc/*.json"):
        st = plugin.load_state(state_file.parent.parent.name, state_file.stem)
        if st is None:
            continue
        if st.cgroup:
            procutil.cgroup_kill(Path(st.cgroup))
        pids = plugin.live_pids(st)
        leftovers.update(pids)
        for p in pids:
            with contextlib.suppress(OSError):
                os.kill(p, signal.SIGKILL)
    for p in pids_with_token(token):
        leftovers.add(p)
        with contextlib.suppress(OSError):
            os.kill(p, signal.SIGKILL)
    with contextlib.suppress(AssertionError):
        wait_until(lambda: not pids_with_token(token), timeout=5)
    return sorted(leftovers)


def remove_cgroup_tree(base: Path) -> None:
    if not base.exists():
        return
    for cg in sorted((p for p in base.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        procutil.cgroup_kill(cg)
    with contextlib.suppress(AssertionError):
        wait_until(lambda: procutil.remove_cgroup(base), timeout=5)
