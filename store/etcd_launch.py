"""How an etcd member is started and asked about its state: the one place for etcd's flags.

Used by both runners of etcd members: the test harness (``store/etcd_harness.py``:
``EtcdCluster``, members as child processes) and ``ha-cluster`` for a cluster that
runs its own etcd (``cli/cluster_etcd.py``: detached members with pid files).

* :class:`EtcdMember` names a member and its addresses (``https`` unless ``tls=False``);
* :func:`etcd_command` is its command line (under ``ip netns exec NS`` when given a
  namespace), with the flags pyha relies on (docs/ETCD.md): with :class:`MemberTls`
  clients and peers must present a certificate of the cluster's CA
  (``--client-cert-auth``, ``--peer-client-cert-auth``);
* :func:`launch` starts it detached, output to a log file;
* :func:`member_status` asks it ``/v3/maintenance/status``; :func:`agreed_leader`
  names the member the given ones agree leads; :func:`member_requests` counts the
  requests it answered, by gRPC method (its ``/metrics``: ``bench idle``);
* :func:`stop_order` is the order a graceful stop takes (the leader last).
"""

from __future__ import annotations

import json
import shutil
import signal
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

from store.etcd_url import hostport

if TYPE_CHECKING:
    import ssl
    import subprocess

    from store.etcd_tls import TlsFiles

ETCD_BIN: Final = "etcd"
CLIENT_PORT: Final = 2379
PEER_PORT: Final = 2380
HEARTBEAT_MS: Final = 100
ELECTION_MS: Final = 1000
# A leader stopped last may try to hand over to peers that just left and wait for
# etcd's request timeout (7 s): it gets this much grace before SIGKILL, which is safe
# for etcd (an acknowledged write is in its fsynced WAL).
LAST_MEMBER_GRACE: Final = 1.0
_PR_SET_PDEATHSIG: Final = 1

K = TypeVar("K", bound=Hashable)


def etcd_available(binary: str = ETCD_BIN) -> bool:
    """True when the etcd server binary is on PATH (Debian: ``apt-get install etcd-server``)."""
    return shutil.which(binary) is not None


@dataclass(frozen=True)
class EtcdMember:
    """One etcd member: its name (in ``--initial-cluster``) and where it listens.

    ``tls``: its client and peer URLs are ``https`` (the command line then needs a
    :class:`MemberTls`); ``False`` only for plain-http setups given ``insecure``.
    """

    name: str
    host: str
    client_port: int = CLIENT_PORT
    peer_port: int = PEER_PORT
    tls: bool = True

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def endpoint(self) -> str:
        return hostport(self.host, self.client_port)

    @property
    def client_url(self) -> str:
        return f"{self.scheme}://{self.endpoint}"

    @property
    def peer_url(self) -> str:
        return f"{self.scheme}://{hostport(self.host, self.peer_port)}"


@dataclass(frozen=True)
class MemberTls:
    """A member's certificate (for its client port and towards its peers) and the CA that
    every client and peer certificate must be signed by."""

    files: TlsFiles

    def flags(self) -> list[str]:
        f = self.files
        return [
            "--client-cert-auth", "--trusted-ca-file", str(f.ca),
            "--cert-file", str(f.cert), "--key-file", str(f.key),
            "--peer-client-cert-auth", "--peer-trusted-ca-file", str(f.ca),
            "--peer-cert-file", str(f.cert), "--peer-key-file", str(f.key),
        ]  # fmt: skip


def initial_cluster(members: Sequence[EtcdMember]) -> str:
    """The ``--initial-cluster`` value: ``name=peer_url,...``."""
    return ",".join(f"{m.name}={m.peer_url}" for m in members)


def initial_state(data_dir: Path) -> str:
    """``existing`` once the member has written its data dir, else ``new``."""
    return "existing" if (data_dir / "member").exists() else "new"


