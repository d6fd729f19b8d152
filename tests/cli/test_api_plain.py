"""docs/API.md is enough for a client: this one uses plain pyzmq and msgpack only.

The client code below imports nothing from the project (the ``cluster``
fixture only starts the nodes): it reads ``cluster.json`` and the key files
as documented, speaks the envelope of docs/PROTOCOL.md, and subscribes to
the event stream.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest
import zmq

from tests.cli.conftest import Cluster

pytestmark = pytest.mark.timeout(60)


# ---- a complete client in ~40 lines -------------------------------------------------------------


def read_key(path: Path) -> dict[str, bytes]:
    keys = {}
    for line in path.read_text().splitlines():
        name, eq, value = line.strip().partition("=")
        if eq and name.strip() in ("public-key", "secret-key"):
            keys[name.strip()] = value.strip().strip('"').encode()
    return keys


class PlainClient:
    def __init__(self, cluster_dir: Path, node: str, role: str = "admin") -> None:
        conf = json.loads((cluster_dir / "cluster.json").read_text())
        self.cluster_id = conf["cluster"]
        keys = cluster_dir / "keys"
        secret_file = keys / "clients" / role / f"{role}.key_secret"  # made by `ha-cluster init`
        mine = read_key(secret_file)
        self.server = read_key(keys / f"{node}.key")["public-key"]
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.CURVE_SERVERKEY, self.server)
        self.sock.setsockopt(zmq.CURVE_PUBLICKEY, mine["public-key"])
        self.sock.setsockopt(zmq.CURVE_SECRETKEY, mine["secret-key"])
        self.sock.connect(conf["nodes"][node]["endpoint"])
        self.mine = mine
        self.msg_id = 0

    def call(self, op: str, args: dict[str, Any] | None = None, timeout: float = 5.0) -> dict[str, Any]:
        self.msg_id += 1
        rid = uuid.uuid4().hex
        env = {"v": 1, "c": self.cluster_id, "s": "plain-client", "k": "api_request", "i": self.msg_id,
               "p": {"request_id": rid, "op": op, "args": args or {}}}  # fmt: skip
        self.sock.send(msgpack.packb(env))
        deadline = time.monotonic() + timeout
        while self.sock.poll(max(1, int((deadline - time.monotonic()) * 1000))):
            reply = msgpack.unpackb(self.sock.recv())
            if reply["k"] == "api_reply" and reply["p"]["request_id"] == rid:
                assert set(reply) == {"v", "c", "s", "k", "i", "p"} and reply["v"] == 1
                return dict(reply["p"])
        raise TimeoutError(op)

    def subscribe(self, endpoint: str) -> zmq.Socket[bytes]:
        sub = self.ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.CURVE_SERVERKEY, self.server)
        sub.setsockopt(zmq.CURVE_PUBLICKEY, self.mine["public-key"])
        sub.setsockopt(zmq.CURVE_SECRETKEY, self.mine["secret-key"])
        sub.setsockopt(zmq.SUBSCRIBE, b"service")
        sub.connect(endpoint)
        return sub

    def close(self) -> None:
        self.ctx.destroy(linger=0)


# ---- the tests ---------------------------------------------------------------------------------------


def test_plain_client_reads_writes_and_gets_documented_errors(cluster: Cluster) -> None:
    c = PlainClient(cluster.dir, "node2")
    try:
        info = c.call("info")
        assert info["ok"] and info["error"] is None
        assert info["result"]["node"] == "node2" and info["result"]["api_version"] == 1
        assert info["result"]["ops"]["status"] == "read" and info["result"]["ops"]["add"] == "admin"

        st = c.call("status")["result"]
        assert st["lines"][0]["text"] == "quorum OK"
        assert [ln["type"] for ln in st["lines"]][:3] == ["quorum", "master", "fencing"]

        digest = c.call("config")["result"]["digest"]
        opts = {"node": "node1", "cmd": "sleep 600", "state": "stopped", "max_restart": 3}
        added = c.call("add", {"sid": "proc:plain", "options": opts})
        assert added["ok"] and added["result"]["resource"]["max_restart"] == 3

        stale = c.call("set", {"sid": "proc:plain", "options": {"comment": "x"}, "digest": digest})
        assert stale["ok"] is False and "digest mismatch" in stale["error"]
        assert stale["result"] == {"code": 5, "reason": "conflict", "details": []}
        missing = c.call("remove", {"sid": "proc:nothere"})
        assert (
            not missing["ok"]
            and missing["result"]["code"] == 3
            and missing["result"]["reason"] == "not_found"
        )
        bad = c.call("set", {"sid": "proc:plain", "options": {"state": "bogus"}})
        assert bad["result"]["reason"] == "usage" and "invalid value 'bogus'" in bad["error"]
        unknown = c.call("frobnicate")
        assert unknown["result"]["code"] == 2 and "unknown operation" in unknown["error"]
        wrong_arg = c.call("status", {"verbose": "yes please"})
        assert wrong_arg["result"]["code"] == 2

        # events: a change made through the API shows up on the node's PUB socket
        sub = c.subscribe(info["result"]["events"])
        time.sleep(0.3)  # let the subscription reach the publisher
        assert c.call("set", {"sid": "proc:plain", "options": {"state": "started"}})["ok"]
        seen: list[dict[str, Any]] = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(e.get("state") == "started" for e in seen):
            if sub.poll(200):
                topic, body = sub.recv_multipart()
                ev = msgpack.unpackb(body)
                assert topic == b"service" and ev["type"] == "service" and ev["v"] == 1
                if ev["sid"] == "proc:plain":
                    seen.append(ev)
        assert seen and seen[-1]["state"] == "started" and seen[-1]["node"] == "node1", seen
        assert all(e["source"] == "node2" and e["cluster"] == c.cluster_id for e in seen)

        assert c.call("set", {"sid": "proc:plain", "options": {"state": "disabled"}})["ok"]
        assert c.call("remove", {"sid": "proc:plain"})["ok"]
    finally:
        c.close()


def test_plain_readonly_client_is_refused_writes(cluster: Cluster) -> None:
    c = PlainClient(cluster.dir, "node3", role="readonly")
    try:
        assert c.call("status")["ok"]
        r = c.call("crm_command", {"cmd": "arm-ha"})
        assert not r["ok"] and r["result"]["code"] == 7 and r["result"]["reason"] == "forbidden"
        assert "read-only" in r["error"]
    finally:
        c.close()
