"""``ha-cluster``: create and drive a local cluster of ``ha-node`` processes.

    ha-cluster init DIR --nodes 3         membership, CURVE keys, empty config, store
        [--store dir|etcd] [--endpoints H:P,...] [--netns]
    ha-cluster up DIR [NODE...]           start node processes (all by default)
    ha-cluster down DIR                   orderly shutdown of every node (and local etcd)
    ha-cluster stop DIR NODE [--kind K]   orderly stop of one node (shutdown|reboot|restart)
    ha-cluster kill DIR NODE [--with-etcd]  SIGKILL of the node's whole process tree
    ha-cluster partition|heal DIR NODE    cut a node (and its etcd member) off / reconnect
    ha-cluster etcd-kill|etcd-start DIR NODE...   only the nodes' etcd members
    ha-cluster export DIR FILE / import DIR FILE  every record, between dir and etcd clusters
    ha-cluster status DIR                 which node processes run
    ha-cluster destroy DIR                stop everything, remove namespaces

Stores: ``--store dir`` (default) keeps the records in ``DIR/store`` (one
host). ``--store etcd --endpoints h:p,...`` uses an etcd the operator runs;
``--store etcd --netns`` runs one etcd member per node inside the node's
network namespace (peers and clients on the node's namespace address),
started by ``init``/``up`` and stopped by ``down``/``destroy``: data in
``DIR/etcd/<node>.etcd``, logs in ``DIR/logs/<node>.etcd.log``, pid files in
``DIR/run/<node>/etcd.pid``. A partition then cuts a node and its etcd
member off together.

Exit codes: 0 ok, 1 operation failed, 2 bad input.
"""

# size: every ha-cluster subcommand plus the local etcd members that 'init --store etcd --netns' runs; not
#   split yet (the etcd helpers could be a module of their own)

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

import click

from admin.cluster import DEFAULT_ETCD_TIMEOUT, SHUTDOWN_FILE, ClusterConfig, EtcdMember, LocalEtcd
from admin.errors import ExitCode
from admin.timing import LeaseTiming
from bus.keys import generate
from cli import netns as netns_mod
from cli.api_client import generate_client_key
from fence.kill import NodeKiller
from fence.procfs import pid_alive, read_pid_file
from ha.errors import HaError
from store.base import Store, check_name
from store.records import DATACENTER_CFG, RESOURCES_CFG, read_lrm_status

ETCD_BIN = "etcd"
EXPORT_FORMAT = "pyha-records"


def fail(msg: str, code: int = ExitCode.FAILED) -> None:
    click.echo(f"ha-cluster: {msg}", err=True)
    sys.exit(code)


def open_store(c: ClusterConfig) -> Store:
    return c.open_store()


def load(directory: str) -> ClusterConfig:
    try:
        return ClusterConfig.load(directory)
    except HaError as e:
        fail(str(e), ExitCode.USAGE)
        raise AssertionError from None


def node_pid(c: ClusterConfig, node: str) -> int | None:
    return read_pid_file(c.run_dir(node) / "ha-node.pid")


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


def check_nodes(c: ClusterConfig, nodes: Iterable[str]) -> list[str]:
    out = list(nodes)
    for n in out:
        if n not in c.nodes:
            fail(f"no such node '{n}'", ExitCode.USAGE)
    return out


# -- the local etcd members (init --store etcd --netns) ------------------------------------------


def local_etcd(c: ClusterConfig) -> LocalEtcd:
    if c.etcd is None:
        fail("this cluster runs no etcd of its own (see 'init --store etcd --netns')", ExitCode.USAGE)
        raise AssertionError
    return c.etcd


