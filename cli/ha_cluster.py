"""``ha-cluster``: create and drive a local cluster of ``ha-node`` processes.

    ha-cluster init DIR --nodes 3         membership, CURVE keys, empty config, store
        [--store dir|etcd] [--endpoints H:P,...] [--netns] [--etcd-members N]
        [--etcd-ca F --etcd-cert F --etcd-key F | --insecure]   TLS to etcd (docs/ETCD.md)
    ha-cluster up DIR [NODE...]           start node processes (all by default)
    ha-cluster down DIR                   orderly shutdown of every node (and local etcd)
    ha-cluster stop DIR NODE [--kind K]   orderly stop of one node (shutdown|reboot|restart)
    ha-cluster kill DIR NODE [--with-etcd]  SIGKILL of the node's whole process tree
    ha-cluster partition|heal DIR NODE    cut a node (and its etcd member) off / reconnect
    ha-cluster etcd-kill|etcd-start DIR NODE...   only the nodes' etcd members
    ha-cluster etcd-renew-certs DIR       new etcd member/client certificates (same CA)
    ha-cluster export DIR FILE / import DIR FILE  every record, between dir and etcd clusters
    ha-cluster status DIR                 which node processes run, the membership version
    ha-cluster add-node DIR [NAME] [--endpoint tcp://H:P]   one member more, on a running cluster
    ha-cluster remove-node DIR NODE       empty NODE (maintenance), stop it, drop it from the members
    ha-cluster destroy DIR                stop everything, remove namespaces

Stores: ``--store dir`` (default) keeps the records in ``DIR/store`` (one
host). ``--store etcd --endpoints h:p,...`` uses an etcd the operator runs;
``--store etcd --netns`` runs etcd members inside the nodes' network
namespaces, one on each of the first ``--etcd-members`` nodes (default: every
node up to 3, then 3, as etcd advises 3 or 5; the other nodes are only its
clients), peers and clients on the node's namespace address,
started by ``init``/``up`` and stopped by ``down``/``destroy``: data in
``DIR/etcd/<node>.etcd``, logs in ``DIR/logs/<node>.etcd.log``, pid files in
``DIR/run/<node>/etcd.pid``. A partition then cuts a node and its etcd
member off together. etcd is spoken to over TLS with a client certificate only:
``init`` makes the local members' CA and certificates in ``DIR/etcd-tls``; an
etcd the operator runs needs ``--etcd-ca/--etcd-cert/--etcd-key`` (or, plain
http, ``--insecure``).

Exit codes: 0 ok, 1 operation failed, 2 bad input.

This module holds the commands; the work is done by ``cli/cluster_init.py``
(``init``: plan, then steps with undo), ``cli/cluster_procs.py`` (node
processes), ``cli/cluster_etcd.py`` (the local etcd members) and
``cli/cluster_records.py`` (export and import) and ``cli/cluster_members.py``
(membership changes online, one member at a time).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from admin.cluster import DEFAULT_ETCD_TIMEOUT, ClusterConfig
from admin.errors import AdminError, ExitCode
from admin.private import private_umask
from cli import cluster_init, cluster_members
from cli import netns as netns_mod
from cli.cluster_etcd import (
    etcd_leader,
    etcd_log_tail,
    etcd_pid,
    local_etcd,
    member_nodes,
    renew_certs,
    start_etcd,
    stop_etcd,
    wait_etcd_serving,
)
from cli.cluster_procs import (
    START_TIMEOUT,
    check_nodes,
    dump_stacks,
    kill_tree,
    node_pid,
    remove_empty_cgroups,
    request_stop,
    running_nodes,
    start_node,
    wait_gone,
    wait_quorate,
    wait_started,
)
from cli.cluster_records import export_records, import_records, read_export
from fence.procfs import read_pid_file
from ha.errors import HaError


def fail(msg: str, code: int = ExitCode.FAILED) -> None:
    click.echo(f"ha-cluster: {msg}", err=True)
    sys.exit(code)


class _Group(click.Group):
    """Every command's refusal (:class:`AdminError`) ends as one line and its exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AdminError as e:
            fail(str(e), e.code)
        except HaError as e:
            fail(str(e))


def load(directory: str) -> ClusterConfig:
    try:
        return ClusterConfig.load(directory)
    except HaError as e:
        raise AdminError(str(e), ExitCode.USAGE) from None


