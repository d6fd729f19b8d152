"""Big clusters: the reference's loop limit is kept by default; ``--scale`` runs them to the end,
with the nodes of a round working in parallel virtual time (issue #15)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from itertools import pairwise

from bench.sim import generate
from sim.fuzz import check_single_location
from sim.hardware import Hardware
from sim.runner import PARALLEL_ROUND, Observer, RunOptions, Simulation, run_scenario

FENCED = re.compile(r"fencing: acknowledged - got agent lock for node '([^']+)'")


def test_reference_limit_aborts_a_round_with_too_many_starts() -> None:
    sim = run_scenario(generate(20, 5000))
    assert sim.hw.lines[-1].startswith("err ")
    assert "exit simulation - loop take too long (" in sim.hw.lines[-1]


def test_reference_mode_refuses_a_round_longer_than_the_timeouts() -> None:
    sim = run_scenario(generate(30, 60))
    assert sim.hw.lines[-1].endswith(
        "exit simulation - unable to simulate so many nodes. You need to increase watchdog/lock timeouts. \n"
    )


def test_scale_profile_runs_big_cluster_to_the_end() -> None:
    sim = run_scenario(generate(20, 5000), RunOptions(scale=True))
    assert sim.hw.lines[-1].endswith("hardware: exit simulation - done\n")
    ms = sim.hw.manager_status
    assert len(ms.service_status) == 5000
    # the last node lost its network: every service ends up started elsewhere
    assert all(sd.state == "started" and sd.node != "node20" for sd in ms.service_status.values())
    running = {sid for node, table in sim.hw.running.items() for sid, r in table.items() if r}
    assert len(running) == 5000


def test_scale_failover_fences_exactly_the_cut_node() -> None:
    """40 nodes: a sequential round (2 s per node) would outlast the 60 s watchdog and every node
    would be reset; in parallel virtual time only the cut node is fenced and its services move."""
    nodes, services = 40, 3000
    scenario = generate(nodes, services)
    cut = f"node{nodes}"
    on_cut = {sid for sid, cd in scenario.service_config.items() if cd["node"] == cut}
    assert len(on_cut) == services // nodes
    double: list[str] = []
    checked_at: list[int] = []

    def after_step(hw: Hardware) -> None:
        # once per round (the clock moves only between rounds): a second copy would run until
        # the node is fenced, rounds later (the fuzzer's large profile checks every step)
        if not checked_at or checked_at[-1] != hw.time:
            checked_at.append(hw.time)
            double.extend(check_single_location(hw.running))

    sim = Simulation(scenario, RunOptions(scale=True), observer=Observer(after_step=after_step))
    sim.run()
    hw = sim.hw
    assert hw.lines[-1].endswith("hardware: exit simulation - done\n")
    assert not double, double[:3]
    assert check_single_location(hw.running) == [] and len(checked_at) == sim.rounds
    fenced = [m.group(1) for line in hw.lines if (m := FENCED.search(line)) and "SUCCEED" not in line]
    assert fenced == [cut]
    # the cut node's watchdog reset it; no other node lost its agent lock or was reset
    resets = [line for line in hw.lines if "stopped by poweroff (watchdog)" in line]
    assert len(resets) == 1 and f"server '{cut}'" in resets[0]
    assert not [line for line in hw.lines if "lost_agent_lock" in line and f"{cut}/lrm" not in line]
    assert [n for n, d in hw.nodes.items() if d.power == "off"] == [cut]
    ss = hw.manager_status.service_status
    assert all(ss[sid].state == "started" and ss[sid].node != cut for sid in on_cut)
    assert all(sd.state == "started" for sd in ss.values())
    where = {sid: node for node, table in hw.running.items() for sid, r in table.items() if r}
    assert len(where) == services
    assert all(where[sid] == ss[sid].node for sid in ss)


def _round_lengths(nodes: int) -> set[int]:
    """The virtual length of every round of a generated failover run in scale mode."""
    sim = Simulation(generate(nodes, nodes), RunOptions(scale=True))
    starts: list[int] = []

    def after_step(hw: Hardware) -> None:
        if not starts or hw.time != starts[-1]:
            starts.append(hw.time)

    sim.observer.after_step = after_step
    sim.run()
    assert sim.hw.lines[-1].endswith("hardware: exit simulation - done\n")
    return {b - a for a, b in pairwise(starts)}


def test_scale_round_length_does_not_grow_with_node_count() -> None:
    """The old failure's cause: a round lasting 2 s per node (BEHAVIOUR.md §9.4) outlasts the
    lock and watchdog timeouts at 60+ nodes. In scale mode a round lasts the same for any size."""
    assert _round_lengths(5) == _round_lengths(80) == {PARALLEL_ROUND}


def test_scale_round_runs_every_daemon_at_the_round_instant() -> None:
    sim = run_scenario(generate(30, 300), RunOptions(scale=True))
    stamps: dict[str, set[int]] = {}
    for line in sim.hw.lines:
        _, t, ident = line.split()[:3]
        if ident.endswith("/lrm:") and "status change wait_for_agent_lock => active" in line:
            stamps.setdefault(ident, set()).add(int(t))
    # every LRM got its agent lock in the same round, at the same instant
    firsts = {min(ts) for ts in stamps.values()}
    assert len(stamps) == 30 and len(firsts) == 1, firsts


def test_bench_sim_quick_prints_json_last() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench", "sim", "--quick", "--json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    data = json.loads(out.strip().splitlines()[-1])
    assert [r["services"] for r in data["simulations"]] == [30, 200]
    assert all(r["finished"] for r in data["simulations"])
    assert data["manager_rounds"][0]["recovered"] == 100
    fo = data["scale_failover"]
    assert fo["finished"] and fo["nodes"] >= 40
    assert fo["nodes_fenced"] == 1 and fo["fenced"] == [f"node{fo['nodes']}"]
    assert fo["services_recovered"] == fo["services_on_cut_node"] == fo["services"] // fo["nodes"]
    assert fo["double_runs"] == 0 and fo["watchdog_resets"] == 1
    assert fo["peak_rss_mib"] > 0 and fo["wall_s"] > 0