def etcd_command(c: ClusterConfig, node: str) -> list[str]:
    e = local_etcd(c)
    m = e.members[node]
    data = c.etcd_data_dir(node)
    state = "existing" if (data / "member").exists() else "new"
    cmd = [
        ETCD_BIN,
        "--name", node,
        "--data-dir", str(data),
        "--listen-client-urls", m.client_url,
        "--advertise-client-urls", m.client_url,
        "--listen-peer-urls", m.peer_url,
        "--initial-advertise-peer-urls", m.peer_url,
        "--initial-cluster", e.initial_cluster,
        "--initial-cluster-token", e.token,
        "--initial-cluster-state", state,
        "--heartbeat-interval", str(e.heartbeat_ms),
        "--election-timeout", str(e.election_ms),
        # a member cut off and healed must not depose a working leader (default from 3.5 on)
        "--pre-vote=true",
        # every lease renewal is a new revision; pyha never reads old ones
        "--auto-compaction-mode", "revision",
        "--auto-compaction-retention", "10000",
        "--logger", "zap",
        "--log-level", "warn",
    ]  # fmt: skip
    ns = c.netns.get(node)
    return ["ip", "netns", "exec", ns, *cmd] if ns else cmd


def etcd_pid(c: ClusterConfig, node: str) -> int | None:
    """The pid of NODE's etcd member if it runs (checked against its command line)."""
    pid = read_pid_file(c.etcd_pid_file(node))
    if pid is None:
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    # a recycled pid is not ours: the member's command line names its data dir
    return pid if str(c.etcd_data_dir(node)).encode() in cmdline else None


def start_etcd(c: ClusterConfig, nodes: Iterable[str]) -> list[str]:
    """Start the members of NODES that do not run (detached: they outlive this command)."""
    started = []
    for n in nodes:
        if etcd_pid(c, n) is not None:
            continue
        c.etcd_data_dir(n).parent.mkdir(parents=True, exist_ok=True)
        c.etcd_log(n).parent.mkdir(parents=True, exist_ok=True)
        c.run_dir(n).mkdir(parents=True, exist_ok=True)
        with open(c.etcd_log(n), "ab") as log:
            proc = subprocess.Popen(
                etcd_command(c, n),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=c.root,
            )
        c.etcd_pid_file(n).write_text(f"{proc.pid}\n")
        started.append(n)
    return started


def _member_status(m: EtcdMember, timeout: float = 0.5) -> dict[str, object] | None:
    conn = http.client.HTTPConnection(m.host, m.client_port, timeout=timeout)
    try:
        conn.request("POST", "/v3/maintenance/status", body=b"{}")
        resp = conn.getresponse()
        body = resp.read()
        data = json.loads(body) if resp.status == 200 else None
        return data if isinstance(data, dict) else None
    except (OSError, http.client.HTTPException, ValueError):
        return None
    finally:
        conn.close()


def etcd_leader(c: ClusterConfig) -> str | None:
    """The node whose member the running members name as leader, if they agree."""
    e = local_etcd(c)
    ids: dict[str, str] = {}
    leaders: set[str] = set()
    for n, m in e.members.items():
        if etcd_pid(c, n) is None:
            continue
        st = _member_status(m)
        if st is None:
            continue
        header = st.get("header")
        if isinstance(header, dict):
            ids[str(header.get("member_id"))] = n
        leaders.add(str(st.get("leader", "0")))
    if len(leaders) != 1:
        return None
    return ids.get(leaders.pop())


