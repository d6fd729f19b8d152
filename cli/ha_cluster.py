"""``ha-cluster``: create and drive a local cluster of ``ha-node`` processes on loopback.

    ha-cluster init DIR --nodes 3         membership, CURVE keys, empty config, store
    ha-cluster up DIR [NODE...]           start node processes (all by default)
    ha-cluster down DIR                   orderly shutdown of every node
    ha-cluster stop DIR NODE [--kind K]   orderly stop of one node (shutdown|reboot|restart)
    ha-cluster kill DIR NODE              SIGKILL of the node's whole process tree
    ha-cluster status DIR                 which node processes run

Exit codes: 0 ok, 1 operation failed, 2 bad input.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import click

from actors.cluster import ClusterConfig
from actors.node import SHUTDOWN_FILE, _cgroup_root
from bus.keys import generate
from cli import netns as netns_mod
from cli.api_client import generate_client_key
from ha.errors import HaError
from store.dirstore import DirStore
from store.records import DATACENTER_CFG, RESOURCES_CFG, read_lrm_status
from store.timing import Timing

EXIT_FAIL = 1
EXIT_BAD_INPUT = 2


def fail(msg: str, code: int = EXIT_FAIL) -> None:
    click.echo(f"ha-cluster: {msg}", err=True)
    sys.exit(code)


def open_store(c: ClusterConfig) -> DirStore:
    return DirStore(c.store_dir)


def load(directory: str) -> ClusterConfig:
    try:
        return ClusterConfig.load(directory)
    except HaError as e:
        fail(str(e), EXIT_BAD_INPUT)
        raise AssertionError from None


def read_pid(path: Path) -> int | None:
    try:
        pid = int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if alive(pid) else None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def node_pid(c: ClusterConfig, node: str) -> int | None:
    return read_pid(c.run_dir(node) / "ha-node.pid")


def free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Create and drive a local HA cluster of ha-node processes."""


@main.command()
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--nodes", "count", type=click.IntRange(1, 32), default=3, show_default=True)
@click.option("--base-port", type=click.IntRange(1024, 65000), help="Bus ports base (default: free ports).")
@click.option("--no-curve", is_flag=True, help="Disable CURVE authentication on the bus (tests only).")
@click.option("--name", default="pyha", show_default=True, help="Cluster id.")
@click.option("--timing", "timing_kv", multiple=True, help="Override a timing setting, e.g. lease_ttl=6.")
@click.option("--no-cgroups", is_flag=True, help="Use process groups only for services.")
@click.option("--force", is_flag=True, help="Overwrite an existing cluster.json.")
@click.option("--netns", is_flag=True, help="Each node in its own network namespace (root; partition tests).")
def init(
    directory: str,
    count: int,
    base_port: int | None,
    no_curve: bool,
    name: str,
    timing_kv: tuple[str, ...],
    no_cgroups: bool,
    force: bool,
    netns: bool,
) -> None:
    """Create a cluster in DIRECTORY."""
    root = Path(directory).resolve()
    if (root / "cluster.json").exists() and not force:
        fail(f"{root}/cluster.json exists (use --force to overwrite)", EXIT_BAD_INPUT)
    overrides: dict[str, str] = {}
    for kv in timing_kv:
        key, eq, value = kv.partition("=")
        if not eq:
            fail(f"--timing expects KEY=SECONDS, got '{kv}'", EXIT_BAD_INPUT)
        overrides[key.strip()] = value.strip()
    try:
        timing = Timing.from_mapping(overrides)
    except HaError as e:
        fail(str(e), EXIT_BAD_INPUT)
        raise AssertionError from None
    names = [f"node{i}" for i in range(1, count + 1)]
    ports = [base_port + i for i in range(count)] if base_port else free_ports(count)
    endpoints = {n: f"tcp://127.0.0.1:{port}" for n, port in zip(names, ports, strict=True)}
    network = None
    if netns:
        network = netns_mod.plan(str(root), names)
        try:
            netns_mod.create(network)
        except netns_mod.NetnsError as e:
            fail(f"cannot create network namespaces: {e}")
        endpoints = {n: f"tcp://{network.nodes[n].address}:7100" for n in names}
    c = ClusterConfig(
        root=root,
        cluster=name,
        nodes=endpoints,
        curve=not no_curve,
        timing=timing,
        cgroups=not no_cgroups,
        netns={n: v.ns for n, v in network.nodes.items()} if network else {},
        network=network.to_dict() if network else None,
    )
    for d in (c.store_dir, c.keys_dir, c.state_dir, root / "logs", root / "run"):
        d.mkdir(parents=True, exist_ok=True)
    if c.curve:
        for n in names:
            generate(c.keys_dir, n, force=force)
    store = DirStore(c.store_dir)
    try:
        if store.read(RESOURCES_CFG) is None:
            store.write(RESOURCES_CFG, b"")
        if store.read(DATACENTER_CFG) is None:
            store.write(DATACENTER_CFG, b"ha: shutdown_policy=conditional\n")
    finally:
        store.close()
    c.save()
    if c.curve:
        # one client key per role, for ha-manager and other tools (docs/API.md)
        for role in ("admin", "readonly"):
            generate_client_key(c, role, role)
    click.echo(f"cluster '{name}' with {count} nodes in {root}")
    for n, endpoint in sorted(c.nodes.items()):
        click.echo(f"  {n}  {endpoint}")