def network_of(c: ClusterConfig) -> netns_mod.Network:
    if c.network is None:
        raise AdminError(
            "this cluster has no network namespaces (create it with 'init --netns')", ExitCode.USAGE
        )
    return netns_mod.Network.from_dict(c.network)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Create and drive a local HA cluster of ha-node processes."""
    private_umask()  # issue #11: what the cluster keeps on disk is root's alone


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
    "--etcd-members", type=click.IntRange(min=1),
    help="With --store etcd --netns: how many nodes run an etcd member (the first ones; default: "
    "every node up to 3, then 3); the others are etcd's clients.",
)  # fmt: skip
@click.option(
    "--store-timeout", type=click.FloatRange(min=0.05), default=DEFAULT_ETCD_TIMEOUT, show_default=True,
    help="Seconds every etcd call of a node may take.",
)  # fmt: skip
@click.option("--etcd-ca", type=click.Path(dir_okay=False), help="CA certificate of an etcd you run (TLS).")
@click.option("--etcd-cert", type=click.Path(dir_okay=False), help="Client certificate for that etcd.")
@click.option("--etcd-key", type=click.Path(dir_okay=False), help="Key of the client certificate.")
@click.option(
    "--insecure", is_flag=True,
    help="Talk plain http to etcd, no certificates (refused otherwise; docs/ETCD.md \"TLS\").",
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
    etcd_ca: str | None,
    etcd_cert: str | None,
    etcd_key: str | None,
    insecure: bool,
    watchdog: str,
    etcd_members: int | None,
) -> None:
    """Create a cluster in DIRECTORY."""
    p = cluster_init.plan(
        directory,
        count=count,
        base_port=base_port,
        curve=not no_curve,
        name=name,
        timing_kv=timing_kv,
        cgroups=not no_cgroups,
        watchdog=watchdog,
        force=force,
        netns=netns,
        store_kind=store_kind,
        endpoints=endpoints,
        store_timeout=store_timeout,
        etcd_ca=etcd_ca,
        etcd_cert=etcd_cert,
        etcd_key=etcd_key,
        insecure=insecure,
        etcd_members=etcd_members,
    )
    for line in cluster_init.summary(cluster_init.create(p)):
        click.echo(line)
    if count == 2:
        # issue #13: a majority of 2 is 2, so losing either node stops the whole cluster
        click.echo(
            "warning: a 2-node cluster has no majority once one node is lost: every node fences itself;"
            " use 3 nodes (or more) to survive a failure",
            err=True,
        )


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
        problem = cluster_init.wait_store(c, cluster_init.STORE_START_TIMEOUT)
        if problem is not None:
            fail(f"the store {c.store_url} does not answer: {problem} (see {c.root}/logs/*.etcd.log)")
    t0 = time.time()
    spawned = {n: start_node(c, n) for n in todo if node_pid(c, n) is None}
    bad = [n for n in todo if not wait_started(c, n, spawned.get(n))]
    if bad:
        fail(f"did not come up: {', '.join(bad)} (see {c.root}/logs)")
    running = [n for n in c.nodes if node_pid(c, n) is not None]
    if len(running) * 2 > len(c.nodes):
        # usable = quorate: a node's LRM writes its lrm_status only while it is (§1.4)
        late = [n for n in todo if not wait_quorate(c, n, t0)]
        if late:
            fail(f"up, but without quorum after {START_TIMEOUT:g} s: {', '.join(late)} (see {c.root}/logs)")
        click.echo(f"up: {' '.join(todo)} (quorate)")
    else:
        click.echo(f"up: {' '.join(todo)} (no quorum yet: {len(running)} of {len(c.nodes)} nodes running)")


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
        dump_stacks([pid])
        fail(f"{node} did not stop within {timeout:g}s (stacks in logs/{node}.out)")
    click.echo(f"{node} stopped ({kind})")


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
    extra = " and its etcd member" if with_etcd and member_nodes(c, [node]) else ""
    click.echo(f"{node} killed ({len(killed)} daemon process(es), its services{extra})")


@main.command()
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--timeout", type=float, default=60.0, show_default=True)
def down(directory: str, timeout: float) -> None:
    """Orderly shutdown of every node, then of the local etcd; whatever is left after TIMEOUT is killed."""
    c = load(directory)
    pids = [p for n in sorted(c.nodes) if (p := request_stop(c, n, "shutdown")) is not None]
    left = wait_gone(pids, timeout)
    dump_stacks(left)
    for n in sorted(c.nodes):
        kill_tree(c, n)
    stop_etcd(c)
    remove_empty_cgroups(c)
    if left:
        fail(f"{len(left)} node(s) had to be killed after {timeout:g}s (stacks in logs/NODE.out)")
    click.echo("down")


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
    """Reconnect NODE (and say what it needs next)."""
    c = load(directory)
    check_nodes(c, [node])
    netns_mod.heal(network_of(c), node)
    if node_pid(c, node) is None:
        # a node cut off longer than its lease fenced itself and exited (issue #13)
        click.echo(f"{node} reconnected; its ha-node is not running (it fenced itself): start it with"
                   f" 'ha-cluster up {c.root} {node}'")  # fmt: skip
    else:
        click.echo(f"{node} reconnected and running")


@main.command("add-node")
@click.argument("directory", type=click.Path(file_okay=False))
@click.argument("name", required=False)
@click.option("--endpoint", help="Bus endpoint of the new node (default: a free port on 127.0.0.1).")
def add_node(directory: str, name: str | None, endpoint: str | None) -> None:
    """Add one node to a running cluster: keys, endpoint, every member follows, then it starts.

    Refused unless the running members alone hold a majority of the new member list.
    """
    cluster_members.add_node(load(directory), name, endpoint, click.echo)


@main.command("remove-node")
@click.argument("directory", type=click.Path(file_okay=False))
@click.argument("node")
@click.option("--timeout", type=float, default=60.0, show_default=True,
              help="Seconds for its services to move away, and for it to stop.")  # fmt: skip
def remove_node(directory: str, node: str, timeout: float) -> None:
    """Remove NODE from a running cluster: maintenance moves its services away, it stops, the
    members drop it (it is not fenced) and its keys are deleted."""
    cluster_members.remove_node(load(directory), node, timeout, click.echo)


def etcd_member_args(c: ClusterConfig, nodes: tuple[str, ...]) -> list[str]:
    """NODES, each a node of the cluster that runs one of its etcd members (else a usage error)."""
    e = local_etcd(c)
    todo = check_nodes(c, nodes)
    others = [n for n in todo if n not in e.members]
    if others:
        fail(
            f"{' '.join(others)} run(s) no etcd member (the members: {' '.join(sorted(e.members))})",
            ExitCode.USAGE,
        )
    return todo


@main.command("etcd-kill")
@click.argument("directory", type=click.Path(file_okay=False))
@click.argument("nodes", nargs=-1, required=True)
def etcd_kill(directory: str, nodes: tuple[str, ...]) -> None:
    """SIGKILL only the etcd members of NODES (the nodes keep running)."""
    c = load(directory)
    todo = etcd_member_args(c, nodes)
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
    todo = etcd_member_args(c, nodes)
    start_etcd(c, todo)
    late = wait_etcd_serving(c, todo, timeout)
    if late:
        tails = "".join(f"\n--- {n}:\n{etcd_log_tail(c, n)}" for n in late)
        fail(f"etcd member(s) of {' '.join(late)} not serving after {timeout:g}s{tails}")
    click.echo(f"etcd member(s) of {' '.join(todo)} running")


@main.command("etcd-renew-certs")
@click.argument("directory", type=click.Path(file_okay=False))
def etcd_renew_certs(directory: str) -> None:
    """New certificates for the cluster's etcd members and client, from its CA (nothing stops).

    Members use theirs from their next connection on; nodes and tools theirs when they
    next start. The old ones stay valid until they expire (docs/ETCD.md "Rotation").
    """
    c = load(directory)
    silent = renew_certs(c)
    if silent:
        fail(f"renewed, but etcd member(s) of {' '.join(silent)} do not answer the new client certificate")
    click.echo(f"etcd certificates renewed in {c.etcd_tls_dir} (CA kept)")


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
        if c.etcd is not None and n in c.etcd.members:
            epid = etcd_pid(c, n)
            state = f"etcd pid {epid}" + (" (leader)" if n == lead else "") if epid else "etcd stopped"
            line += f", {state}"
        click.echo(line)
    click.echo(f"store: {c.store_url}")
    click.echo(f"membership: version {c.config_version}, {len(c.nodes)} members")


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
    path = Path(file)
    n = export_records(c, path)
    click.echo(f"exported {n} records from {c.store_url} to {path}")


@main.command("import")
@click.argument("directory", type=click.Path(file_okay=False))
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@click.option("--force", is_flag=True, help="Delete records of the cluster that FILE does not have.")
@click.option("--other-cluster", is_flag=True, help="Import an export of a cluster with another name.")
def import_cmd(directory: str, file: str, force: bool, other_cluster: bool) -> None:
    """Replace the records of the (stopped) cluster with those in FILE (from 'export').

    Every record of FILE is written as it is. Records the cluster has and FILE
    has not make it refuse, unless --force (they are deleted). An export of a
    cluster with another name is refused unless --other-cluster. Every entry is
    checked before anything is written. Leases are not part of an export: the
    nodes take theirs when they start.
    """
    c = load(directory)
    records = read_export(file, None if other_cluster else c.cluster)
    if running_nodes(c):
        fail(f"stop the cluster first (running: {', '.join(running_nodes(c))})")
    deleted = import_records(c, records, file, force=force)
    click.echo(
        f"imported {len(records)} records into {c.store_url}" + (f", deleted {deleted}" if deleted else "")
    )


if __name__ == "__main__":
    main()