def etcd_log_tail(c: ClusterConfig, node: str, lines: int = 8) -> str:
    try:
        return "\n".join(c.etcd_log(node).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_etcd_serving(c: ClusterConfig, nodes: Iterable[str], timeout: float) -> list[str]:
    """Wait until each member of NODES answers; the ones that did not (bounded)."""
    e = local_etcd(c)
    todo = list(nodes)
    deadline = time.monotonic() + timeout
    while todo and time.monotonic() < deadline:
        todo = [n for n in todo if etcd_pid(c, n) is not None and _member_status(e.members[n]) is None]
        if todo:
            time.sleep(0.05)
    return todo


def wait_store(c: ClusterConfig, timeout: float) -> str | None:
    """Wait until the cluster's store answers a read; None, or the last error (bounded)."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    store = open_store(c)
    try:
        while True:
            try:
                store.read(DATACENTER_CFG)
                return None
            except HaError as e:
                last = str(e)
            if c.etcd is not None:
                dead = [n for n in c.etcd.members if etcd_pid(c, n) is None]
                if len(dead) * 2 >= len(c.etcd.members):
                    return f"etcd members not running: {', '.join(dead)}"
            if time.monotonic() >= deadline:
                return last
            time.sleep(0.1)
    finally:
        store.close()


def stop_etcd(c: ClusterConfig, nodes: Iterable[str] | None = None, *, graceful: bool = True) -> None:
    """Stop members (all by default): followers first, the leader last; SIGKILL what is left."""
    if c.etcd is None:
        return
    todo = [n for n in (nodes if nodes is not None else sorted(c.etcd.members)) if etcd_pid(c, n)]
    if graceful and len(todo) > 1:
        lead = etcd_leader(c)
        todo = [n for n in todo if n != lead] + [n for n in todo if n == lead]
    for i, n in enumerate(todo):
        pid = etcd_pid(c, n)
        if pid is None:
            continue
        # a leader stopped last may wait to hand over to peers that just left: short grace
        grace = (1.0 if i == len(todo) - 1 else 5.0) if graceful else 0.0
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM if graceful else signal.SIGKILL)
        if wait_gone([pid], grace):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            wait_gone([pid], 5)
    for n in todo:
        c.etcd_pid_file(n).unlink(missing_ok=True)


# -- commands --------------------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Create and drive a local HA cluster of ha-node processes."""


def _store_setting(
    store_kind: str, endpoints: str | None, netns: bool, name: str, timeout: float
) -> tuple[str, bool]:
    """(store setting for cluster.json, run our own etcd members?)"""
    if store_kind == "dir":
        if endpoints:
            fail("--endpoints needs --store etcd", ExitCode.USAGE)
        return "dir", False
    if endpoints:
        url = f"etcd://{endpoints.strip()}/{name}?timeout={timeout:g}"
        try:
            from store.etcdstore import parse_url  # noqa: PLC0415

            parse_url(url)
        except ValueError as e:
            fail(str(e), ExitCode.USAGE)
        return url, False
    if not netns:
        fail(
            "--store etcd needs --endpoints H:P,... (an etcd you run) or --netns"
            " (one etcd member per node, run by ha-cluster)",
            ExitCode.USAGE,
        )
    return "", True


@main.command()
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--nodes", "count", type=click.IntRange(1, 32), default=3, show_default=True)
@click.option("--base-port", type=click.IntRange(1024, 65000), help="Bus ports base (default: free ports).")
@click.option("--no-curve", is_flag=True, help="Disable CURVE authentication on the bus (tests only).")
@click.option("--name", default="pyha", show_default=True, help="Cluster id (also the etcd key prefix).")
@click.option("--timing", "timing_kv", multiple=True, help="Override a timing setting, e.g. lease_ttl=6.")
@click.option("--no-cgroups", is_flag=True, help="Use process groups only for services.")
@click.option(
    "--watchdog",
    "watchdog",
    type=click.Choice(["userspace", "device", "auto"]),
    default="userspace",
    show_default=True,
    help="Watchdog driver: userspace (ha-watchdog kills the node's processes), device (also arm "
    "/dev/watchdog; the nodes must be on separate hosts: one device resets the whole host) or auto "
    "(device where it exists).",
)
@click.option("--force", is_flag=True, help="Overwrite an existing cluster.json.")
@click.option("--netns", is_flag=True, help="Each node in its own network namespace (root; partition tests).")
@click.option(
    "--store", "store_kind", type=click.Choice(["dir", "etcd"]), default="dir", show_default=True,
    help="Where the records and leases live.",
)  # fmt: skip
@click.option(
    "--endpoints", help="etcd client endpoints H:P,... (with --store etcd; else --netns runs etcd)."
)
@click.option(
    "--store-timeout", type=click.FloatRange(min=0.05), default=DEFAULT_ETCD_TIMEOUT, show_default=True,
    help="Seconds every etcd call of a node may take.",
)  # fmt: skip
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
    store_kind: str,
    endpoints: str | None,
    store_timeout: float,
    watchdog: str,
) -> None:
    """Create a cluster in DIRECTORY."""
    root = Path(directory).resolve()
    if (root / "cluster.json").exists() and not force:
        fail(f"{root}/cluster.json exists (use --force to overwrite)", ExitCode.USAGE)
    overrides: dict[str, str] = {}
    for kv in timing_kv:
        key, eq, value = kv.partition("=")
        if not eq:
            fail(f"--timing expects KEY=SECONDS, got '{kv}'", ExitCode.USAGE)
        overrides[key.strip()] = value.strip()
    try:
        timing = LeaseTiming.from_mapping(overrides)
    except HaError as e:
        fail(str(e), ExitCode.USAGE)
        raise AssertionError from None
    store, own_etcd = _store_setting(store_kind, endpoints, netns, name, store_timeout)
    names = [f"node{i}" for i in range(1, count + 1)]
    ports = [base_port + i for i in range(count)] if base_port else free_ports(count)
    endpoints_ = {n: f"tcp://127.0.0.1:{port}" for n, port in zip(names, ports, strict=True)}
    if own_etcd and (root / "etcd").exists():
        if not force:
            fail(f"{root}/etcd holds etcd data (use --force to start afresh)", ExitCode.USAGE)
        old = _load_quietly(root)
        if old is not None:
            stop_etcd(old, graceful=False)
        import shutil  # noqa: PLC0415

        shutil.rmtree(root / "etcd")
    network = None
    if netns:
        network = netns_mod.plan(str(root), names)
        try:
            netns_mod.create(network)
        except netns_mod.NetnsError as e:
            fail(f"cannot create network namespaces: {e}")
        endpoints_ = {n: f"tcp://{network.nodes[n].address}:7100" for n in names}
    etcd: LocalEtcd | None = None
    if own_etcd:
        assert network is not None
        members = {n: EtcdMember(n, network.nodes[n].address) for n in names}
        etcd = LocalEtcd(f"pyha-{uuid.uuid4().hex[:12]}", members)
        store = f"etcd://{','.join(m.endpoint for m in members.values())}/{name}?timeout={store_timeout:g}"
    c = ClusterConfig(
        root=root,
        cluster=name,
        nodes=endpoints_,
        curve=not no_curve,
        timing=timing,
        cgroups=not no_cgroups,
        netns={n: v.ns for n, v in network.nodes.items()} if network else {},
        network=network.to_dict() if network else None,
        store=store,
        etcd=etcd,
        watchdog=watchdog,
    )
    probs = c.store_problems()
    if probs:
        if network is not None:
            netns_mod.destroy(network)
        fail("; ".join(probs), ExitCode.USAGE)
    for d in (c.keys_dir, c.state_dir, root / "logs", root / "run"):
        d.mkdir(parents=True, exist_ok=True)
    if c.store_kind == "dir":
        c.store_dir.mkdir(parents=True, exist_ok=True)
    if c.curve:
        for n in names:
            generate(c.keys_dir, n, force=force)
    c.save()
    try:
        if c.etcd is not None:
            start_etcd(c, names)
            problem = wait_store(c, 30)
            if problem is not None:
                raise HaError(f"etcd did not come up: {problem}")
        store_ = open_store(c)
        try:
            if store_.read(RESOURCES_CFG) is None:
                store_.write(RESOURCES_CFG, b"")
            if store_.read(DATACENTER_CFG) is None:
                store_.write(DATACENTER_CFG, b"ha: shutdown_policy=conditional\n")
        finally:
            store_.close()
    except HaError as e:
        logs = ""
        if c.etcd is not None:
            logs = "".join(f"\n--- {n}:\n{etcd_log_tail(c, n)}" for n in names)
            stop_etcd(c, graceful=False)
        if network is not None:
            netns_mod.destroy(network)
        fail(f"cannot initialise the store {c.store_url}: {e}{logs}")
    if c.curve:
        # one client key per role, for ha-manager and other tools (docs/API.md)
        for role in ("admin", "readonly"):
            generate_client_key(c, role, role)
    click.echo(f"cluster '{name}' with {count} nodes in {root} (store {c.store_url})")
    for n, endpoint in sorted(c.nodes.items()):
        extra = f"  etcd {c.etcd.members[n].endpoint}" if c.etcd is not None else ""
        click.echo(f"  {n}  {endpoint}{extra}")


