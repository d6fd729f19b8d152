"""The etcd store's view of etcd's answers: key-values, transaction results, lease values.

Helpers of ``store/etcdstore.py`` (the gateway's JSON, decoded).
"""

from __future__ import annotations

import builtins
import json
import math
from dataclasses import dataclass
from typing import Any

from store.etcd_gateway import unb64


@dataclass(frozen=True, slots=True)
class Kv:
    key: bytes
    value: bytes
    mod: int
    lease: int

    @staticmethod
    def parse(d: dict[str, Any]) -> Kv:
        return Kv(
            unb64(d.get("key")),
            unb64(d.get("value")),
            int(d.get("mod_revision", 0)),
            int(d.get("lease", 0)),
        )


@dataclass(frozen=True, slots=True)
class Held:
    """A lease this client wrote: the revision and when the write was sent."""

    holder: str
    mod: int
    t_send: float
    ttl: float


@dataclass(frozen=True, slots=True)
class Backstop:
    """An etcd lease of ours; the server keeps it at least until ``bound`` (our clock)."""

    lease_id: int
    ttl: int
    bound: float


def parse_kvs(resp: dict[str, Any]) -> builtins.list[Kv]:
    return [Kv.parse(k) for k in resp.get("kvs", []) or []]


def range_in(txn_resp: dict[str, Any], i: int = 0) -> builtins.list[Kv]:
    responses = txn_resp.get("responses", []) or []
    if i >= len(responses):
        return []
    return parse_kvs(responses[i].get("response_range", {}) or {})


def revision_of(resp: dict[str, Any]) -> int:
    return int((resp.get("header") or {}).get("revision", 0))


def lease_value(data: bytes) -> tuple[str, float]:
    """(holder, ttl) of a lease key; a garbled one counts as held for a long time by nobody known."""
    try:
        d = json.loads(data)
        holder, ttl = d["holder"], float(d["ttl"])
        if isinstance(holder, str) and holder and ttl > 0 and math.isfinite(ttl):
            return holder, ttl
    except (ValueError, KeyError, TypeError):
        pass
    return "", 60.0
