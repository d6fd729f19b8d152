"""``ha-cluster init``: plan a cluster, then create it step by step, undoing the steps on failure.

:func:`plan` checks the input and decides everything that needs no side effect
(node names, bus endpoints, timing, the store setting). :func:`create` then
runs the steps: old etcd data removed (``--force``), network namespaces,
``cluster.json``, node keys, the CA and certificates of the local etcd members
(``DIR/etcd-tls``, docs/ETCD.md "TLS"), the local etcd members, the store's first
records, client keys. A failing step undoes what the steps before it made
that would otherwise stay behind (namespaces, running etcd members). Refusals
are :class:`admin.errors.AdminError` with the exit code to use.
"""

from __future__ import annotations

import functools
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from admin.cluster import CLUSTER_FILE, ETCD_TLS_DIR, ClusterConfig, EtcdTlsPaths, LocalEtcd
from admin.errors import AdminError, ExitCode
from admin.ports import free_ports
from admin.private import make_private
from admin.timing import LeaseTiming
from bus.keys import generate
from cli import netns as netns_mod
from cli.api_client import generate_client_key
from cli.cluster_etcd import dead_majority, etcd_log_tail, start_etcd, stop_etcd
from ha.errors import HaError
from store.etcd_launch import EtcdMember
from store.etcd_tls import CLUSTER_CLIENT, TlsError, TlsFiles, client_cert_name, make_cluster_pki
from store.etcd_url import parse_url, with_options
from store.records import DATACENTER_CFG, RESOURCES_CFG

# the bus port of every node when each has its own network namespace (and address)
NETNS_BUS_PORT = 7100
# the Prometheus metrics port of every node when each has its own address (docs/OPERATIONS.md)
NETNS_METRICS_PORT = 9464
# the datacenter.cfg of a new cluster
INITIAL_DATACENTER_CFG = b"ha: shutdown_policy=conditional\n"
STORE_START_TIMEOUT = 30.0


@dataclass(frozen=True)
class InitPlan:
    """What ``init`` will create; decided before anything is touched."""

    root: Path
    name: str
    nodes: list[str]
    endpoints: dict[str, str]  # node -> bus endpoint on the host (replaced when netns)
    metrics_ports: dict[str, int]  # node -> metrics port on the host (replaced when netns)
    timing: LeaseTiming
    store: str  # "dir", an etcd:// URL, or "" until the local etcd members are known
    own_etcd: bool  # ha-cluster runs the etcd members itself (--store etcd --netns)
    etcd_members: int  # how many: on the first nodes (default_etcd_members), when own_etcd
    store_timeout: float
    # (ca, cert, key) for an etcd the operator runs (absolute paths), else None
    etcd_tls: tuple[str, str, str] | None
    insecure: bool  # plain http to etcd (own members without TLS, or an external http etcd)
    netns: bool
    curve: bool
    cgroups: bool
    watchdog: str
    force: bool


def default_etcd_members(nodes: int) -> int:
    """How many etcd members ha-cluster runs for NODES nodes: every node up to 3, then 3.

    etcd's own advice is 3 or 5 members (7 at most); each member more is one more copy
    of every write and one more vote in each of them, and an even count tolerates no
    more failures than the odd one below it. The members ha-cluster runs share one host
    with the nodes (namespaces), where each member more is CPU the nodes do not get. The
    other nodes are etcd's clients; ``--etcd-members 5`` where the host has room.
    """
    return min(nodes, 3)


def parse_timing(pairs: tuple[str, ...]) -> LeaseTiming:
    """``KEY=SECONDS`` overrides of the lease timing (checked by its safety rule)."""
    overrides: dict[str, str] = {}
    for kv in pairs:
        key, eq, value = kv.partition("=")
        if not eq:
            raise AdminError(f"--timing expects KEY=SECONDS, got '{kv}'", ExitCode.USAGE)
        overrides[key.strip()] = value.strip()
    try:
        return LeaseTiming.from_mapping(overrides)
    except HaError as e:
        raise AdminError(str(e), ExitCode.USAGE) from None