def _load_quietly(root: Path) -> ClusterConfig | None:
    try:
        return ClusterConfig.load(root)
    except HaError:
        return None


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
@click.option(
    "--hosts",
    type=click.IntRange(1, 32),
    help="No cluster in DIRECTORY yet: create one of this many simulated hosts first (a network "
    "namespace per node) and start it.",
)
@click.option(
    "--store",
    "store_kind",
    type=click.Choice(["dir", "etcd"]),
    default="dir",
    show_default=True,
    help="With --hosts: the store of the new cluster (etcd: one etcd member per host).",
)
@click.pass_context
def up(
    ctx: click.Context, directory: str, nodes: tuple[str, ...], hosts: int | None, store_kind: str
) -> None:
    """Start node processes (all nodes by default); first their etcd members, if local."""
    if hosts is not None:
        if (Path(directory) / "cluster.json").exists():
            fail(f"{directory} already holds a cluster: start it with 'up' (no --hosts)", ExitCode.USAGE)
        ctx.invoke(init, directory=directory, count=hosts, netns=True, store_kind=store_kind)
    c = load(directory)
    todo = check_nodes(c, nodes) or sorted(c.nodes)
    if c.etcd is not None:
        start_etcd(c, todo)
        problem = wait_store(c, 30)
        if problem is not None:
            fail(f"the store {c.store_url} does not answer: {problem} (see {c.root}/logs/*.etcd.log)")
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
        pids = [p for p in pids if pid_alive(p)]
        if not pids:
            return []
        time.sleep(0.05)
    return [p for p in pids if pid_alive(p)]


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
    check_nodes(c, [node])
    pid = request_stop(c, node, kind)
    if pid is None:
        fail(f"{node} is not running")
        return
    if wait_gone([pid], timeout):
        fail(f"{node} did not stop within {timeout:g}s")
    click.echo(f"{node} stopped ({kind})")


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


