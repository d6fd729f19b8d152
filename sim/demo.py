"""``make demo`` (simulator edition): a 3-node cluster loses a node and its services fail over.

Runs the deterministic simulator on a built-in scenario, prints the log, and
then the failover timeline read off the simulation (virtual seconds, with the
reference's timings: 60 s fence delay, 120 s lock lifetime, 20 s rounds).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ha.config.datacenter import DatacenterConfig
from sim.runner import run_scenario
from sim.scenario import Scenario


def demo_scenario() -> Scenario:
    services = {
        "vm:100": {"node": "node1", "state": "started"},
        "vm:101": {"node": "node2", "state": "started"},
        "vm:102": {"node": "node3", "state": "started"},
        "ct:200": {"node": "node3", "state": "started"},
        "ct:201": {"node": "node3", "state": "started"},
    }
    return Scenario(
        path=Path("demo"),
        cmdlist=[["power node1 on", "power node2 on", "power node3 on"], ["power node3 off"]],
        hardware={n: {"power": "off", "network": "off"} for n in ("node1", "node2", "node3")},
        manager_status={},
        service_config=services,
        groups_text=None,
        rules_text=None,
        datacenter=DatacenterConfig(),
        datacenter_raw={},
    )


def main() -> int:
    t0 = time.perf_counter()
    sim = run_scenario(demo_scenario(), out=sys.stdout.write)
    wall = time.perf_counter() - t0

    def first(pattern: str) -> int | None:
        for line in sim.hw.lines:
            if pattern in line:
                return int(line.split()[1])
        return None

    killed = first("execute power node3 off")
    fenced = first("fencing: acknowledged - got agent lock for node 'node3'")
    started = [
        int(ln.split()[1]) for ln in sim.hw.lines if "lrm: service status" in ln and ln.split()[1] != "20"
    ]
    recovered = max((t for t in started if killed is not None and t > killed), default=None)
    print()
    print("failover timeline (virtual seconds, reference timing):")
    print(f"  node3 powered off              t={killed}")
    print(f"  node3 fenced (agent lock)      t={fenced}")
    print(f"  its services running again     t={recovered}")
    if killed is not None and recovered is not None:
        print(f"  failover took {recovered - killed} virtual seconds (the reference needs about 2 minutes)")
    ms = sim.hw.manager_status
    for sid in sorted(ms.service_status):
        sd = ms.service_status[sid]
        print(f"  {sid}: {sd.state} on {sd.node}")
    print(f"simulated {sim.hw.time} virtual seconds in {wall:.2f} s of wall time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
