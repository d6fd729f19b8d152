"""Big clusters: the reference's loop limit is kept by default; ``--scale`` runs them to the end."""

from __future__ import annotations

import json
import subprocess
import sys

from bench.sim import generate
from sim.runner import RunOptions, run_scenario


def test_reference_limit_aborts_a_round_with_too_many_starts() -> None:
    sim = run_scenario(generate(20, 5000))
    assert sim.hw.lines[-1].startswith("err ")
    assert "exit simulation - loop take too long (" in sim.hw.lines[-1]


def test_scale_profile_runs_big_cluster_to_the_end() -> None:
    sim = run_scenario(generate(20, 5000), RunOptions(scale=True))
    assert sim.hw.lines[-1].endswith("hardware: exit simulation - done\n")
    ms = sim.hw.manager_status
    assert len(ms.service_status) == 5000
    # the last node lost its network: every service ends up started elsewhere
    assert all(sd.state == "started" and sd.node != "node20" for sd in ms.service_status.values())
    running = {sid for node, table in sim.hw.running.items() for sid, r in table.items() if r}
    assert len(running) == 5000


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
