"""Start and stop a real local etcd cluster of child processes, for the tests.

::

    with EtcdCluster(3) as c:          # 3 members on loopback, free ports, temp data dirs
        st = EtcdStore.from_url(c.url("mycluster"))
        c.kill(c.leader())             # SIGKILL one member
        c.restart(0)                   # same data dir, rejoins

Members run ``etcd`` (Debian package ``etcd-server``) with their own data dir
under ``base_dir`` (a fresh temp dir on ``/dev/shm`` when not given, removed
at :meth:`EtcdCluster.stop`). Every wait is bounded; every process started is
reaped at :meth:`EtcdCluster.stop`, which is idempotent and also runs from
``__exit__`` and on a failed start.

With ``netns=[...]`` and ``hosts=[...]`` member *i* runs as
``ip netns exec NS_i etcd ...`` listening on ``hosts[i]`` (default ports
2379/2380), for partition tests on network namespaces (``cli/netns.py``):
the host must be able to reach every member's address.

The command line of a member and the status probe are ``store/etcd_launch.py``'s,
the same ``ha-cluster`` uses for the members it runs itself.

TLS as in production (``tls=True``, the default): :meth:`EtcdCluster.start` makes
a fresh CA under ``base_dir/tls`` (``store/etcd_tls.py``), a server/peer
certificate per member and one client certificate (:attr:`EtcdCluster.client_tls`);
:meth:`EtcdCluster.url` names them. ``tls=False`` runs plain http members (URLs
with ``insecure=1``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from store.etcd_launch import (
    CLIENT_PORT,
    ETCD_BIN,
    LAST_MEMBER_GRACE,
    PEER_PORT,
    EtcdMember,
    MemberTls,
    agreed_leader,
    etcd_available,
    etcd_command,
    initial_cluster,
    launch,
    log_tail,
    member_status,
    stop_order,
)
from store.etcd_tls import (
    CLUSTER_CLIENT,
    TlsFiles,
    client_cert_name,
    client_context,
    make_cluster_pki,
    member_cert_name,
)
from store.etcd_url import with_options

__all__ = ["EtcdCluster", "EtcdHarnessError", "HarnessMember", "etcd_available", "free_ports"]


class EtcdHarnessError(RuntimeError):
    """A member did not start, or the cluster did not become healthy in time."""


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct TCP ports that were free on ``host`` a moment ago."""
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class HarnessMember:
    """A member of an :class:`EtcdCluster`: its addresses, files, and process while it runs."""

    spec: EtcdMember
    data_dir: Path
    log_path: Path
    netns: str | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def endpoint(self) -> str:
        return self.spec.endpoint

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        return log_tail(self.log_path, lines)