@main.command()
@click.argument("directory", type=click.Path(file_okay=False))
@click.argument("node")
@click.option("--with-etcd", is_flag=True, help="Also SIGKILL the node's etcd member (a host crash).")
def kill(directory: str, node: str, with_etcd: bool) -> None:
    """SIGKILL NODE's whole process tree (a node dying without warning)."""
    c = load(directory)
    check_nodes(c, [node])
    killed = kill_tree(c, node)
    if with_etcd:
        stop_etcd(c, [node], graceful=False)
    wait_gone(killed, 5)
    extra = " and its etcd member" if with_etcd and c.etcd is not None else ""
    click.echo(f"{node} killed ({len(killed)} daemon process(es), its services{extra})")


@main.command()
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--timeout", type=float, default=60.0, show_default=True)
def down(directory: str, timeout: float) -> None:
    """Orderly shutdown of every node, then of the local etcd; whatever is left after TIMEOUT is killed."""
    c = load(directory)
    pids = [p for n in sorted(c.nodes) if (p := request_stop(c, n, "shutdown")) is not None]
    left = wait_gone(pids, timeout)
    for n in sorted(c.nodes):
        kill_tree(c, n)
    stop_etcd(c)
    remove_empty_cgroups(c)
    if left:
        fail(f"{len(left)} node(s) had to be killed after {timeout:g}s")
    click.echo("down")


