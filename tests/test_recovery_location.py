"""A recovery whose service's location moved under a master that died (ha/manager.py).

Found in a 20-node live run (issue #15): a master moved a fenced node's service
to a recovery node, then died before its manager_status write; the next master
chose another node, its steal was refused ("is on node X, not on Y") on every
round, and that error ended every round: no service anywhere was managed any
more. Here the simulator plays it: just before a recovery, the location is
moved as that dead master left it.
"""

from __future__ import annotations

import pytest

from bench.sim import generate
from ha.manager import Manager
from sim.env import SimEnv
from sim.runner import run_scenario


def run_with_orphan_move(
    monkeypatch: pytest.MonkeyPatch, nodes: int, sid: str, to: str, extra: list[str]
) -> list[str]:
    """bench.sim's generated cluster: the last node's network is cut; ``sid`` runs there."""
    original = Manager.next_state_recovery
    moving, moved = sid, list[str]()

    def recovery(self: Manager, sid: str, *args: object) -> None:
        env = self.env
        assert isinstance(env, SimEnv)
        if sid == moving and not moved:
            env.hardware.service_raw[sid]["node"] = to  # a dead master's steal
            moved.append(to)
        original(self, sid, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(Manager, "next_state_recovery", recovery)
    scenario = generate(nodes, nodes)
    scenario.cmdlist[-1] += extra
    lines: list[str] = []
    sim = run_scenario(scenario, out=lines.append)
    assert moved, "no recovery happened"
    assert sim.hw.service_raw[sid]["node"] != f"node{nodes}"
    return lines


def test_recovered_to_its_location_when_that_node_is_up(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = run_with_orphan_move(monkeypatch, 4, "ct:103", "node1", [])
    text = "\n".join(lines)
    assert "got unexpected error" not in text
    assert "recover service 'ct:103' from fenced node 'node4' to node 'node1' (its location)" in text
    assert "service 'ct:103': state changed from 'recovery' to 'started'  (node = node1)" in text


def test_moved_on_only_after_the_location_node_was_fenced(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = run_with_orphan_move(monkeypatch, 5, "vm:104", "node2", ["power node2 off"])
    text = "\n".join(lines)
    assert "got unexpected error" not in text
    at = text.index("service 'vm:104' is located on node 'node2'")
    recovered = text.index("recover service 'vm:104' from fenced node 'node2' to node ")
    # SAFETY: node2 runs nothing before the service leaves it: the master got its agent lock first
    fenced = text.rindex("fencing: acknowledged - got agent lock for node 'node2'", 0, recovered)
    assert fenced < recovered and at < recovered
    assert text.count("service 'vm:104' is located on node 'node2'") == 1  # said once, not every round
