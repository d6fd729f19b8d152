"""The etcd members a cluster runs itself (``ha-cluster init --store etcd --netns``).

One member per node, inside the node's network namespace, detached from
``ha-cluster`` (they outlive the command): data in ``DIR/etcd/<node>.etcd``,
log in ``DIR/logs/<node>.etcd.log``, pid in ``DIR/run/<node>/etcd.pid``
(paths: :class:`admin.cluster.ClusterConfig`). The command line and the status
probe are ``store/etcd_launch.py``'s, shared with the test harness. The members
speak TLS only and want a client certificate of the cluster's CA
(``DIR/etcd-tls``, made by ``init``: docs/ETCD.md "TLS"); the status probe
presents the cluster's client certificate.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from admin.cluster import ClusterConfig, LocalEtcd
from admin.errors import AdminError, ExitCode
from cli.cluster_procs import wait_gone
from fence.procfs import read_pid_file
from store.etcd_launch import (
    LAST_MEMBER_GRACE,
    agreed_leader,
    etcd_command,
    launch,
    log_tail,
    member_status,
    stop_order,
)
from store.etcd_tls import TlsError, client_context, renew_cluster_pki

if TYPE_CHECKING:
    import ssl


def local_etcd(c: ClusterConfig) -> LocalEtcd:
    """The cluster's own etcd; :class:`AdminError` (usage) when it runs none."""
    if c.etcd is None:
        raise AdminError(
            "this cluster runs no etcd of its own (see 'init --store etcd --netns')", ExitCode.USAGE
        )
    return c.etcd


def member_command(c: ClusterConfig, node: str) -> list[str]:
    e = local_etcd(c)
    return etcd_command(
        e.members[node],
        data_dir=c.etcd_data_dir(node),
        initial=e.initial_cluster,
        token=e.token,
        heartbeat_ms=e.heartbeat_ms,
        election_ms=e.election_ms,
        netns=c.netns.get(node),
        tls=c.etcd_member_tls(node),
    )


def status_context(c: ClusterConfig) -> ssl.SSLContext | None:
    """The TLS context the status probe asks the members with (None: plain-http members)."""
    if c.etcd is None or not c.etcd.tls or c.etcd_tls is None:
        return None
    try:
        return client_context(c.etcd_tls.files(c.root))
    except OSError as e:
        raise AdminError(f"cannot load the etcd client certificate: {e}", ExitCode.FAILED) from None


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


def member_nodes(c: ClusterConfig, nodes: Iterable[str]) -> list[str]:
    """Those of NODES that run an etcd member (``init --etcd-members``: not every node does)."""
    members = c.etcd.members if c.etcd is not None else {}
    return [n for n in nodes if n in members]


def start_etcd(c: ClusterConfig, nodes: Iterable[str]) -> list[str]:
    """Start the members of NODES that do not run (detached: they outlive this command)."""
    started = []
    for n in member_nodes(c, nodes):
        if etcd_pid(c, n) is not None:
            continue
        c.etcd_data_dir(n).parent.mkdir(parents=True, exist_ok=True)
        c.run_dir(n).mkdir(parents=True, exist_ok=True)
        proc = launch(member_command(c, n), c.etcd_log(n), cwd=c.root)
        c.etcd_pid_file(n).write_text(f"{proc.pid}\n")
        started.append(n)
    return started


def etcd_leader(c: ClusterConfig) -> str | None:
    """The node whose member the running members that answer name as leader, if they agree."""
    e = local_etcd(c)
    ctx = status_context(c)
    statuses = {n: member_status(m, context=ctx) for n, m in e.members.items() if etcd_pid(c, n) is not None}
    # a member cut off (partition) does not answer: the others still name the leader
    return agreed_leader({n: st for n, st in statuses.items() if st is not None})


def etcd_log_tail(c: ClusterConfig, node: str, lines: int = 8) -> str:
    return log_tail(c.etcd_log(node), lines)


def wait_etcd_serving(c: ClusterConfig, nodes: Iterable[str], timeout: float) -> list[str]:
    """Wait until each member of NODES answers; the ones that did not (bounded)."""
    e = local_etcd(c)
    ctx = status_context(c)
    todo = member_nodes(c, nodes)
    deadline = time.monotonic() + timeout
    while todo and time.monotonic() < deadline:
        todo = [
            n for n in todo if etcd_pid(c, n) is not None and member_status(e.members[n], context=ctx) is None
        ]
        if todo:
            time.sleep(0.05)
    return todo


def dead_majority(c: ClusterConfig) -> list[str] | None:
    """The members that do not run when they are half or more of them, else None."""
    if c.etcd is None:
        return None
    dead = [n for n in c.etcd.members if etcd_pid(c, n) is None]
    return dead if len(dead) * 2 >= len(c.etcd.members) else None


def stop_etcd(c: ClusterConfig, nodes: Iterable[str] | None = None, *, graceful: bool = True) -> None:
    """Stop members (all by default): followers first, the leader last; SIGKILL what is left."""
    if c.etcd is None:
        return
    todo = [
        n for n in member_nodes(c, nodes if nodes is not None else sorted(c.etcd.members)) if etcd_pid(c, n)
    ]
    if graceful and len(todo) > 1:
        todo = stop_order(todo, etcd_leader(c))
    for i, n in enumerate(todo):
        pid = etcd_pid(c, n)
        if pid is None:
            continue
        grace = (LAST_MEMBER_GRACE if i == len(todo) - 1 else 5.0) if graceful else 0.0
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM if graceful else signal.SIGKILL)
        if wait_gone([pid], grace):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            wait_gone([pid], 5)
    for n in todo:
        c.etcd_pid_file(n).unlink(missing_ok=True)


def renew_certs(c: ClusterConfig) -> list[str]:
    """New member and client certificates from the cluster's CA (docs/ETCD.md "Rotation");
    the running members that do not answer the new client certificate (should be none).

    Members load their certificate at each new connection, nodes theirs when they start; the
    old certificates stay valid until they expire (same CA), so nothing has to restart.
    """
    e = local_etcd(c)
    if not e.tls:
        raise AdminError("this cluster's etcd members run without TLS (init --insecure)", ExitCode.USAGE)
    try:
        renew_cluster_pki(c.etcd_tls_dir, c.cluster, {n: m.host for n, m in e.members.items()})
    except (TlsError, OSError) as err:
        raise AdminError(f"cannot renew the etcd certificates: {err}", ExitCode.FAILED) from None
    ctx = status_context(c)
    running = [n for n in sorted(e.members) if etcd_pid(c, n) is not None]
    return [n for n in running if member_status(e.members[n], timeout=2.0, context=ctx) is None]
