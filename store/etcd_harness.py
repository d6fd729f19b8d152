"""Start and stop a real local etcd cluster: for the tests, and later for ``ha-cluster``.

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
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Final

ETCD_BIN: Final = "etcd"
CLIENT_PORT: Final = 2379
PEER_PORT: Final = 2380
_PR_SET_PDEATHSIG: Final = 1


class EtcdHarnessError(RuntimeError):
    """A member did not start, or the cluster did not become healthy in time."""


def etcd_available(binary: str = ETCD_BIN) -> bool:
    """True when the etcd server binary is on PATH (Debian: ``apt-get install etcd-server``)."""
    return shutil.which(binary) is not None


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


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass
class EtcdMember:
    name: str
    host: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    netns: str | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    started_once: bool = False

    @property
    def endpoint(self) -> str:
        return _hostport(self.host, self.client_port)

    @property
    def client_url(self) -> str:
        return f"http://{self.endpoint}"

    @property
    def peer_url(self) -> str:
        return f"http://{_hostport(self.host, self.peer_port)}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


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
        self.members: list[EtcdMember] = []
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
                EtcdMember(
                    name=name,
                    host=host,
                    client_port=cport,
                    peer_port=pport,
                    data_dir=self.base_dir / f"{name}.etcd",
                    log_path=self.base_dir / f"{name}.log",
                    netns=ns,
                )
            )

    def _command(self, m: EtcdMember, state: str) -> list[str]:
        initial = ",".join(f"{x.name}={x.peer_url}" for x in self.members)
        cmd = [
            self.etcd,
            "--name", m.name,
            "--data-dir", str(m.data_dir),
            "--listen-client-urls", m.client_url,
            "--advertise-client-urls", m.client_url,
            "--listen-peer-urls", m.peer_url,
            "--initial-advertise-peer-urls", m.peer_url,
            "--initial-cluster", initial,
            "--initial-cluster-token", self.token,
            "--initial-cluster-state", state,
            "--heartbeat-interval", str(self.heartbeat_ms),
            "--election-timeout", str(self.election_ms),
            # a member cut off and healed must not depose a working leader (default from 3.5 on)
            "--pre-vote=true",
            # every lease renewal is a new revision; pyha never reads old ones
            "--auto-compaction-mode", "revision",
            "--auto-compaction-retention", "10000",
            "--logger", "zap",
            "--log-level", "warn",
        ]  # fmt: skip
        if m.netns:
            cmd = ["ip", "netns", "exec", m.netns, *cmd]
        return cmd

    def _launch(self, m: EtcdMember) -> None:
        state = "existing" if m.started_once else "new"
        m.data_dir.parent.mkdir(parents=True, exist_ok=True)
        with open(m.log_path, "ab") as log:
            m.proc = subprocess.Popen(
                self._command(m, state),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent if self.die_with_parent else None,  # noqa: PLW1509
            )
        m.started_once = True

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> EtcdCluster:
        """Start every member and wait (bounded) until all agree on a leader."""
        if not etcd_available(self.etcd):
            raise EtcdHarnessError(f"'{self.etcd}' not found (Debian: apt-get install etcd-server)")
        auto_ports = self._fixed_client is None and not any(self._netns)
        self.base_dir.mkdir(mode=0o700, parents=True, exist_ok=not self._own_base)
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
            leaders = {self._leader_seen_by(m) for m in self.members if m.running}
            ids = self._member_ids()
            if len(leaders) == 1 and None not in leaders:
                lid = leaders.pop()
                if lid in ids:
                    return ids[lid]
                last = f"leader {lid} not among the running members"
            else:
                last = f"leaders seen: {sorted(str(x) for x in leaders)}"
            if time.monotonic() >= deadline:
                raise EtcdHarnessError(f"etcd cluster not healthy within {timeout:g}s ({last})")
            time.sleep(0.05)

    def wait_leader(self, timeout: float = 10.0) -> int:
        """Index of the leader once the running members agree on one (bounded wait)."""
        return self.wait_healthy(timeout)

    def leader(self) -> int | None:
        """Index of the member the running members name as leader, if they agree."""
        leaders = {self._leader_seen_by(m) for m in self.members if m.running}
        if len(leaders) != 1:
            return None
        lid = leaders.pop()
        return None if lid is None else self._member_ids().get(lid)

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
            while self._status(m) is None:
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
            lead = self.leader()
            order = [i for i in range(self.size) if i != lead] + ([lead] if lead is not None else [])
            for n, i in enumerate(order):
                # The last one sometimes still tries to hand over to a peer that just left
                # and waits for etcd's request timeout (7 s): it gets a short grace only.
                # SIGKILL is safe for etcd: an acknowledged write is in its fsynced WAL.
                last = n == len(order) - 1
                self._stop_one(self.members[i], signal.SIGTERM, min(timeout, 1.0) if last else timeout)
        for m in self.members:
            if m.proc is not None and m.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    m.proc.kill()
        for m in self.members:
            self._stop_one(m, signal.SIGKILL, 5.0)

    @staticmethod
    def _stop_one(m: EtcdMember, sig: int, timeout: float) -> None:
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
        """An ``etcd://`` store URL for these members (``store/etcdstore.py``)."""
        query = "&".join(f"{k}={v}" for k, v in options.items())
        return f"etcd://{','.join(self.endpoints(indices))}/{cluster}" + (f"?{query}" if query else "")

    # -- probes ---------------------------------------------------------------------------

    def _status(self, m: EtcdMember, timeout: float = 0.5) -> dict[str, object] | None:
        conn = http.client.HTTPConnection(m.host, m.client_port, timeout=timeout)
        try:
            conn.request("POST", "/v3/maintenance/status", body=b"{}")
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200:
                return None
            data = json.loads(body)
            return data if isinstance(data, dict) else None
        except (OSError, http.client.HTTPException, ValueError):
            return None
        finally:
            conn.close()

    def _leader_seen_by(self, m: EtcdMember) -> str | None:
        st = self._status(m)
        if st is None:
            return None
        leader = str(st.get("leader", "0"))
        return None if leader in ("0", "") else leader

    def _member_ids(self) -> dict[str, int]:
        ids: dict[str, int] = {}
        for i, m in enumerate(self.members):
            if not m.running:
                continue
            st = self._status(m)
            header = st.get("header") if st else None
            if isinstance(header, dict) and "member_id" in header:
                ids[str(header["member_id"])] = i
        return ids
