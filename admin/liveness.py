"""Proof of life for ``ha-manager status`` on a live cluster (issue #17).

The reference's daemons rewrite ``manager_status`` and every ``lrm_status``
each 10 s round, so the records' ``timestamp`` says who is alive: ``status``
prints a daemon whose record is older than 30 s as ``old timestamp - dead?``
(BEHAVIOUR.md §8, ha/status.py). Ours write a record only when it changed, so at
rest the records grow old while their writers are well. The status lines are
still made by the reference's rule, from a timestamp that is the latest proof
of life of the record's writer:

* the master: the manager lease, held by the master the record names, was last
  renewed ``lease_ttl - remaining`` seconds ago (only a live master renews it);
* an LRM holding its agent lease (``active``, ``maintenance``): that lease's last
  renewal, made by the LRM's own loop;
* an idle LRM (``wait_for_agent_lock``, it holds no lease): the last message
  the answering node had from that node over the bus (its heartbeats), or now
  for the answering node itself.

An LRM in any other state, or a daemon without such proof (a stopped cluster,
offline status), keeps its record's timestamp and so reads ``dead?`` after 30 s
as before. The verbose status shows the records as written.

Lease ages need a store that knows them: the dir store keeps each lease's expiry
(written by its holder), a running node's etcd store learns each renewal from its
watch. A fresh etcd client (offline status) sees every lease as renewed just
now, so offline status on etcd passes no ``lease_ttl`` and takes no lease as proof.
(A node that just started may likewise count a lease as fresh for one lease term.)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

from ha.records import LrmStatus, ManagerStatus
from ha.states import LrmState
from store import records as rec
from store.base import LeaseInfo, Store


def holder_node(holder: str) -> str:
    """The node of a lease holder (``node#instance``, or a bare node name)."""
    return holder.partition("#")[0]


def renewed_at(info: LeaseInfo | None, node: str | None, now: float, lease_ttl: float | None) -> float | None:
    """When ``node`` last renewed the lease ``info`` (None: it does not hold it)."""
    if info is None or node is None or lease_ttl is None or holder_node(info.holder) != node:
        return None  # lease_ttl None: the store cannot tell when a lease was renewed (see below)
    return min(now, now - (lease_ttl - info.remaining))


def _later(ts: float | None, alive: float | None) -> float | None:
    if alive is None:
        return ts
    return alive if ts is None else max(ts, alive)


def with_proof_of_life(
    store: Store,
    ms: ManagerStatus,
    lrm: Mapping[str, LrmStatus | None],
    *,
    now: float,
    lease_ttl: float | None,
    seen: Callable[[str], float | None],
) -> tuple[ManagerStatus, dict[str, LrmStatus | None]]:
    """``ms`` and ``lrm`` with each timestamp moved to its writer's latest proof of life."""
    if ms.master_node is not None:
        alive = renewed_at(store.lease_info(rec.MANAGER_LEASE), ms.master_node, now, lease_ttl)
        if alive is not None:
            ms = dataclasses.replace(ms, timestamp=_later(ms.timestamp, alive))
    out: dict[str, LrmStatus | None] = {}
    for node, ls in lrm.items():
        if ls is None:
            out[node] = None
            continue
        alive = renewed_at(store.lease_info(rec.agent_lease(node)), node, now, lease_ttl)
        if alive is None and ls.state == LrmState.WAIT_FOR_AGENT_LOCK:
            alive = seen(node)
        out[node] = ls if alive is None else dataclasses.replace(ls, timestamp=_later(ls.timestamp, alive))
    return ms, out
