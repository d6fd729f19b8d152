"""Shared pieces of the etcd store tests: a real etcd cluster per module, unique store URLs."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from store.etcd_harness import EtcdCluster, etcd_available


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