def network_of(c: ClusterConfig) -> netns_mod.Network:
    if c.network is None:
        fail("this cluster has no network namespaces (create it with 'init --netns')", ExitCode.USAGE)
        raise AssertionError
    return netns_mod.Network.from_dict(c.network)


@main.command()
@click.argument("directory", type=click.Path(file_okay=False))
@click.argument("node")
def partition(directory: str, node: str) -> None:
    """Cut NODE off the network (its veth goes down; its etcd member with it)."""
    c = load(directory)
    check_nodes(c, [node])
    netns_mod.partition(network_of(c), node)
    click.echo(f"{node} partitioned" + (" with its etcd member" if c.etcd is not None else ""))


@main.command()
@click.argument("directory", type=click.Path(file_okay=False))
@click.argument("node")
def heal(directory: str, node: str) -> None:
    """Reconnect NODE."""
    c = load(directory)
    check_nodes(c, [node])
    netns_mod.heal(network_of(c), node)
    click.echo(f"{node} healed")


@main.command("etcd-kill")
@click.argument("directory", type=click.Path(file_okay=False))
@click.argument("nodes", nargs=-1, required=True)
def etcd_kill(directory: str, nodes: tuple[str, ...]) -> None:
    """SIGKILL only the etcd members of NODES (the nodes keep running)."""
    c = load(directory)
    local_etcd(c)
    todo = check_nodes(c, nodes)
    stop_etcd(c, todo, graceful=False)
    click.echo(f"etcd member(s) of {' '.join(todo)} killed")


@main.command("etcd-start")
@click.argument("directory", type=click.Path(file_okay=False))
@click.argument("nodes", nargs=-1, required=True)
@click.option("--timeout", type=float, default=20.0, show_default=True)
def etcd_start(directory: str, nodes: tuple[str, ...], timeout: float) -> None:
    """Start the etcd members of NODES again (same data) and wait until they serve.

    A member serves only once a majority of members runs: start the ones that
    make a majority together.
    """
    c = load(directory)
    local_etcd(c)
    todo = check_nodes(c, nodes)
    start_etcd(c, todo)
    late = wait_etcd_serving(c, todo, timeout)
    if late:
        tails = "".join(f"\n--- {n}:\n{etcd_log_tail(c, n)}" for n in late)
        fail(f"etcd member(s) of {' '.join(late)} not serving after {timeout:g}s{tails}")
    click.echo(f"etcd member(s) of {' '.join(todo)} running")


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


@main.command()
@click.argument("directory", type=click.Path(file_okay=False))
def destroy(directory: str) -> None:
    """Stop everything (nodes, local etcd) and remove the cluster's network namespaces (the files stay)."""
    c = load(directory)
    for n in sorted(c.nodes):
        pid = request_stop(c, n, "shutdown")
        if pid is not None:
            wait_gone([pid], 20)
        kill_tree(c, n)
    stop_etcd(c)
    if c.network is not None:
        net = netns_mod.Network.from_dict(c.network)
        # anything still running inside our namespaces is ours: it goes with them
        leftovers = netns_mod.kill_all(net)
        wait_gone(leftovers, 5)
        netns_mod.destroy(net)
    remove_empty_cgroups(c)
    click.echo("destroyed")


@main.command()
@click.argument("directory", type=click.Path(file_okay=False))
def status(directory: str) -> None:
    """Which node processes (and local etcd members) are running."""
    c = load(directory)
    lead = etcd_leader(c) if c.etcd is not None else None
    for n in sorted(c.nodes):
        pid = node_pid(c, n)
        wd = read_pid_file(c.run_dir(n) / "ha-watchdog.pid")
        line = f"{n}: {'running pid ' + str(pid) if pid else 'stopped'}{f', watchdog pid {wd}' if wd else ''}"
        if c.etcd is not None:
            epid = etcd_pid(c, n)
            state = f"etcd pid {epid}" + (" (leader)" if n == lead else "") if epid else "etcd stopped"
            line += f", {state}"
        click.echo(line)
    click.echo(f"store: {c.store_url}")


