"""Fixtures of the agent tests: plugins on temp state dirs and throwaway cgroups, always cleaned up."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from agents import procutil
from agents.proc import ProcPlugin
from tests.agents.helpers import TOKEN_VAR, kill_everything, remove_cgroup_tree
from tests.agents.vmnodes import Nodes, make_nodes


@pytest.fixture
def token(monkeypatch: pytest.MonkeyPatch) -> str:
    """Marks every process a test starts (services inherit our environment)."""
    tok = secrets.token_hex(8)
    monkeypatch.setenv(TOKEN_VAR, tok)
    return tok


@pytest.fixture
def cgroup_base() -> Iterator[Path]:
    mount = procutil.cgroup2_mount()
    assert mount is not None, "no cgroup v2 hierarchy mounted (need /sys/fs/cgroup or .../unified)"
    base = mount / f"pyha-test-{secrets.token_hex(4)}"
    base.mkdir()
    try:
        assert procutil.is_cgroup_dir(base), f"{base} is not a cgroup v2 directory"
        yield base
    finally:
        remove_cgroup_tree(base)
        assert not base.exists(), f"test cgroup {base} could not be removed"  # a leak must show


def _plugin(tmp_path: Path, cgroup_base: Path | None) -> ProcPlugin:
    return ProcPlugin(
        tmp_path / "state", cgroup_base=cgroup_base, start_timeout=5.0, settle=0.2, kill_wait=3.0
    )


@pytest.fixture
def proc(tmp_path: Path, cgroup_base: Path, token: str) -> Iterator[ProcPlugin]:
    """A proc plugin using cgroups."""
    plugin = _plugin(tmp_path, cgroup_base)
    try:
        yield plugin
    finally:
        kill_everything(plugin, token)


@pytest.fixture
def proc_nocg(tmp_path: Path, token: str) -> Iterator[ProcPlugin]:
    """A proc plugin limited to process groups (no cgroup)."""
    plugin = _plugin(tmp_path, None)
    try:
        yield plugin
    finally:
        kill_everything(plugin, token)


@pytest.fixture
def nodes(tmp_path: Path, cgroup_base: Path, token: str) -> Iterator[Nodes]:
    """Two vm plugins as nodes ``n1`` and ``n2`` of one host (tests/agents/vmnodes.py)."""
    yield from make_nodes(tmp_path, cgroup_base, token)