def etcd_tls_files(
    ca: str | None, cert: str | None, key: str | None, insecure: bool
) -> tuple[str, str, str] | None:
    """The given client TLS files as absolute paths (all three or none; none with --insecure)."""
    given = [x for x in (ca, cert, key) if x]
    if insecure and given:
        raise AdminError(
            "--insecure (plain http) and --etcd-ca/--etcd-cert/--etcd-key contradict", ExitCode.USAGE
        )
    if not given:
        return None
    if len(given) != 3:
        raise AdminError("--etcd-ca, --etcd-cert and --etcd-key go together", ExitCode.USAGE)
    paths = tuple(str(Path(x).resolve()) for x in (ca, cert, key) if x)
    missing = [x for x in paths if not Path(x).is_file()]
    if missing:
        raise AdminError(f"etcd TLS file(s) not found: {', '.join(missing)}", ExitCode.USAGE)
    return paths[0], paths[1], paths[2]


def store_setting(
    store_kind: str,
    endpoints: str | None,
    netns: bool,
    name: str,
    timeout: float,
    tls: tuple[str, str, str] | None = None,
    insecure: bool = False,
) -> tuple[str, bool]:
    """(store setting for cluster.json, run our own etcd members?)"""
    if store_kind == "dir":
        if endpoints or tls or insecure:
            raise AdminError(
                "--endpoints, --etcd-ca/cert/key and --insecure need --store etcd", ExitCode.USAGE
            )
        return "dir", False
    if endpoints:
        url = f"etcd://{endpoints.strip()}/{name}?timeout={timeout:g}"
        if insecure:
            url = with_options(url, insecure="1")
        try:
            parse_url(with_options(url, ca=tls[0], cert=tls[1], key=tls[2]) if tls else url)
        except ValueError as e:
            hint = "" if tls or insecure else " (an etcd you run: give --etcd-ca, --etcd-cert, --etcd-key)"
            raise AdminError(f"{e}{hint}", ExitCode.USAGE) from None
        return url, False
    if tls:
        raise AdminError(
            "--etcd-ca/cert/key name an etcd you run (--endpoints); with --netns ha-cluster makes its own",
            ExitCode.USAGE,
        )
    if not netns:
        raise AdminError(
            "--store etcd needs --endpoints H:P,... (an etcd you run) or --netns"
            " (etcd members run by ha-cluster in the nodes' namespaces)",
            ExitCode.USAGE,
        )
    return "", True


def plan(
    directory: str,
    *,
    count: int,
    base_port: int | None,
    curve: bool,
    name: str,
    timing_kv: tuple[str, ...],
    cgroups: bool,
    watchdog: str,
    force: bool,
    netns: bool,
    store_kind: str,
    endpoints: str | None,
    store_timeout: float,
    etcd_ca: str | None = None,
    etcd_cert: str | None = None,
    etcd_key: str | None = None,
    insecure: bool = False,
    etcd_members: int | None = None,
) -> InitPlan:
    root = Path(directory).resolve()
    if (root / CLUSTER_FILE).exists() and not force:
        raise AdminError(f"{root}/{CLUSTER_FILE} exists (use --force to overwrite)", ExitCode.USAGE)
    timing = parse_timing(timing_kv)
    tls = etcd_tls_files(etcd_ca, etcd_cert, etcd_key, insecure)
    store, own_etcd = store_setting(store_kind, endpoints, netns, name, store_timeout, tls, insecure)
    if own_etcd and (root / "etcd").exists() and not force:
        raise AdminError(f"{root}/etcd holds etcd data (use --force to start afresh)", ExitCode.USAGE)
    if etcd_members is not None and not own_etcd:
        raise AdminError(
            "--etcd-members needs --store etcd --netns (members ha-cluster runs)", ExitCode.USAGE
        )
    members = default_etcd_members(count) if etcd_members is None else etcd_members
    if not 1 <= members <= count:
        raise AdminError(f"--etcd-members must be 1 to {count} (the nodes), got {members}", ExitCode.USAGE)
    names = [f"node{i}" for i in range(1, count + 1)]
    if base_port:
        ports = [base_port + i for i in range(count)]
        metrics = [p for p in free_ports(2 * count) if p not in ports][:count]
    else:
        both = free_ports(2 * count)  # one call: no port handed out twice
        ports, metrics = both[:count], both[count:]
    return InitPlan(
        root=root,
        name=name,
        nodes=names,
        endpoints={n: f"tcp://127.0.0.1:{port}" for n, port in zip(names, ports, strict=True)},
        metrics_ports=dict(zip(names, metrics, strict=True)),
        timing=timing,
        store=store,
        own_etcd=own_etcd,
        etcd_members=members,
        store_timeout=store_timeout,
        etcd_tls=tls,
        insecure=insecure,
        netns=netns,
        curve=curve,
        cgroups=cgroups,
        watchdog=watchdog,
        force=force,
    )