# -- export / import ----------------------------------------------------------------------------------


def running_nodes(c: ClusterConfig) -> list[str]:
    return [n for n in sorted(c.nodes) if node_pid(c, n) is not None]


@main.command("export")
@click.argument("directory", type=click.Path(file_okay=False))
@click.argument("file", type=click.Path(dir_okay=False))
def export_cmd(directory: str, file: str) -> None:
    """Write every record of the cluster's store (not its leases) to FILE (JSON).

    Configs, manager_status, lrm_status, locations and crm_commands, byte for
    byte. Stop the cluster first for an exact snapshot: records of a running
    cluster are read one after the other.
    """
    c = load(directory)
    if running_nodes(c):
        click.echo("ha-cluster: warning: nodes are running, the export is not one snapshot", err=True)
    store = open_store(c)
    try:
        records = []
        for name in store.list(""):
            rec = store.read(name)
            if rec is not None:
                records.append({"name": name, "data": base64.b64encode(rec.data).decode("ascii")})
    except HaError as e:
        fail(f"cannot read the store {c.store_url}: {e}")
        raise AssertionError from None
    finally:
        store.close()
    doc = {"format": EXPORT_FORMAT, "version": 1, "cluster": c.cluster, "store": c.store_kind,
           "records": records}  # fmt: skip
    path = Path(file)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)
    click.echo(f"exported {len(records)} records from {c.store_url} to {path}")


def read_export(file: str) -> dict[str, bytes]:
    try:
        doc = json.loads(Path(file).read_text())
    except (OSError, ValueError) as e:
        fail(f"cannot read {file}: {e}", ExitCode.USAGE)
        raise AssertionError from None
    if not isinstance(doc, dict) or doc.get("format") != EXPORT_FORMAT or doc.get("version") != 1:
        fail(f"{file} is not a pyha export (format {EXPORT_FORMAT}, version 1)", ExitCode.USAGE)
    out: dict[str, bytes] = {}
    for r in doc.get("records") or []:
        try:
            name = check_name(str(r["name"]))
            out[name] = base64.b64decode(str(r["data"]), validate=True)
        except (KeyError, TypeError, ValueError) as e:
            fail(f"{file}: bad record entry {r!r}: {e}", ExitCode.USAGE)
    return out


@main.command("import")
@click.argument("directory", type=click.Path(file_okay=False))
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@click.option("--force", is_flag=True, help="Delete records of the cluster that FILE does not have.")
def import_cmd(directory: str, file: str, force: bool) -> None:
    """Replace the records of the (stopped) cluster with those in FILE (from 'export').

    Every record of FILE is written as it is. Records the cluster has and FILE
    has not make it refuse, unless --force (they are deleted). Leases are not
    part of an export: the nodes take theirs when they start.
    """
    c = load(directory)
    records = read_export(file)
    if running_nodes(c):
        fail(f"stop the cluster first (running: {', '.join(running_nodes(c))})")
    store = open_store(c)
    try:
        extra = [n for n in store.list("") if n not in records]
        if extra and not force:
            fail(
                f"the cluster has records that {file} does not: {', '.join(extra[:5])}"
                + (" ..." if len(extra) > 5 else "")
                + " (use --force to delete them)"
            )
        for name in sorted(records):
            store.write(name, records[name])
        for name in extra:
            store.delete(name)
        # read back: an import must not lose anything
        bad = [n for n in sorted(records) if (r := store.read(n)) is None or r.data != records[n]]
        if bad:
            fail(f"records differ after the import: {', '.join(bad[:5])}")
    except HaError as e:
        fail(f"cannot write the store {c.store_url}: {e}")
    finally:
        store.close()
    click.echo(
        f"imported {len(records)} records into {c.store_url}" + (f", deleted {len(extra)}" if extra else "")
    )


if __name__ == "__main__":
    main()
