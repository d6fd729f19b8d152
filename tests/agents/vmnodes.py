"""Two ``vm`` plugins as two nodes (``n1``, ``n2``) of one host, for the live-migration tests.

One state folder and one test cgroup, as two nodes of a local cluster have. The
"peer" (how the source reaches the target; in a live cluster a member-only API
request, docs/API.md ``vm_incoming``) calls the target plugin directly. The
guests are firmware-only VMs (an empty raw disk: the firmware idles, no kernel
boots), so each QEMU costs well under a second.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from agents import procutil
from agents.vm import VmPlugin
from agents.vmqmp import MigrationError, PeerError
from ha.agent import exec_resource_agent
from ha.config.resources import ResourceConfig
from ha.constants import ExitCode
from tests.agents.helpers import AgentEnv, conf, kill_everything, pids_with_token, wait_until

SID = "vm:200"
NAME = "200"


class Nodes:
    """Two nodes' plugins and envs, and the peer between them (it records each request)."""

    def __init__(self, state: Path, cgroup_base: Path, disk: str) -> None:
        self.plugins = {
            n: VmPlugin(state, cgroup_base=cgroup_base, start_timeout=20.0, kill_wait=3.0)
            for n in ("n1", "n2")
        }
        self.envs = {n: AgentEnv(n, {"vm": p}) for n, p in self.plugins.items()}
        self.disk = disk
        self.requests: list[tuple[str, str]] = []
        self.uri_override: str | None = None
        self.refuse: str | None = None  # the target's answer to every request
        self.props: dict[str, str] = {}  # the service's config now, beyond the defaults below
        for p in self.plugins.values():
            p.peer = self.call

    def conf(self, node: str) -> ResourceConfig:
        props = {"disk": self.disk, "memory": "32", "stop_timeout": "0", **self.props}
        return conf(SID, node=node, **props)

    def call(self, node: str, args: Mapping[str, Any], timeout: float) -> Mapping[str, Any]:
        action, sid = str(args["action"]), str(args["sid"])
        self.requests.append((node, action))
        if self.refuse is not None:
            raise PeerError(self.refuse)
        p, env, cd = self.plugins[node], self.envs[node].env, self.conf(node)
        try:
            if action == "listen":
                uri = p.incoming_listen(env, sid, cd, "127.0.0.1")
                return {"uri": self.uri_override or uri}
            if action == "resume":
                p.incoming_resume(env, sid, cd)
                return {}
            if action == "abort":
                return {"killed": p.incoming_abort(env, sid, cd)}
        except MigrationError as e:
            raise PeerError(str(e)) from e
        raise PeerError(f"unknown action {action}")

    def status(self, node: str) -> str | None:
        return self.plugins[node]._qmp_status(node, NAME, 3.0)

    def pids(self, node: str) -> list[int]:
        st = self.plugins[node].load_state(node, NAME)
        return [] if st is None else self.plugins[node].live_pids(st)


def make_nodes(tmp_path: Path, cgroup_base: Path, token: str) -> Iterator[Nodes]:
    disk = tmp_path / "blank.raw"
    with open(disk, "wb") as f:
        f.truncate(1 << 20)
    ns = Nodes(tmp_path / "state", cgroup_base, str(disk))
    try:
        yield ns
    finally:
        for p in ns.plugins.values():
            if p.standby_poke is not None:  # a keeper's: stop it before the kill
                p.standby_poke = None
            for state_file in p.state_dir.glob("*/vm/*.json"):
                st = p.load_state(state_file.parent.parent.name, state_file.stem)
                if st is not None and st.cgroup:
                    procutil.cgroup_kill(Path(st.cgroup))
        # the test's own guests were just killed: let them go (a loaded host takes a moment) before
        # looking for any that outlived their cgroup
        with contextlib.suppress(AssertionError):
            wait_until(lambda: not pids_with_token(token), timeout=10)
        assert not kill_everything(ns.plugins["n1"], token), "a QEMU survived its test"


def start_on_n1(ns: Nodes) -> list[int]:
    env = ns.envs["n1"]
    assert exec_resource_agent(env.env, SID, ns.conf("n1"), "started", {}) == ExitCode.SUCCESS, env.text()
    assert ns.status("n1") == "running"
    pids = ns.pids("n1")
    assert pids
    return pids
