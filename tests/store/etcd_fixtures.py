"""Shared pieces of the etcd store tests: a real etcd cluster per module, unique store URLs."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from store.etcd_harness import EtcdCluster, etcd_available
from store.etcdstore import EtcdStore


def need_etcd() -> None:
    """A real etcd is required (``make deps`` installs Debian's etcd-server): fail, never skip."""
    if not etcd_available():
        pytest.fail("etcd not installed: run 'make deps' (installs the Debian package etcd-server)")


def cluster_fixture(size: int = 3, **kwargs: object) -> Iterator[EtcdCluster]:
    """Start a cluster for a fixture; stopped (processes reaped, dirs removed) even on failure."""
    need_etcd()
    c = EtcdCluster(size, die_with_parent=True, **kwargs)  # type: ignore[arg-type]
    try:
        c.start()
        yield c
    finally:
        c.stop(graceful=False)


def unique_cluster_name() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


class Counting:
    """Counts the store's requests to etcd (the gateway's calls)."""

    def __init__(self, st: EtcdStore) -> None:
        self.paths: list[str] = []
        inner = st._gw.call

        def call(path: str, body: dict[str, Any], **kw: Any) -> dict[str, Any]:
            self.paths.append(path)
            return inner(path, body, **kw)

        st._gw.call = call  # type: ignore[method-assign]
