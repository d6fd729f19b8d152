"""Fixtures of the live tests: a real local cluster, always torn down, checked for double runs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.livecluster import LiveCluster


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LiveCluster]:
    """A 3-node dir-store cluster; at the end no service may have run on two nodes at once."""
    c = LiveCluster(tmp_path)
    try:
        yield c
        assert c.overlaps() == [], "a service ran on two nodes at once"
    finally:
        c.close()
