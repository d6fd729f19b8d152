"""The bus as an attacker meets it (docs/SECURITY.md "Bus and API", issue #11).

Each test fails on the code before issue #11's bus work: the envelope did not
carry the key owner, client keys under ``keys/clients/`` were not loaded by
the bus, a revoked key kept working until the node restarted, idle
connections were held for 30 s and a flood of them exhausted the process's
file descriptors.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from bus.codec import Codec
from bus.keys import CurveKeys, generate
from bus.membership import Membership
from bus.messages import ApiReply, ApiRequest
from bus.transport import Transport
from tests.bus.conftest import FAST, Recorder, free_port

REPO = Path(__file__).resolve().parents[2]


class Client:
    """A CURVE DEALER with a client key, like a tool of docs/API.md."""

    def __init__(
        self, ctx: zmq.Context[zmq.Socket[bytes]], node: Transport, server_key: bytes, pair: Path
    ) -> None:
        keys = CurveKeys.load(pair.parent, pair.name.removesuffix(".key_secret"))
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.CURVE_SERVERKEY, server_key)
        self.sock.setsockopt(zmq.CURVE_PUBLICKEY, keys.public)
        self.sock.setsockopt(zmq.CURVE_SECRETKEY, keys.secret)
        self.sock.connect(node.endpoint)
        self.codec = Codec("test")
        self.n = 0

    def ask(self, timeout: float = 1.5) -> ApiReply | None:
        self.n += 1
        rid = f"r{self.n}"
        self.sock.send(self.codec.encode("tool", self.n, ApiRequest(rid, "info", {})))
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if self.sock.poll(int(left * 1000) + 1):
                body = self.codec.decode(self.sock.recv()).body
                if isinstance(body, ApiReply) and body.request_id == rid:
                    return body
        return None


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[Transport, Recorder, Path]]:
    """Member "a" of a one-node cluster, its own key directory with two client keys."""
    keys = tmp_path / "keys"
    generate(keys, "a")
    generate(keys / "clients" / "admin", "tool")
    generate(keys / "clients" / "readonly", "viewer")
    membership = Membership.of([("a", f"tcp://127.0.0.1:{free_port()}")])
    t = Transport("a", membership, cluster="test", keys=CurveKeys.load(keys, "a"), config=FAST)
    rec = Recorder()
    t.subscribe(rec, [ApiRequest])
    t.subscribe(lambda env: t.reply(env, ApiReply(env.body.request_id, True, env.user)), [ApiRequest])  # type: ignore[attr-defined]
    t.start()
    try:
        yield t, rec, keys
    finally:
        t.stop()


def test_the_envelope_carries_the_owner_of_the_clients_key(node: tuple[Transport, Recorder, Path]) -> None:
    t, rec, keys = node
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        server = CurveKeys.load(keys, "a").public
        admin = Client(ctx, t, server, keys / "clients" / "admin" / "tool.key_secret")
        viewer = Client(ctx, t, server, keys / "clients" / "readonly" / "viewer.key_secret")
        a, v = admin.ask(5), viewer.ask(5)
        assert a is not None and a.result == "admin/tool"
        assert v is not None and v.result == "readonly/viewer"
        # what the API reads the role from: the user on the envelope, whatever the sender claims
        assert {(e.sender, e.user) for e in rec.items} == {
            ("tool", "admin/tool"),
            ("tool", "readonly/viewer"),
        }
    finally:
        ctx.destroy(linger=0)


def test_a_revoked_key_is_refused_on_its_open_connection_and_on_a_new_one(
    node: tuple[Transport, Recorder, Path],
) -> None:
    t, rec, keys = node
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        server = CurveKeys.load(keys, "a").public
        pair = keys / "clients" / "admin" / "tool.key_secret"
        secret_copy = pair.read_bytes()
        open_conn = Client(ctx, t, server, pair)
        assert open_conn.ask(5) is not None  # works before
        (keys / "clients" / "admin" / "tool.key").unlink()  # what `ha-manager keyrevoke tool` does first
        time.sleep(1.3)  # the node re-reads a changed key directory at least once a second
        served = len(rec.items)
        assert open_conn.ask() is None, "a revoked key's open connection must be refused"
        pair.write_bytes(secret_copy)  # the client still has its secret: it tries again
        fresh = Client(ctx, t, server, pair)
        assert fresh.ask() is None, "a revoked key must be refused on a new connection"
        assert len(rec.items) == served  # nothing reached a subscriber
        assert t.stats().get("rejected.revoked_key", 0) >= 1
        assert t.stats().get("auth_denied", 0) >= 1
        # the other key is untouched
        other = Client(ctx, t, server, keys / "clients" / "readonly" / "viewer.key_secret")
        assert other.ask(5) is not None
    finally:
        ctx.destroy(linger=0)


def test_an_idle_connection_is_closed_after_the_handshake_timeout(
    node: tuple[Transport, Recorder, Path],
) -> None:
    t, _, _ = node
    port = int(t.endpoint.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        start = time.monotonic()
        got = b""
        while True:  # the server's greeting, then the end of the connection
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
        waited = time.monotonic() - start
    assert waited < 6, f"an idle connection was held for {waited:.1f}s"
    assert got.startswith(b"\xff")  # it was the ZMTP server, not a refusal at connect


# The flood: a node process whose descriptor limit is low (soft = hard = LIMIT),
# a bus transport with CURVE, and a lease renewed every 20 ms in a store on disk,
# as ha-node renews its lease. Before issue #11 its ROUTER accepted connections
# until the process had no descriptor left and the renewal failed with EMFILE.
LIMIT = 512
FLOOD = 600
CHILD = textwrap.dedent(
    """
    import json, resource, sys, threading, time
    resource.setrlimit(resource.RLIMIT_NOFILE, ({limit}, {limit}))
    from bus.keys import CurveKeys, generate
    from bus.membership import Membership
    from bus.transport import Transport, TransportConfig
    from store.dirstore import DirStore
    root = sys.argv[1]
    generate(root + "/keys", "a")
    t = Transport("a", Membership.of([("a", "tcp://127.0.0.1:0")]), cluster="test",
                  keys=CurveKeys.load(root + "/keys", "a"),
                  config=TransportConfig(heartbeat_interval=0.05, peer_timeout=0.3)).start()
    store = DirStore(root + "/store")
    failures, renewals = [], 0
    print(t.endpoint, flush=True)
    deadline = time.monotonic() + float(sys.argv[2])
    while time.monotonic() < deadline:
        try:
            store.acquire_lease("ha_agent_a_lock", "a", 5.0)
            renewals += 1
        except Exception as e:
            failures.append(repr(e)[:200])
        time.sleep(0.02)
    stats = t.stats()
    t.stop()
    report = {{"renewals": renewals, "failures": failures[:3], "nfail": len(failures), "stats": stats}}
    print(json.dumps(report))
    """
)


def test_a_flood_of_idle_connections_never_makes_a_renewal_fail(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD.format(limit=LIMIT), str(tmp_path), "6"],
        stdout=subprocess.PIPE, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    conns: list[socket.socket] = []
    try:
        assert child.stdout is not None
        endpoint = child.stdout.readline().strip()
        port = int(endpoint.rsplit(":", 1)[1])
        for _ in range(FLOOD):  # bounded, loopback only, closed below
            with contextlib.suppress(OSError):  # refused or timed out: the flood goes on
                conns.append(socket.create_connection(("127.0.0.1", port), timeout=2))
        time.sleep(2.0)  # idle, while the node renews
    finally:
        for s in conns:
            s.close()
    out, _ = child.communicate(timeout=30)
    report = json.loads(out.strip().splitlines()[-1])
    assert report["renewals"] > 50
    assert report["nfail"] == 0, report["failures"]
    refused = sum(v for k, v in report["stats"].items() if k.startswith("refused_connection."))
    assert refused > 0, report["stats"]  # the guard, not luck, kept the descriptors