def start_node(c: ClusterConfig, node: str) -> int:
    if node_pid(c, node) is not None:
        raise click.ClickException(f"{node} is already running")
    c.log_file(node).parent.mkdir(parents=True, exist_ok=True)
    out = open(c.log_file(node).with_suffix(".out"), "ab")  # noqa: SIM115
    cmd = [sys.executable, "-m", "cli.ha_node", "--node", node, "--cluster", str(c.root)]
    netns = c.netns.get(node)
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True, cwd=c.root
    )
    out.close()
    return proc.pid


def wait_started(c: ClusterConfig, node: str, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if node_pid(c, node) is not None and c.watchdog_socket(node).exists():
            return True
        time.sleep(0.05)
    return False


def wait_quorate(c: ClusterConfig, node: str, since: float, timeout: float = 20.0) -> bool:
    store = open_store(c)
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


@main.command()
@click.argument("directory", type=click.Path(file_okay=False))
@click.argument("nodes", nargs=-1)
def up(directory: str, nodes: tuple[str, ...]) -> None:
    """Start node processes (all nodes by default)."""
    c = load(directory)
    todo = list(nodes) or sorted(c.nodes)
    for n in todo:
        if n not in c.nodes:
            fail(f"no such node '{n}'", EXIT_BAD_INPUT)
    t0 = time.time()
    for n in todo:
        if node_pid(c, n) is None:
            start_node(c, n)
    bad = [n for n in todo if not wait_started(c, n)]
    if bad:
        fail(f"did not come up: {', '.join(bad)} (see {c.root}/logs)")
    running = [n for n in c.nodes if node_pid(c, n) is not None]
    if len(running) * 2 > len(c.nodes):
        # usable = quorate: a node's LRM writes its lrm_status only while it is (§1.4)
        late = [n for n in todo if not wait_quorate(c, n, t0)]
        if late:
            fail(f"up, but without quorum after 20 s: {', '.join(late)} (see {c.root}/logs)")
        click.echo(f"up: {' '.join(todo)} (quorate)")
    else:
        click.echo(f"up: {' '.join(todo)} (no quorum yet: {len(running)} of {len(c.nodes)} nodes running)")


def request_stop(c: ClusterConfig, node: str, kind: str) -> int | None:
    pid = node_pid(c, node)
    if pid is None:
        return None
    (c.run_dir(node) / SHUTDOWN_FILE).write_text(kind)
    os.kill(pid, signal.SIGTERM)
    return pid


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = [p for p in pids if alive(p)]
        if not pids:
            return []
        time.sleep(0.05)
    return [p for p in pids if alive(p)]


@main.command()
@click.argument("directory", type=click.Path(file_okay=False))
@click.argument("node")
@click.option(
    "--kind", type=click.Choice(["shutdown", "reboot", "restart"]), default="shutdown", show_default=True
)
@click.option("--timeout", type=float, default=60.0, show_default=True)
def stop(directory: str, node: str, kind: str, timeout: float) -> None:
    """Orderly stop of NODE (the shutdown policy decides what happens to its services)."""
    c = load(directory)
    if node not in c.nodes:
        fail(f"no such node '{node}'", EXIT_BAD_INPUT)
    pid = request_stop(c, node, kind)
    if pid is None:
        fail(f"{node} is not running")
        return
    if wait_gone([pid], timeout):
        fail(f"{node} did not stop within {timeout:g}s")
    click.echo(f"{node} stopped ({kind})")


def kill_tree(c: ClusterConfig, node: str) -> list[int]:
    """SIGKILL everything of NODE: daemon, watchdog, services (cgroup and process groups)."""
    killed: list[int] = []
    for name in ("ha-node.pid", "ha-watchdog.pid"):
        pid = read_pid(c.run_dir(node) / name)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
    cg_root = _cgroup_root()
    if cg_root is not None:
        cg = cg_root / "pyha" / node
        if (cg / "cgroup.kill").exists():
            with contextlib.suppress(OSError):
                (cg / "cgroup.kill").write_text("1")
    for f in (c.state_dir / node).rglob("*.json"):
        with contextlib.suppress(OSError, ValueError, KeyError, ProcessLookupError, TypeError):
            pgid = int(json.loads(f.read_text())["pgid"])
            if pgid > 1:
                os.killpg(pgid, signal.SIGKILL)
    return killed


@main.command()
@click.argument("directory", type=click.Path(file_okay=False))
@click.argument("node")
def kill(directory: str, node: str) -> None:
    """SIGKILL NODE's whole process tree (a node dying without warning)."""
    c = load(directory)
    if node not in c.nodes:
        fail(f"no such node '{node}'", EXIT_BAD_INPUT)
    killed = kill_tree(c, node)
    wait_gone(killed, 5)
    click.echo(f"{node} killed ({len(killed)} daemon process(es) and its services)")


@main.command()
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--timeout", type=float, default=60.0, show_default=True)
def down(directory: str, timeout: float) -> None:
    """Orderly shutdown of every node; whatever is left after TIMEOUT is killed."""
    c = load(directory)
    pids = [p for n in sorted(c.nodes) if (p := request_stop(c, n, "shutdown")) is not None]
    left = wait_gone(pids, timeout)
    for n in sorted(c.nodes):
        kill_tree(c, n)
    if left:
        fail(f"{len(left)} node(s) had to be killed after {timeout:g}s")
    click.echo("down")


def network_of(c: ClusterConfig) -> netns_mod.Network:
    if c.network is None:
        fail("this cluster has no network namespaces (create it with 'init --netns')", EXIT_BAD_INPUT)
        raise AssertionError
    return netns_mod.Network.from_dict(c.network)


@main.command()
@click.argument("directory", type=click.Path(file_okay=False))
@click.argument("node")
def partition(directory: str, node: str) -> None:
    """Cut NODE off the network (its veth goes down)."""
    c = load(directory)
    if node not in c.nodes:
        fail(f"no such node '{node}'", EXIT_BAD_INPUT)
    netns_mod.partition(network_of(c), node)
    click.echo(f"{node} partitioned")


@main.command()
@click.argument("directory", type=click.Path(file_okay=False))
@click.argument("node")
def heal(directory: str, node: str) -> None:
    """Reconnect NODE."""
    c = load(directory)
    if node not in c.nodes:
        fail(f"no such node '{node}'", EXIT_BAD_INPUT)
    netns_mod.heal(network_of(c), node)
    click.echo(f"{node} healed")


@main.command()
@click.argument("directory", type=click.Path(file_okay=False))
def destroy(directory: str) -> None:
    """Stop everything and remove the cluster's network namespaces (the files stay)."""
    c = load(directory)
    for n in sorted(c.nodes):
        pid = request_stop(c, n, "shutdown")
        if pid is not None:
            wait_gone([pid], 20)
        kill_tree(c, n)
    if c.network is not None:
        netns_mod.destroy(netns_mod.Network.from_dict(c.network))
    click.echo("destroyed")


@main.command()
@click.argument("directory", type=click.Path(file_okay=False))
def status(directory: str) -> None:
    """Which node processes are running."""
    c = load(directory)
    for n in sorted(c.nodes):
        pid = node_pid(c, n)
        wd = read_pid(c.run_dir(n) / "ha-watchdog.pid")
        click.echo(
            f"{n}: {'running pid ' + str(pid) if pid else 'stopped'}{f', watchdog pid {wd}' if wd else ''}"
        )


if __name__ == "__main__":
    main()
