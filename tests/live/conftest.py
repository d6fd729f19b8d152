"""Fixtures of the live tests: a real local cluster, always torn down, checked for double runs."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from bench.livecluster import LiveCluster


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, None]:
    """A failed live test carries what the cluster said: status and each node's log tail.

    A flake on a loaded CI host is otherwise a bare timeout; with this the
    report names which daemon was late or what the master decided.
    """
    outcome = yield
    rep = outcome.get_result()
    if rep.when != "call" or not rep.failed:
        return
    funcargs = getattr(item, "funcargs", {})
    for c in funcargs.values():
        if not isinstance(c, LiveCluster):
            continue
        try:
            rep.sections.append(("live cluster at failure", c.diagnostics()))
        except Exception as e:
            rep.sections.append(("live cluster at failure", f"(no diagnostics: {e!r})"))


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LiveCluster]:
    """A 3-node dir-store cluster; at the end no service may have run on two nodes at once."""
    c = LiveCluster(tmp_path)
    try:
        yield c
        assert c.overlaps() == [], "a service ran on two nodes at once"
    finally:
        c.close()