class EtcdCluster:
    """A real N-member etcd cluster of local processes (see the module doc)."""

    def __init__(
        self,
        size: int = 3,
        *,
        hosts: Sequence[str] | None = None,
        netns: Sequence[str | None] | None = None,
        client_ports: Sequence[int] | None = None,
        peer_ports: Sequence[int] | None = None,
        base_dir: str | Path | None = None,
        etcd: str = ETCD_BIN,
        heartbeat_ms: int = 100,
        election_ms: int = 1000,
        start_timeout: float = 20.0,
        die_with_parent: bool = False,
        tls: bool = True,
    ) -> None:
        if size < 1:
            raise ValueError("an etcd cluster needs at least one member")
        for what, seq in (("hosts", hosts), ("netns", netns), ("client_ports", client_ports)):
            if seq is not None and len(seq) != size:
                raise ValueError(f"{what}: {len(seq)} entries for {size} members")
        if peer_ports is not None and len(peer_ports) != size:
            raise ValueError(f"peer_ports: {len(peer_ports)} entries for {size} members")
        self.size = size
        self.etcd = etcd
        self.heartbeat_ms = heartbeat_ms
        self.election_ms = election_ms
        self.start_timeout = start_timeout
        self.die_with_parent = die_with_parent
        self.tls = tls
        self._context: ssl.SSLContext | None = None
        self._hosts = list(hosts) if hosts is not None else ["127.0.0.1"] * size
        self._netns = list(netns) if netns is not None else [None] * size
        self._fixed_client = list(client_ports) if client_ports is not None else None
        self._fixed_peer = list(peer_ports) if peer_ports is not None else None
        self._own_base = base_dir is None
        if base_dir is None:  # created by start(), so an unstarted cluster leaves nothing behind
            shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
            base_dir = Path(shm or tempfile.gettempdir()) / f"pyha-etcd-{uuid.uuid4().hex[:12]}"
        self.base_dir = Path(base_dir)
        self.token = f"pyha-{uuid.uuid4().hex[:12]}"
        self.members: list[HarnessMember] = []
        self._plan()

    # -- setup ----------------------------------------------------------------------------

    def _plan(self) -> None:
        auto = free_ports(2 * self.size) if self._fixed_client is None or self._fixed_peer is None else []
        self.members = []
        for i in range(self.size):
            host, ns = self._hosts[i], self._netns[i]
            default_c = CLIENT_PORT if ns else auto[2 * i]
            default_p = PEER_PORT if ns else auto[2 * i + 1]
            cport = self._fixed_client[i] if self._fixed_client is not None else default_c
            pport = self._fixed_peer[i] if self._fixed_peer is not None else default_p
            name = f"m{i}"
            self.members.append(
                HarnessMember(
                    EtcdMember(name, host, cport, pport, tls=self.tls),
                    data_dir=self.base_dir / f"{name}.etcd",
                    log_path=self.base_dir / f"{name}.log",
                    netns=ns,
                )
            )

    @property
    def tls_dir(self) -> Path:
        """The CA and certificates (``tls=True``), made by :meth:`start`."""
        return self.base_dir / "tls"

    @property
    def client_tls(self) -> TlsFiles | None:
        """The client certificate of this cluster's CA (None with ``tls=False``)."""
        return TlsFiles.of(self.tls_dir, client_cert_name(CLUSTER_CLIENT)) if self.tls else None

    def _make_pki(self) -> None:
        tls = self.client_tls
        if tls is None:
            return
        # the members' hosts do not change when the ports are chosen again: made once
        if tls.missing():
            make_cluster_pki(self.tls_dir, self.token, {m.name: m.spec.host for m in self.members})
        self._context = client_context(tls)

    def _launch(self, m: HarnessMember) -> None:
        m.data_dir.parent.mkdir(parents=True, exist_ok=True)
        cmd = etcd_command(
            m.spec,
            data_dir=m.data_dir,
            initial=initial_cluster([x.spec for x in self.members]),
            token=self.token,
            heartbeat_ms=self.heartbeat_ms,
            election_ms=self.election_ms,
            netns=m.netns,
            binary=self.etcd,
            tls=MemberTls(TlsFiles.of(self.tls_dir, member_cert_name(m.name))) if self.tls else None,
        )
        m.proc = launch(cmd, m.log_path, die_with_parent=self.die_with_parent)

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> EtcdCluster:
        """Start every member and wait (bounded) until all agree on a leader."""
        if not etcd_available(self.etcd):
            raise EtcdHarnessError(f"'{self.etcd}' not found (Debian: apt-get install etcd-server)")
        auto_ports = self._fixed_client is None and not any(self._netns)
        self.base_dir.mkdir(mode=0o700, parents=True, exist_ok=not self._own_base)
        self._make_pki()
        for attempt in (1, 2):
            try:
                for m in self.members:
                    self._launch(m)
                self.wait_healthy(self.start_timeout)
                return self
            except EtcdHarnessError as e:
                logs = "\n".join(f"--- {m.name} ({m.endpoint}):\n{m.log_tail()}" for m in self.members)
                in_use = "address already in use" in logs
                self._stop_members()
                if attempt == 1 and auto_ports and in_use:
                    shutil.rmtree(self.base_dir, ignore_errors=True)  # a port was taken meanwhile
                    self.base_dir.mkdir(mode=0o700, parents=True)
                    self._plan()
                    self._make_pki()
                    continue
                self._cleanup_dir()
                raise EtcdHarnessError(f"{e}\n{logs}") from None
        raise AssertionError("unreachable")  # pragma: no cover

    def wait_healthy(self, timeout: float = 10.0) -> int:
        """Wait until every running member answers and names the same leader; its index."""
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while True:
            for m in self.members:
                if m.proc is not None and m.proc.poll() is not None:  # died on its own
                    raise EtcdHarnessError(f"etcd member {m.name} exited with {m.proc.returncode}")
            statuses = self._statuses()
            lead = agreed_leader(statuses)
            if lead is not None:
                return lead
            seen = sorted({str(st.get("leader")) if st else "none" for st in statuses.values()})
            last = f"leaders seen: {seen}"
            if time.monotonic() >= deadline:
                raise EtcdHarnessError(f"etcd cluster not healthy within {timeout:g}s ({last})")
            time.sleep(0.05)

    def wait_leader(self, timeout: float = 10.0) -> int:
        """Index of the leader once the running members agree on one (bounded wait)."""
        return self.wait_healthy(timeout)

    def leader(self) -> int | None:
        """Index of the member the running members name as leader, if they agree."""
        return agreed_leader(self._statuses())

    def kill(self, index: int, sig: int = signal.SIGKILL, timeout: float = 10.0) -> None:
        """Send ``sig`` to member ``index`` and reap it (SIGKILL after ``timeout``)."""
        self._stop_one(self.members[index], sig, timeout)

    def restart(self, *indices: int, timeout: float = 10.0) -> None:
        """Start the given members again on their data dirs; wait until they serve (bounded).

        A member serves clients only once it reached a quorum, so restart the members
        that make a quorum together in one call.
        """
        todo = [self.members[i] for i in indices if not self.members[i].running]
        for m in todo:
            self._launch(m)
        deadline = time.monotonic() + timeout
        for m in todo:
            while self.status(m) is None:
                if m.proc is None or m.proc.poll() is not None:
                    raise EtcdHarnessError(f"etcd member {m.name} exited on restart:\n{m.log_tail()}")
                if time.monotonic() >= deadline:
                    raise EtcdHarnessError(f"etcd member {m.name} not serving within {timeout:g}s")
                time.sleep(0.05)

    def stop(self, *, graceful: bool = True, timeout: float = 5.0) -> None:
        """Stop every member, reap them, remove our temp dir. Idempotent.

        ``graceful``: SIGTERM, then SIGKILL after ``timeout``; else SIGKILL at once
        (fine for throw-away test clusters: nothing of theirs is kept).
        """
        self._stop_members(graceful=graceful, timeout=timeout)
        self._cleanup_dir()

    def _stop_members(self, *, graceful: bool = False, timeout: float = 5.0) -> None:
        if graceful:
            # One at a time, the leader last: a leader stopped together with its followers
            # tries to hand its leadership over to members that are going away (seconds).
            order = stop_order(range(self.size), self.leader())
            for n, i in enumerate(order):
                grace = min(timeout, LAST_MEMBER_GRACE) if n == len(order) - 1 else timeout
                self._stop_one(self.members[i], signal.SIGTERM, grace)
        for m in self.members:
            if m.proc is not None and m.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    m.proc.kill()
        for m in self.members:
            self._stop_one(m, signal.SIGKILL, 5.0)

    @staticmethod
    def _stop_one(m: HarnessMember, sig: int, timeout: float) -> None:
        if m.proc is None:
            return
        if m.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                m.proc.send_signal(sig)
        try:
            m.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            m.proc.kill()
            m.proc.wait(5)
        m.proc = None

    def _cleanup_dir(self) -> None:
        if self._own_base:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> EtcdCluster:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- addresses ------------------------------------------------------------------------

    def endpoints(self, indices: Sequence[int] | None = None) -> list[str]:
        idx = range(self.size) if indices is None else indices
        return [self.members[i].endpoint for i in idx]

    def url(self, cluster: str = "default", indices: Sequence[int] | None = None, **options: object) -> str:
        """An ``etcd://`` store URL for these members (``store/etcd_url.py``): with the
        client certificate (``tls=True``), else ``insecure=1``; ``options`` added."""
        url = f"etcd://{','.join(self.endpoints(indices))}/{cluster}"
        tls = self.client_tls
        if tls is not None:
            url = with_options(url, ca=str(tls.ca), cert=str(tls.cert), key=str(tls.key))
        else:
            url = with_options(url, insecure="1")
        return with_options(url, **{k: str(v) for k, v in options.items()})

    def status(self, m: HarnessMember) -> dict[str, object] | None:
        """Member ``m``'s status answer (asked with the client certificate), None if none."""
        return member_status(m.spec, context=self._context)

    # -- probes ---------------------------------------------------------------------------

    def _statuses(self) -> dict[int, dict[str, object] | None]:
        """What each running member answers to a status request, by index."""
        return {i: self.status(m) for i, m in enumerate(self.members) if m.running}
