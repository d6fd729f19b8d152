"""Membership changes of a running cluster: ``ha-cluster add-node`` and ``remove-node`` (issue #15).

One member at a time, as etcd and corosync do (SAFETY:
:func:`bus.membership.one_member_change`): ``cluster.json`` gets the new member
list and ``config_version + 1``, the store a copy (``membership``), and every
running node follows within a tick (actors/members.py) and says so in
``nodes/<node>/membership``; the command waits for that before its next step.

Adding: keys and an endpoint for the new node; the change is refused unless the
running members alone are a majority of the new list (the new node counts only
once it runs); then the new node is started and waits for quorum.

Removing: the node is put in maintenance (BEHAVIOUR.md §6.5), so the master
moves its running services away; its stopped services are moved with
``migrate`` (the manager only changes their node); once nothing is placed on it
the node is stopped (orderly), its maintenance request and ``lrm_status`` are
cleared (the master then sees it ``unknown``, then ``gone``: dropped, never
fenced, since it holds no service), the members follow the shorter list, and
its keys are deleted (its key is refused from then on). Refused when the running
members would not stay a majority of the old list once the node stopped.

With network namespaces (``init --netns``) a new node gets the next namespace,
veth pair and address on the cluster's bridge, and a removed node's namespace
goes once it stopped. On a cluster with the etcd members ``ha-cluster`` runs
itself, a new node is an etcd client only (``init --etcd-members``): etcd's own
membership does not change. Not yet: removing a node that runs one of those
etcd members (that would be an etcd membership change as well).
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable
from functools import partial
from typing import TypeVar

from admin.cluster import ClusterConfig
from admin.commands import crm_command, move
from admin.errors import AdminError, ExitCode
from admin.member_records import (
    member_version_record,
    publish_membership,
    read_member_up,
    read_member_version,
)
from admin.ports import free_ports
from bus.keys import generate
from bus.membership import check_name, one_member_change
from cli import netns as netns_mod
from cli.cluster_init import NETNS_BUS_PORT, NETNS_METRICS_PORT
from cli.cluster_procs import (
    check_nodes,
    request_stop,
    running_nodes,
    start_node,
    wait_gone,
    wait_quorate,
    wait_started,
)
from ha.errors import HaError
from ha.records import ManagerStatus
from store.base import Store
from store.records import capacity_name, lrm_status_name, read_manager_status

FOLLOW_TIMEOUT = 20.0  # seconds the running members may take to follow a new cluster.json
CONNECT_TIMEOUT = 10.0  # seconds add-node waits for the running members to see enough of each other


T = TypeVar("T")


def majority(n: int) -> int:
    return n // 2 + 1


def _refuse_etcd_member(c: ClusterConfig, name: str) -> None:
    if c.etcd is not None and name in c.etcd.members:
        raise AdminError(
            f"{name} runs one of the cluster's etcd members ({', '.join(sorted(c.etcd.members))}):"
            " removing it online would change etcd's membership too, which is not supported yet",
            ExitCode.USAGE,
        )


def _grow_network(c: ClusterConfig, name: str, endpoint: str | None) -> tuple[netns_mod.Network, str, int]:
    """The cluster's network with NAME's namespace, its bus endpoint and metrics port (not created yet)."""
    if endpoint is not None:
        raise AdminError("--endpoint: a node of a --netns cluster listens on its own address", ExitCode.USAGE)
    assert c.network is not None
    try:
        net = netns_mod.grow(netns_mod.Network.from_dict(c.network), name)
    except netns_mod.NetnsError as e:
        raise AdminError(str(e), ExitCode.REFUSED) from None
    return net, f"tcp://{net.nodes[name].address}:{NETNS_BUS_PORT}", NETNS_METRICS_PORT


def _wait(pred: Callable[[], bool], timeout: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(HaError):
            if pred():
                return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(step)


def _wait_each(
    nodes: list[str], said: Callable[[str], T], ok: Callable[[T], bool], timeout: float
) -> dict[str, T | None]:
    """Wait until ``ok(said(n))`` for each of NODES; those that were not in time, with what they
    said last (None: not asked yet)."""
    late: dict[str, T | None] = dict.fromkeys(nodes)

    def done() -> bool:
        for n in list(late):
            late[n] = got = said(n)
            if ok(got):
                del late[n]
        return not late

    _wait(done, timeout)
    return late


def wait_followed(
    c: ClusterConfig, store: Store, nodes: list[str], timeout: float = FOLLOW_TIMEOUT
) -> list[str]:
    """Wait until each of NODES runs by ``c.config_version``; those that did not in time."""
    late = _wait_each(nodes, partial(read_member_version, store), lambda v: v == c.config_version, timeout)
    return list(late)


def _check_settled(c: ClusterConfig, store: Store, running: list[str]) -> None:
    """No change in flight: every running member already runs by the current version."""
    behind = [n for n in running if read_member_version(store, n) not in (None, c.config_version)]
    if behind:
        raise AdminError(
            f"a membership change is still spreading (not yet followed by {', '.join(behind)})",
            ExitCode.FAILED,
        )


def wait_connected(
    store: Store, running: list[str], need: int, timeout: float = CONNECT_TIMEOUT
) -> dict[str, list[str] | None]:
    """Wait until each of RUNNING says its bus counts at least NEED members up (itself included);
    those that did not in time, with what they said (None: nothing yet)."""
    return _wait_each(
        running, partial(read_member_up, store), lambda up: up is not None and len(up) >= need, timeout
    )


def _next_name(c: ClusterConfig) -> str:
    i = len(c.nodes) + 1
    while f"node{i}" in c.nodes:
        i += 1
    return f"node{i}"


def add_node(c: ClusterConfig, name: str | None, endpoint: str | None, say: Callable[[str], None]) -> None:
    """Add one member to the running cluster ``c`` and start it (see the module doc)."""
    name = name or _next_name(c)
    if not re.match(r"^[a-z][a-z0-9-]{0,30}$", name):
        raise AdminError(f"invalid node name '{name}' (a-z, 0-9, '-'; starts with a letter)", ExitCode.USAGE)
    check_name(name)
    if name in c.nodes:
        raise AdminError(f"'{name}' is a member already", ExitCode.USAGE)
    running = running_nodes(c)
    new_size = len(c.nodes) + 1
    # SAFETY: until the new node runs, the members that run must hold a majority of the new
    # list by themselves, or they would lose quorum (and fence themselves) while it starts
    if len(running) < majority(new_size):
        raise AdminError(
            f"only {len(running)} of {len(c.nodes)} members run; {new_size} members need {majority(new_size)}"
            " for quorum: start the stopped members first",
            ExitCode.REFUSED,
        )
    net = None
    if c.network is not None:
        net, endpoint, metrics_port = _grow_network(c, name, endpoint)
    else:
        ports = free_ports(2)
        endpoint, metrics_port = endpoint or f"tcp://127.0.0.1:{ports[0]}", ports[1]
    if not endpoint.startswith("tcp://") or endpoint in c.nodes.values():
        raise AdminError(f"endpoint {endpoint} must be tcp://HOST:PORT and not in use", ExitCode.USAGE)
    store = c.open_store()
    try:
        _check_settled(c, store, running)
        # SAFETY: the same majority, as each member counts it: a member whose bus does not see
        # enough of the others yet (a link still coming up) would lose quorum, and stop petting
        # its watchdog, the moment it counts votes by the longer list
        short = wait_connected(store, running, majority(new_size))
        if short:
            views = "; ".join(
                f"{n} sees {', '.join(up) if up else 'nothing it said'} up" for n, up in sorted(short.items())
            )
            raise AdminError(
                f"{new_size} members need {majority(new_size)} votes, and not every running member"
                f" counts that many up after {CONNECT_TIMEOUT:g}s ({views}): check the links between"
                " them, then try again",
                ExitCode.REFUSED,
            )
        new_nodes = {**c.nodes, name: endpoint}
        one_member_change(c.nodes, new_nodes)  # one member at a time, by construction
        if net is not None:
            try:
                netns_mod.create_node(net, name)  # before cluster.json names it: nothing to undo there
            except netns_mod.NetnsError as e:
                raise AdminError(f"cannot create the namespace of {name}: {e}", ExitCode.FAILED) from None
            c.netns = {**c.netns, name: net.nodes[name].ns}
            c.network = net.to_dict()
        if c.curve:
            generate(c.keys_dir, name, force=True)  # before cluster.json names it: members load it
        c.nodes = new_nodes
        c.metrics_ports = {**c.metrics_ports, name: metrics_port}
        c.config_version += 1
        c.save()
        publish_membership(store, c)
        say(f"{name} added at {endpoint} (membership version {c.config_version}, {new_size} members)")
        late = wait_followed(c, store, running)
        if late:
            raise AdminError(f"not followed within {FOLLOW_TIMEOUT:g}s by {', '.join(late)} (see their logs)")
        say(f"followed by {', '.join(running)}")
        t0 = time.time()
        pid = start_node(c, name)
        if not wait_started(c, name, pid) or not wait_quorate(c, name, t0):
            raise AdminError(f"{name} did not come up quorate (see {c.log_file(name)})")
        say(f"{name} up (quorate)")
    finally:
        store.close()


def _placed_on(ms: ManagerStatus, node: str) -> dict[str, str]:
    """Services the manager places on NODE (or moving to it): sid -> state."""
    return {sid: sd.state for sid, sd in ms.service_status.items() if node in (sd.node, sd.target)}


def remove_node(c: ClusterConfig, name: str, timeout: float, say: Callable[[str], None]) -> None:
    """Empty NODE, stop it and drop it from the running cluster ``c`` (see the module doc)."""
    check_nodes(c, [name])
    _refuse_etcd_member(c, name)
    if len(c.nodes) == 1:
        raise AdminError("cannot remove the last member", ExitCode.USAGE)
    running = running_nodes(c)
    others = [n for n in running if n != name]
    # SAFETY: once NAME stopped, the other running members must still be a majority of the
    # old list (they count by it until they follow) and of the new one
    if len(others) < majority(len(c.nodes)):
        raise AdminError(
            f"removing {name} leaves {len(others)} running members, fewer than the {majority(len(c.nodes))}"
            f" that {len(c.nodes)} members need while the change spreads"
            + (" (a 2-node cluster cannot shrink online)" if len(c.nodes) == 2 else ": start stopped ones"),
            ExitCode.REFUSED,
        )
    store = c.open_store()
    try:
        _check_settled(c, store, running)
        nodes = sorted(c.nodes)
        ms, _ = read_manager_status(store)
        placed = _placed_on(ms, name)
        requested = bool((ms.node_request or {}).get(name, {}).get("maintenance"))
        if name in running:
            if ms.node_status.get(name) != "maintenance" and not requested:
                crm_command(store, f"enable-node-maintenance {name}", nodes)
                requested = True
                say(f"{name}: maintenance enabled, its services move away")
            _drain(store, name, nodes, timeout, say)
            pid = request_stop(c, name, "shutdown")
            if pid is not None and wait_gone([pid], timeout):
                raise AdminError(f"{name} did not stop within {timeout:g}s", ExitCode.FAILED)
            say(f"{name} stopped")
        elif placed:
            raise AdminError(
                f"{name} is not running but services are placed on it ({', '.join(sorted(placed))}):"
                f" start it ('ha-cluster up {c.root} {name}') and remove it again",
                ExitCode.REFUSED,
            )
        c.nodes = {n: e for n, e in c.nodes.items() if n != name}
        c.metrics_ports = {n: p for n, p in c.metrics_ports.items() if n != name}
        net = netns_mod.Network.from_dict(c.network) if c.network is not None else None
        if net is not None:
            c.netns = {n: ns for n, ns in c.netns.items() if n != name}
            c.network = netns_mod.Network(net.tag, net.bridge, net.prefix, {
                n: v for n, v in net.nodes.items() if n != name
            }).to_dict()  # fmt: skip
        c.config_version += 1
        c.save()
        publish_membership(store, c)
        say(f"{name} removed (membership version {c.config_version}, {len(c.nodes)} members)")
        late = wait_followed(c, store, others)
        if late:
            raise AdminError(f"not followed within {FOLLOW_TIMEOUT:g}s by {', '.join(late)} (see their logs)")
        # Only now, the node out of every member's node list: the master sees it offline and,
        # its LRM's last word being ``maintenance``, keeps it in maintenance (a member still
        # heard on the bus would turn ``online`` and get its services back as their fallback,
        # §6.5). Without the request and the lrm_status it turns ``unknown``, then ``gone``:
        # never fenced, since nothing is placed on it (BEHAVIOUR.md §6.1, §6.3).
        if requested:
            crm_command(store, f"disable-node-maintenance {name}", nodes)
        for rec_name in (lrm_status_name(name), member_version_record(name), capacity_name(name)):
            store.delete(rec_name)
        for suffix in (".key", ".key_secret"):
            (c.keys_dir / f"{name}{suffix}").unlink(missing_ok=True)
        if net is not None:
            netns_mod.destroy_node(net, name)  # stopped: what is left in it (nothing, orderly) goes too
        say(f"followed by {', '.join(others)}; the keys of {name} are deleted")
    finally:
        store.close()


def _drain(store: Store, name: str, nodes: list[str], timeout: float, say: Callable[[str], None]) -> None:
    """Wait until the master placed nothing on NAME; stopped services are moved with ``migrate``."""
    moved: set[str] = set()
    placed: dict[str, str] = {}

    def empty() -> bool:
        nonlocal placed
        ms, _ = read_manager_status(store)
        placed = _placed_on(ms, name)
        online = [n for n in nodes if n != name and ms.node_status.get(n) == "online"]
        for sid, state in sorted(placed.items()):
            if state == "stopped" and sid not in moved and online:
                move(store, "migrate", sid, online[0], nodes)
                moved.add(sid)
                say(f"{sid} (stopped) moved to {online[0]}")
        return ms.node_status.get(name) == "maintenance" and not placed

    if not _wait(empty, timeout, 0.2):
        raise AdminError(
            f"{name} still has services after {timeout:g}s: "
            + ", ".join(f"{s} ({st})" for s, st in sorted(placed.items()))
            + f"; {name} stays in maintenance (ha-manager crm-command node-maintenance disable {name})",
            ExitCode.FAILED,
        )
    say(f"{name}: no services left")
