"""A live migration's commit (the location move) with an unknown outcome is settled first.

Found in review: when the move's outcome was unknown (a store error), the
source resumed the guest here while the move could still land later; the
location then named the target while the guest ran here (no second copy, but
the service went to ``error`` with its guest running). Now the commit writes
the location here again (compare-and-swap) before the caller resumes the guest,
so a late move cannot land; if the location names the target already, the move
happened (actors/env.py ``MovingPlugin.migrate``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.env import LiveEnv, MovingPlugin
from admin.resources import add_resource
from ha.config.resources import ResourceConfig
from ha.errors import HaError
from store import records as rec
from store.dirstore import DirStore
from tests import envstubs


class LiveAgent:
    """A vm-like agent whose live migration calls the commit at its hand-over."""

    def __init__(self) -> None:
        self.outcome: list[str] = []

    def migrate_live(self, env: object, sid: str, conf: ResourceConfig, target: str, commit: object) -> bool:
        assert callable(commit)
        try:
            commit()
        except HaError:
            self.outcome.append("resumed here")
            return False
        self.outcome.append("resumed there")
        return True


def setup(tmp_path: Path) -> tuple[DirStore, LiveEnv, ResourceConfig]:
    store = DirStore(tmp_path)
    add_resource(store, "vm:100", {"node": "n1"}, envstubs.NODES)
    env = envstubs.live_env(store, daemon="lrm")
    rec.write_location(store, "vm:100", "n1")
    conf = env.read_service_config().services["vm:100"]
    return store, env, conf


def test_an_unknown_move_that_did_not_land_is_made_impossible(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, env, conf = setup(tmp_path)
    _, v0 = rec.read_location(store, "vm:100")
    real = LiveEnv.steal_service
    calls: list[tuple[str, str]] = []

    def steal(self: LiveEnv, sid: str, current: str, new: str) -> None:
        calls.append((current, new))
        if len(calls) == 1:
            raise HaError("moving service 'vm:100' to 'n2' failed: timed out")  # not landed (yet)
        real(self, sid, current, new)

    monkeypatch.setattr(LiveEnv, "steal_service", steal)
    agent = LiveAgent()
    assert not MovingPlugin(agent).migrate(env, "vm:100", conf, "n2", True)  # type: ignore[arg-type]
    assert agent.outcome == ["resumed here"]
    assert calls == [("n1", "n2"), ("n1", "n1")]
    node, v1 = rec.read_location(store, "vm:100")
    assert node == "n1" and v1 != v0  # a late compare-and-swap on v0 cannot land now
    with pytest.raises(HaError):
        rec.write_location(store, "vm:100", "n2", v0)


def test_an_unknown_move_that_landed_is_a_move(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store, env, conf = setup(tmp_path)
    real = LiveEnv.steal_service
    calls: list[tuple[str, str]] = []

    def steal(self: LiveEnv, sid: str, current: str, new: str) -> None:
        calls.append((current, new))
        if len(calls) == 1:
            real(self, sid, current, new)  # it landed, but its answer was lost
            raise HaError("moving service 'vm:100' to 'n2' failed: connection reset")
        real(self, sid, current, new)

    monkeypatch.setattr(LiveEnv, "steal_service", steal)
    agent = LiveAgent()
    assert MovingPlugin(agent).migrate(env, "vm:100", conf, "n2", True)  # type: ignore[arg-type]
    assert agent.outcome == ["resumed there"]
    assert rec.read_location(store, "vm:100")[0] == "n2"
