"""Network namespaces for a local cluster: one per node, joined by veth pairs on a bridge.

Each node ``nodeN`` lives in namespace ``pyha-<tag>-nN`` with address
``10.<a>.<b>.N/24`` on its veth end; the host keeps the other end on bridge
``pyb<tag>`` (address ``.254``), so the host reaches every node and the
nodes reach each other. ``partition`` takes the host end of a node's veth
down (the node is cut off from everyone); ``heal`` brings it back. Requires
root and iproute2. Everything created is recorded in cluster.json so
``destroy`` removes exactly that.

With ``ha-cluster init --store etcd --netns`` each namespace also runs the
node's etcd member on the node's address (ports 2379/2380), so a partition
cuts a node and its etcd member off together.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
from dataclasses import dataclass


class NetnsError(Exception):
    pass


def ip(*args: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = ["ip", *args] if ns is None else ["ip", "netns", "exec", ns, "ip", *args]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if check and res.returncode != 0:
        raise NetnsError(f"'{' '.join(cmd)}' failed: {res.stderr.strip()}")
    return res


@dataclass(frozen=True)
class NodeNet:
    node: str
    ns: str
    host_if: str
    ns_if: str
    address: str


@dataclass(frozen=True)
class Network:
    tag: str
    bridge: str
    prefix: str  # "10.a.b"
    nodes: dict[str, NodeNet]

    def to_dict(self) -> dict[str, object]:
        return {
            "tag": self.tag,
            "bridge": self.bridge,
            "prefix": self.prefix,
            "nodes": {n: [v.ns, v.host_if, v.ns_if, v.address] for n, v in self.nodes.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> Network:
        raw = d["nodes"]
        assert isinstance(raw, dict)
        nodes = {n: NodeNet(n, *v) for n, v in raw.items()}
        return cls(str(d["tag"]), str(d["bridge"]), str(d["prefix"]), nodes)


def plan(seed: str, names: list[str]) -> Network:
    h = hashlib.sha1(seed.encode()).hexdigest()
    tag = h[:5]
    a, b = 200 + int(h[5:7], 16) % 50, int(h[7:9], 16)
    prefix = f"10.{a}.{b}"
    nodes = {n: _node_net(tag, prefix, n, i) for i, n in enumerate(names, start=1)}
    return Network(tag, f"pyb{tag}", prefix, nodes)


def _node_net(tag: str, prefix: str, name: str, i: int) -> NodeNet:
    return NodeNet(name, f"pyha-{tag}-n{i}", f"ph{tag}{i}h", f"ph{tag}{i}c", f"{prefix}.{i}")


def grow(net: Network, name: str) -> Network:
    """NET with one node more (``ha-cluster add-node``): the next free index's namespace and address."""
    used = {int(v.ns.rsplit("-n", 1)[1]) for v in net.nodes.values()}
    i = max(used, default=0) + 1
    if i > 253:  # .254 is the host's end on the bridge
        raise NetnsError(f"no address left in {net.prefix}.0/24")
    return Network(
        net.tag, net.bridge, net.prefix, {**net.nodes, name: _node_net(net.tag, net.prefix, name, i)}
    )


def create(net: Network) -> None:
    try:
        ip("link", "add", net.bridge, "type", "bridge")
        ip("addr", "add", f"{net.prefix}.254/24", "dev", net.bridge)
        ip("link", "set", net.bridge, "up")
        for v in net.nodes.values():
            _create_node(net, v)
    except NetnsError:
        destroy(net)
        raise


def _create_node(net: Network, v: NodeNet) -> None:
    ip("netns", "add", v.ns)
    ip("link", "add", v.host_if, "type", "veth", "peer", "name", v.ns_if)
    ip("link", "set", v.ns_if, "netns", v.ns)
    ip("link", "set", v.host_if, "master", net.bridge)
    ip("link", "set", v.host_if, "up")
    ip("addr", "add", f"{v.address}/24", "dev", v.ns_if, ns=v.ns)
    ip("link", "set", v.ns_if, "up", ns=v.ns)
    ip("link", "set", "lo", "up", ns=v.ns)


def create_node(net: Network, node: str) -> None:
    """The namespace and veth pair of one node of NET, on its existing bridge (undone on failure)."""
    try:
        _create_node(net, net.nodes[node])
    except NetnsError:
        destroy_node(net, node)
        raise


def destroy_node(net: Network, node: str) -> None:
    """Remove one node's namespace and veth pair; whatever still runs in the namespace is killed."""
    v = net.nodes[node]
    _kill_in(v.ns)
    ip("link", "del", v.host_if, check=False)
    ip("netns", "del", v.ns, check=False)


def destroy(net: Network) -> None:
    for v in net.nodes.values():
        ip("link", "del", v.host_if, check=False)
        ip("netns", "del", v.ns, check=False)
    ip("link", "del", net.bridge, check=False)


def pids(ns: str) -> list[int]:
    """Processes running in namespace ``ns`` (``ip netns pids``); [] when it is gone."""
    res = ip("netns", "pids", ns, check=False)
    return [int(x) for x in res.stdout.split() if x.isdigit()] if res.returncode == 0 else []


def kill_all(net: Network) -> list[int]:
    """SIGKILL every process still running in the network's namespaces; their pids."""
    return [pid for v in net.nodes.values() for pid in _kill_in(v.ns)]


def _kill_in(ns: str) -> list[int]:
    """SIGKILL every process running in namespace ``ns``; the pids signalled."""
    killed = []
    for pid in pids(ns):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
    return killed


def partition(net: Network, node: str) -> None:
    ip("link", "set", net.nodes[node].host_if, "down")


def heal(net: Network, node: str) -> None:
    ip("link", "set", net.nodes[node].host_if, "up")
