"""Shared pieces of the etcd store tests: a real etcd cluster per module, unique store URLs."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

from store.etcd_harness import EtcdCluster, etcd_available
from tests.store.helpers import REPO


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


def etcd_worker(*args: str) -> subprocess.Popen[str]:
    """Like ``tests.store.helpers.worker`` but able to open ``etcd://`` URLs."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen(
        [sys.executable, "-m", "tests.store.etcd_worker", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