def wait_store(c: ClusterConfig, timeout: float) -> str | None:
    """Wait until the cluster's store answers a read; None, or the last error (bounded)."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    store = c.open_store()
    try:
        while True:
            try:
                store.read(DATACENTER_CFG)
                return None
            except HaError as e:
                last = str(e)
            dead = dead_majority(c)
            if dead is not None:
                return f"etcd members not running: {', '.join(dead)}"
            if time.monotonic() >= deadline:
                return last
            time.sleep(0.1)
    finally:
        store.close()


def seed_store(c: ClusterConfig) -> None:
    """The records every cluster has: an empty resources.cfg and a datacenter.cfg (kept if present)."""
    store = c.open_store()
    try:
        if store.read(RESOURCES_CFG) is None:
            store.write(RESOURCES_CFG, b"")
        if store.read(DATACENTER_CFG) is None:
            store.write(DATACENTER_CFG, INITIAL_DATACENTER_CFG)
    finally:
        store.close()


def _remove_old_etcd(p: InitPlan) -> None:
    """``--force`` over a cluster that ran its own etcd: stop its members, drop their data."""
    try:
        old: ClusterConfig | None = ClusterConfig.load(p.root)
    except HaError:
        old = None
    if old is not None:
        stop_etcd(old, graceful=False)
    shutil.rmtree(p.root / "etcd")


def _config(p: InitPlan, network: netns_mod.Network | None) -> ClusterConfig:
    endpoints, store, etcd, metrics = p.endpoints, p.store, None, p.metrics_ports
    tls = EtcdTlsPaths(*p.etcd_tls) if p.etcd_tls else None
    if network is not None:
        endpoints = {n: f"tcp://{network.nodes[n].address}:{NETNS_BUS_PORT}" for n in p.nodes}
        metrics = dict.fromkeys(p.nodes, NETNS_METRICS_PORT)
    if p.own_etcd:
        assert network is not None
        # on the first nodes: node1 ... (each in its node's namespace: a partition cuts both)
        members = {
            n: EtcdMember(n, network.nodes[n].address, tls=not p.insecure) for n in p.nodes[: p.etcd_members]
        }
        etcd = LocalEtcd(f"pyha-{uuid.uuid4().hex[:12]}", members)
        hosts = ",".join(m.endpoint for m in members.values())
        store = f"etcd://{hosts}/{p.name}?timeout={p.store_timeout:g}"
        if p.insecure:
            store = with_options(store, insecure="1")
        else:  # made by _make_etcd_pki, relative to the cluster dir
            own = TlsFiles.of(Path(ETCD_TLS_DIR), client_cert_name(CLUSTER_CLIENT))
            tls = EtcdTlsPaths(str(own.ca), str(own.cert), str(own.key))
    return ClusterConfig(
        root=p.root,
        cluster=p.name,
        nodes=endpoints,
        curve=p.curve,
        timing=p.timing,
        cgroups=p.cgroups,
        netns={n: v.ns for n, v in network.nodes.items()} if network else {},
        network=network.to_dict() if network else None,
        store=store,
        etcd=etcd,
        etcd_tls=tls,
        watchdog=p.watchdog,
        metrics_ports=metrics,
    )


def create(p: InitPlan) -> ClusterConfig:
    """Run the steps of ``init``; on a failure undo what would stay behind, raise :class:`AdminError`."""
    if p.own_etcd and (p.root / "etcd").exists():
        _remove_old_etcd(p)
    undo: list[Callable[[], None]] = []
    try:
        network = None
        if p.netns:
            network = netns_mod.plan(str(p.root), p.nodes)
            try:
                netns_mod.create(network)
            except netns_mod.NetnsError as e:
                raise AdminError(f"cannot create network namespaces: {e}", ExitCode.FAILED) from None
            undo.append(functools.partial(netns_mod.destroy, network))
        c = _config(p, network)
        _make_etcd_pki(c)
        problems = c.store_problems()
        if problems:
            raise AdminError("; ".join(problems), ExitCode.USAGE)
        _write_files(c, p.force)
        _start_store(c, undo)
        if c.curve:
            # one client key per role, for ha-manager and other tools (docs/API.md)
            for role in ("admin", "readonly"):
                generate_client_key(c, role, role)
        return c
    except BaseException:
        for step in reversed(undo):
            step()
        raise


def _make_etcd_pki(c: ClusterConfig) -> None:
    """A fresh CA, a certificate per local etcd member, the cluster's client certificate
    (``DIR/etcd-tls``, 0700/0600); nothing for an etcd the operator runs, or without TLS."""
    if c.etcd is None or not c.etcd.tls:
        return
    shutil.rmtree(c.etcd_tls_dir, ignore_errors=True)  # --force: the old members' CA goes with them
    try:
        make_cluster_pki(c.etcd_tls_dir, c.cluster, {n: m.host for n, m in c.etcd.members.items()})
    except (TlsError, OSError) as e:
        raise AdminError(f"cannot make the etcd certificates: {e}", ExitCode.FAILED) from None


def _write_files(c: ClusterConfig, force: bool) -> None:
    c.root.mkdir(parents=True, exist_ok=True)
    make_private(c.root)  # issue #11: nothing below it is reachable by other users
    for d in (c.keys_dir, c.state_dir, c.root / "logs", c.root / "run"):
        d.mkdir(parents=True, exist_ok=True)
    if c.store_kind == "dir":
        c.store_dir.mkdir(parents=True, exist_ok=True)
    if c.curve:
        for n in sorted(c.nodes):
            generate(c.keys_dir, n, force=force)
    c.save()


def _start_store(c: ClusterConfig, undo: list[Callable[[], None]]) -> None:
    """Start the local etcd members (if any), wait for the store, write its first records."""
    try:
        if c.etcd is not None:
            undo.append(lambda: stop_etcd(c, graceful=False))
            start_etcd(c, sorted(c.etcd.members))
            problem = wait_store(c, STORE_START_TIMEOUT)
            if problem is not None:
                raise HaError(f"etcd did not come up: {problem}")
        seed_store(c)
    except HaError as e:
        logs = "".join(f"\n--- {n}:\n{etcd_log_tail(c, n)}" for n in sorted(c.etcd.members)) if c.etcd else ""
        raise AdminError(f"cannot initialise the store {c.store_url}: {e}{logs}", ExitCode.FAILED) from None


def summary(c: ClusterConfig) -> list[str]:
    """The lines ``init`` prints."""
    lines = [f"cluster '{c.cluster}' with {len(c.nodes)} nodes in {c.root} (store {c.store})"]
    if c.etcd_tls is not None:
        t = c.etcd_tls
        lines.append(f"  etcd over TLS: CA {t.ca}, client certificate {t.cert} (key {t.key})")
    for n, endpoint in sorted(c.nodes.items()):
        member = c.etcd.members.get(n) if c.etcd is not None else None
        extra = f"  etcd {member.endpoint}" if member is not None else ""
        where = c.metrics_address(n)
        if where is not None:
            extra += f"  metrics http://{where[0]}:{where[1]}/metrics"
        lines.append(f"  {n}  {endpoint}{extra}")
    return lines
