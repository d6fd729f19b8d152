"""A real network partition: three bus nodes in their own network namespaces.

Topology (all names unique per run, everything removed in the fixture)::

    ns <id>-a: va (10.77.0.1) --+
    ns <id>-b: vb (10.77.0.2) --+-- ns <id>-br: bridge br0
    ns <id>-c: vc (10.77.0.3) --+

Each node is ``python -m bus.runner`` started with ``ip netns exec``; it
prints its peer/quorum transitions as JSON lines. Cutting c's cable (the
bridge-side end of its veth goes down, so packets silently vanish, as with a
pulled cable) must make c lose quorum within the peer timeout while a and b
stay quorate; restoring it must bring c back.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bus.keys import generate

NODES = ("a", "b", "c")
HEARTBEAT, TIMEOUT = 0.1, 0.6
REPO = Path(__file__).resolve().parents[2]


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


class Net:
    def __init__(self) -> None:
        self.id = uuid.uuid4().hex[:6]
        self.bridge_ns = f"pb{self.id}-br"
        self.ns = {n: f"pb{self.id}-{n}" for n in NODES}
        self.addr = {n: f"10.77.0.{i + 1}" for i, n in enumerate(NODES)}
        self.created: list[str] = []

    def cable(self, node: str) -> str:
        return f"h{self.id}{node}"  # bridge-side veth end, <= 15 chars

    def up(self) -> None:
        ip("netns", "add", self.bridge_ns)
        self.created.append(self.bridge_ns)
        ip("-n", self.bridge_ns, "link", "add", "br0", "type", "bridge")
        ip("-n", self.bridge_ns, "link", "set", "br0", "up")
        for n in NODES:
            ns = self.ns[n]
            ip("netns", "add", ns)
            self.created.append(ns)
            dev = f"v{self.id}{n}"
            ip(
                "-n",
                ns,
                "link",
                "add",
                dev,
                "type",
                "veth",
                "peer",
                "name",
                self.cable(n),
                "netns",
                self.bridge_ns,
            )
            ip("-n", ns, "addr", "add", f"{self.addr[n]}/24", "dev", dev)
            ip("-n", ns, "link", "set", dev, "up")
            ip("-n", ns, "link", "set", "lo", "up")
            ip("-n", self.bridge_ns, "link", "set", self.cable(n), "master", "br0")
            ip("-n", self.bridge_ns, "link", "set", self.cable(n), "up")

    def set_cable(self, node: str, state: str) -> None:
        ip("-n", self.bridge_ns, "link", "set", self.cable(node), state)

    def down(self) -> None:
        # Deleting a namespace destroys the veth ends inside it (and their peers).
        for ns in reversed(self.created):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10, check=False)


class NodeProc:
    """One runner process; its JSON lines are collected by a reader thread."""

    def __init__(self, net: Net, node: str, key_dir: Path) -> None:
        members = [arg for n in NODES for arg in ("--member", f"{n}=tcp://{net.addr[n]}:7000")]
        cmd = [
            "ip",
            "netns",
            "exec",
            net.ns[node],
            sys.executable,
            "-m",
            "bus.runner",
            "--node",
            node,
            "--cluster",
            "part",
            *members,
            "--keys",
            str(key_dir),
            "--heartbeat",
            str(HEARTBEAT),
            "--timeout",
            str(TIMEOUT),
            "--duration",
            "60",
        ]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.node = node
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env
        )
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, name=f"read-{node}")
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.events.put(json.loads(line))

    def wait_for(self, pred: Any, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        for ev in self.seen:
            if pred(ev):
                return ev
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self.node}: no matching event within {timeout}s; saw {self.seen}")
            try:
                ev = self.events.get(timeout=left)
            except queue.Empty:
                continue
            self.seen.append(ev)
            if pred(ev):
                return ev

    def drain(self) -> list[dict[str, Any]]:
        while True:
            try:
                self.seen.append(self.events.get_nowait())
            except queue.Empty:
                return self.seen

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._reader.join(timeout=10)
        assert self.proc.stderr is not None
        err = self.proc.stderr.read()
        self.proc.stderr.close()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return err


@pytest.fixture
def net() -> Iterator[Net]:
    n = Net()
    try:
        n.up()
        yield n
    finally:
        n.down()
    leftover = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, timeout=10, check=True
    ).stdout
    assert f"pb{n.id}" not in leftover


def peer_event(kind: str, peer: str) -> Any:
    return lambda ev: ev.get("event") == kind and ev["peer"] == peer


def quorate(value: bool) -> Any:
    return lambda ev: ev.get("event") == "quorum" and ev["quorate"] is value


def test_cut_cable_minority_loses_quorum_majority_keeps_it(net: Net, tmp_path: Path) -> None:
    for n in NODES:
        generate(tmp_path, n)
    procs = {n: NodeProc(net, n, tmp_path) for n in NODES}
    try:
        for n, p in procs.items():  # full mesh first: every node sees both others
            for other in set(NODES) - {n}:
                p.wait_for(peer_event("peer_up", other), timeout=15)
            p.wait_for(quorate(True), timeout=1)

        cut = time.monotonic()
        net.set_cable("c", "down")
        lost = procs["c"].wait_for(quorate(False), timeout=TIMEOUT + 3)
        for n in ("a", "b"):
            down = procs[n].wait_for(peer_event("peer_down", "c"), timeout=3)
            assert down["t"] - cut <= TIMEOUT + 0.4
        # CLOCK_MONOTONIC is system-wide, so the runners' "t" compares with ours.
        assert lost["t"] - cut <= TIMEOUT + 0.4, f"quorum loss took {lost['t'] - cut:.2f}s"
        assert lost["members"] == ["c"]

        heal = time.monotonic()
        net.set_cable("c", "up")
        procs["c"].wait_for(lambda ev: quorate(True)(ev) and ev["t"] > heal, timeout=15)
        for other in ("a", "b"):
            procs["c"].wait_for(
                lambda ev, o=other: peer_event("peer_up", o)(ev) and ev["t"] > heal, timeout=15
            )
    finally:
        errors = {n: p.stop() for n, p in procs.items()}
    for n in ("a", "b"):
        events = procs[n].drain()
        assert not [e for e in events if quorate(False)(e)], f"{n} lost quorum: {events}\n{errors[n]}"
    for n in NODES:
        assert procs[n].proc.returncode == 0, errors[n]
        assert procs[n].drain()[-1]["event"] == "stopped"