def etcd_command(
    m: EtcdMember,
    *,
    data_dir: Path,
    initial: str,
    token: str,
    heartbeat_ms: int = HEARTBEAT_MS,
    election_ms: int = ELECTION_MS,
    netns: str | None = None,
    binary: str = ETCD_BIN,
    tls: MemberTls | None = None,
) -> list[str]:
    """The command line of member ``m`` (``initial``: see :func:`initial_cluster`).

    ``tls`` is required for an ``https`` member (``m.tls``) and refused for a plain one.
    """
    if m.tls != (tls is not None):
        raise ValueError(
            f"etcd member {m.name}: {m.scheme} URLs {'need' if m.tls else 'take no'} certificates"
        )
    cmd = [
        binary,
        "--name", m.name,
        "--data-dir", str(data_dir),
        "--listen-client-urls", m.client_url,
        "--advertise-client-urls", m.client_url,
        "--listen-peer-urls", m.peer_url,
        "--initial-advertise-peer-urls", m.peer_url,
        "--initial-cluster", initial,
        "--initial-cluster-token", token,
        "--initial-cluster-state", initial_state(data_dir),
        "--heartbeat-interval", str(heartbeat_ms),
        "--election-timeout", str(election_ms),
        # a member cut off and healed must not depose a working leader (default from 3.5 on)
        "--pre-vote=true",
        # every lease renewal is a new revision; pyha never reads old ones
        "--auto-compaction-mode", "revision",
        "--auto-compaction-retention", "10000",
        "--logger", "zap",
        "--log-level", "warn",
        *(tls.flags() if tls is not None else []),
    ]  # fmt: skip
    return ["ip", "netns", "exec", netns, *cmd] if netns else cmd


def _die_with_parent() -> Callable[[], None]:
    """A ``preexec_fn`` that has the kernel SIGKILL the child when this process dies."""
    import ctypes  # noqa: PLC0415 - test harnesses only; keeps the CLI's start-up light

    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here, not in the forked child

    def preexec() -> None:  # pragma: no cover - runs in the child between fork and exec
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)

    return preexec


def launch(
    cmd: list[str], log_path: Path, *, cwd: Path | None = None, die_with_parent: bool = False
) -> subprocess.Popen[bytes]:
    """Start a member in its own session, stdout and stderr appended to ``log_path``.

    ``die_with_parent``: the member gets SIGKILL when this process dies (test harnesses).
    """
    import subprocess  # noqa: PLC0415 - see member_status

    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=cwd,
            preexec_fn=_die_with_parent() if die_with_parent else None,  # noqa: PLW1509
        )


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def member_status(
    m: EtcdMember, timeout: float = 0.5, context: ssl.SSLContext | None = None
) -> dict[str, Any] | None:
    """The member's ``/v3/maintenance/status`` answer, or None when it does not answer.

    An ``https`` member is asked with ``context`` (a client certificate of its cluster:
    ``store.etcd_tls.client_context``); without one it counts as not answering.
    """
    import http.client  # noqa: PLC0415 - every CLI start imports this module (through admin.cluster)

    conn: http.client.HTTPConnection
    if m.tls:
        if context is None:
            return None
        conn = http.client.HTTPSConnection(m.host, m.client_port, timeout=timeout, context=context)
    else:
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


def member_requests(
    m: EtcdMember, timeout: float = 2.0, context: ssl.SSLContext | None = None
) -> dict[str, int] | None:
    """The requests the member answered since it started, by gRPC method (``Range``, ``Txn``,
    ``LeaseKeepAlive``, ``Watch``, ...), from its ``/metrics`` (``grpc_server_handled_total``,
    which the JSON gateway's calls go through too); None when it does not answer."""
    import http.client  # noqa: PLC0415 - see member_status

    conn: http.client.HTTPConnection
    if m.tls:
        if context is None:
            return None
        conn = http.client.HTTPSConnection(m.host, m.client_port, timeout=timeout, context=context)
    else:
        conn = http.client.HTTPConnection(m.host, m.client_port, timeout=timeout)
    try:
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        body = resp.read().decode(errors="replace")
        if resp.status != 200:
            return None
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()
    counts: dict[str, int] = {}
    for line in body.splitlines():
        if not line.startswith("grpc_server_handled_total{"):
            continue
        labels, _, value = line.rpartition(" ")
        method = labels.partition('grpc_method="')[2].partition('"')[0]
        if method:
            counts[method] = counts.get(method, 0) + int(float(value))
    return counts


def agreed_leader(statuses: Mapping[K, Mapping[str, Any] | None]) -> K | None:
    """The key of the member all ``statuses`` name as leader; None unless every one
    answered, names a leader, they agree, and the leader is among them."""
    ids: dict[str, K] = {}
    leaders: set[str] = set()
    for key, st in statuses.items():
        leader = str(st.get("leader", "0")) if st is not None else "0"
        if leader in ("0", ""):
            return None
        leaders.add(leader)
        header = st.get("header") if st is not None else None
        if isinstance(header, dict) and "member_id" in header:
            ids[str(header["member_id"])] = key
    if len(leaders) != 1:
        return None
    return ids.get(leaders.pop())


def stop_order(keys: Sequence[K], leader: K | None) -> list[K]:
    """Followers first, the leader last: a leader stopped together with its followers
    tries to hand its leadership over to members that are going away (seconds)."""
    return [k for k in keys if k != leader] + [k for k in keys if k == leader]
