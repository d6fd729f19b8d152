"""Simulator and manager-round benchmark: ``python -m bench sim [--json] [--quick]``.

1. Whole simulations of generated scenarios (nodes/services: 3/30, 5/200,
   10/1000, 20/5000): all nodes power on, services start, one node fails
   (network cut) and its services are fenced and recovered, the run ends
   500 s after the last command. Wall time and peak memory, each in a fresh
   process so the peaks do not mix. 20/5000 needs ``--scale`` (the
   reference aborts it: more than 150 starts in one LRM round).
2. The scale failover (issue #15): 100 nodes / 20,000 services (``--quick``: 40 / 400) in
   scale mode (nodes in parallel virtual time), the last node's network cut. Wall time,
   peak RSS, the nodes fenced (must be exactly the cut one), the services recovered, a
   service never running on two nodes, and the time of the master's iterations (its
   manager rounds) and of the other nodes' LRM iterations. In a fresh process.
3. One Manager round in isolation on an in-memory Env: a steady round (no
   state changes) and a round that recovers every service of a fenced node,
   for 1,000 services on 10 nodes and 10,000 services on 100 nodes, with each
   scheduler: ``basic``, ``static`` and ``dynamic`` (TOPSIS start scoring for
   every recovered service; 64 CPUs / 512 GiB nodes, 1-4 CPUs / 1-8 GiB services).
   Wall time, and the process's CPU time (steadier while other work runs).

The last line is one JSON object with every number.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ha.config.datacenter import DatacenterConfig
from ha.config.groups import GroupConfig
from ha.config.resources import ResourceConfig, ServiceConfig
from ha.config.rules import RulesConfig
from ha.crs.stats import GuestInfo, NodeStats, ServiceStats
from ha.env import NodeInfo, ResourcePlugin
from ha.manager import Manager
from ha.records import LrmResult, LrmStatus, ManagerStatus, ServiceData
from sim.fuzz import check_single_location
from sim.hardware import Hardware
from sim.runner import Observer, RunOptions, Simulation, run_scenario
from sim.scenario import Scenario

SIZES = [(3, 30), (5, 200), (10, 1000), (20, 5000)]
QUICK_SIZES = [(3, 30), (5, 200)]
ROUND_SIZES = [(10, 1000), (100, 10000)]
SCALE_FAILOVER = (100, 20000)
QUICK_SCALE_FAILOVER = (40, 400)
ROUND_MODES = ("basic", "static", "dynamic")
GIB = 1024**3
# the reference's own simulator on these sizes (issue #2): seconds
REFERENCE_SECONDS = {"3/30": 0.7, "5/200": 5.0, "10/1000": 110.0}


def generate(nodes: int, services: int) -> Scenario:
    names = [f"node{i}" for i in range(1, nodes + 1)]
    config: dict[str, dict[str, Any]] = {}
    for i in range(services):
        kind = "vm" if i % 3 else "ct"
        config[f"{kind}:{100 + i}"] = {"node": names[i % nodes], "state": "started"}
    cmdlist = [[f"power {n} on" for n in names], [f"network {names[-1]} off"]]
    return Scenario(
        path=Path("."),
        cmdlist=cmdlist,
        hardware={n: {"power": "off", "network": "off"} for n in names},
        manager_status={},
        service_config=config,
        groups_text=None,
        rules_text=None,
        datacenter=DatacenterConfig(),
        datacenter_raw={},
    )


def run_one(nodes: int, services: int) -> dict[str, Any]:
    """Run one generated scenario in this process; returns wall time and peak RSS."""
    scenario = generate(nodes, services)
    scale = services // nodes > 140
    t0 = time.perf_counter()
    sim = run_scenario(scenario, RunOptions(scale=scale))
    wall = time.perf_counter() - t0
    last = sim.hw.lines[-1]
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "nodes": nodes,
        "services": services,
        "scale": scale,
        "wall_s": round(wall, 3),
        "peak_rss_mib": round(peak_kib / 1024, 1),
        "virtual_s": sim.hw.time,
        "log_lines": len(sim.hw.lines),
        "finished": "exit simulation - done" in last,
    }


_FENCED = re.compile(r": fencing: acknowledged - got agent lock for node '([^']+)'")


class _TimedSimulation(Simulation):
    """Times each daemon iteration: the master's CRM (its manager round) and the other LRMs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.master_ms: list[float] = []
        self.lrm_ms: list[float] = []

    def _run_crm(self, name: str) -> None:
        crm = self.hw.nodes[name].crm
        master = crm is not None and crm.state == "master"
        t0 = time.perf_counter()
        super()._run_crm(name)
        if master:
            self.master_ms.append((time.perf_counter() - t0) * 1000)

    def _run_lrm(self, name: str) -> None:
        t0 = time.perf_counter()
        super()._run_lrm(name)
        self.lrm_ms.append((time.perf_counter() - t0) * 1000)


def run_scale_failover(nodes: int, services: int) -> dict[str, Any]:
    """The scale failover in this process (see the module docstring, 2.)."""
    scenario = generate(nodes, services)
    cut = f"node{nodes}"
    on_cut = {sid for sid, cd in scenario.service_config.items() if cd["node"] == cut}
    doubles = 0
    checked_at: list[int] = []

    def after_step(hw: Hardware) -> None:
        # once per round: the clock moves only between rounds in scale mode
        nonlocal doubles
        if not checked_at or checked_at[-1] != hw.time:
            checked_at.append(hw.time)
            doubles += len(check_single_location(hw.running))

    t0 = time.perf_counter()
    c0 = time.process_time()
    sim = _TimedSimulation(scenario, RunOptions(scale=True), observer=Observer(after_step=after_step))
    sim.run()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    hw = sim.hw
    doubles += len(check_single_location(hw.running))
    fenced = sorted({m.group(1) for line in hw.lines if (m := _FENCED.search(line))})
    ss = hw.manager_status.service_status
    running_on = {sid: node for node, table in hw.running.items() for sid, r in table.items() if r}
    recovered = sum(
        1
        for sid in on_cut
        if ss[sid].state == "started" and ss[sid].node != cut and running_on.get(sid) == ss[sid].node
    )
    return {
        "nodes": nodes,
        "services": services,
        "scale": True,
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "peak_rss_mib": round(peak_kib / 1024, 1),
        "virtual_s": hw.time,
        "rounds": sim.rounds,
        "virtual_round_s": round(hw.time / sim.rounds, 1) if sim.rounds else None,
        "finished": "exit simulation - done" in hw.lines[-1],
        "fenced": fenced,
        "nodes_fenced": len(fenced),
        "watchdog_resets": sum(1 for line in hw.lines if "stopped by poweroff (watchdog)" in line),
        "services_on_cut_node": len(on_cut),
        "services_recovered": recovered,
        "services_running": len(running_on),
        "double_runs": doubles,
        "master_round_ms_median": round(statistics.median(sim.master_ms), 1),
        "master_round_ms_max": round(max(sim.master_ms), 1),
        "lrm_round_ms_median": round(statistics.median(sim.lrm_ms), 2),
    }


# --- a manager round on an in-memory Env -------------------------------------------------


class RoundEnv:
    """Just enough of the Env port to run ``Manager.manage()`` with no I/O."""

    migrate_groups = True  # as the simulator (§5.14)

    def __init__(
        self, nodes: list[str], conf: ServiceConfig, ms: ManagerStatus, crs_mode: str = "basic"
    ) -> None:
        self.nodes = nodes
        self.crs_mode = crs_mode
        self._service_stats: dict[str, ServiceStats] | None = None
        self.online = dict.fromkeys(nodes, True)
        self.conf = conf
        self.ms = ms
        self.lrm: dict[str, LrmStatus] = {n: LrmStatus(state="active", mode="active") for n in nodes}
        self.now = 1000.0
        self.log_lines = 0
        self.agent_locks_free = True

    def nodename(self) -> str:
        return self.nodes[0]

    def get_time(self) -> float:
        return self.now

    def log(self, level: str, msg: str) -> None:
        self.log_lines += 1

    def send_notification(self, prefix: str, text: str, node: str) -> None:
        self.log_lines += 1

    def sleep(self, seconds: float) -> None:
        pass

    def sleep_until(self, when: float) -> None:
        pass

    def loop_start_hook(self) -> None:
        pass

    def loop_end_hook(self) -> None:
        pass

    def cluster_state_update(self) -> bool:
        return True

    def quorate(self) -> bool:
        return True

    def get_node_info(self) -> tuple[dict[str, NodeInfo], bool]:
        return {n: NodeInfo(o) for n, o in self.online.items()}, True

    def get_node_last_seen(self, node: str) -> float | None:
        return None

    def is_node_shutdown(self) -> tuple[bool, bool]:
        return False, False

    def get_node_version(self, node: str) -> str | None:
        return "9.0.0"

    def read_manager_status(self) -> ManagerStatus:
        return self.ms

    def write_manager_status(self, ms: ManagerStatus) -> None:
        pass

    def read_lrm_status(self, node: str) -> LrmStatus:
        return self.lrm[node]

    def write_lrm_status(self, status: LrmStatus) -> None:
        pass

    def read_crm_commands(self) -> str:
        return ""

    def any_pending_crm_command(self) -> bool:
        return False

    def read_service_config(self) -> ServiceConfig:
        return self.conf

    def update_service_config(self, sid: str, changes: dict[str, object], delete: list[str]) -> None:
        pass

    def write_service_config(self, conf: ServiceConfig) -> None:
        pass

    def read_group_config(self) -> GroupConfig:
        return GroupConfig(digest="g")

    def delete_group_config(self) -> None:
        pass

    def read_rules_config(self) -> RulesConfig:
        return RulesConfig(digest="r")

    def write_rules_config(self, rules: RulesConfig) -> None:
        pass

    def steal_service(self, sid: str, current_node: str, new_node: str) -> None:
        self.conf.services[sid].node = new_node

    def service_location(self, sid: str) -> str | None:
        return None  # the round's own manager_status is the only record here

    def prefetch_locations(self, sids: list[str]) -> None:
        pass

    def get_datacenter_settings(self) -> DatacenterConfig:
        return DatacenterConfig(crs_mode=self.crs_mode)

    def get_node_stats(self, mode: str) -> dict[str, NodeStats]:
        # 64 CPUs / 512 GiB per node; dynamic: a third in use
        used = 1 / 3 if mode == "dynamic" else 0.0
        return {n: NodeStats(64, 512 * GIB, 64 * used, 512 * GIB * used) for n in self.nodes}

    def get_service_stats(self, mode: str) -> dict[str, ServiceStats]:
        # 1..4 CPUs, 1..8 GiB configured; half of that in use (built once: the source's cost is not timed)
        if self._service_stats is None:
            self._service_stats = {
                sid: ServiceStats(1 + i % 4, (1 + i % 8) * GIB, (1 + i % 4) / 2, (1 + i % 8) * GIB / 2)
                for i, sid in enumerate(self.conf.services)
            }
        return self._service_stats

    def get_guests(self) -> dict[str, GuestInfo]:
        return {}

    def get_ha_manager_lock(self) -> bool:
        return True

    def release_ha_manager_lock(self) -> bool:
        return True

    def get_ha_agent_lock(self, node: str | None = None) -> bool:
        return self.agent_locks_free

    def release_ha_agent_lock(self) -> bool:
        return True

    def watchdog_open(self) -> str:
        return "wd"

    def watchdog_update(self, handle: str) -> None:
        pass

    def watchdog_close(self, handle: str) -> None:
        pass

    def get_max_workers(self) -> int:
        return 0

    def resource_plugin(self, rtype: str) -> ResourcePlugin | None:
        return None


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall, CPU) seconds of one call; CPU time (this process) is the steadier on a shared machine."""
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def bench_round(nodes: int, services: int, repeat: int, mode: str = "basic") -> dict[str, Any]:
    names = [f"node{i:03d}" for i in range(1, nodes + 1)]
    conf = ServiceConfig(digest="c")
    ss: dict[str, ServiceData] = {}
    for i in range(services):
        sid = f"vm:{100 + i}"
        node = names[i % nodes]
        conf.services[sid] = ResourceConfig(sid=sid, type="vm", name=str(100 + i), node=node, failback=False)
        ss[sid] = ServiceData(state="started", node=node, uid=f"u{i}", running=True)
    ms = ManagerStatus(node_status=dict.fromkeys(names, "online"), service_status=ss)
    env = RoundEnv(names, conf, ms, mode)
    mgr = Manager(env)
    mgr.manage()  # first round compiles rules
    steady: list[tuple[float, float]] = []
    for _ in range(repeat):
        env.now += 10
        steady.append(_timed(mgr.manage))
    # every service reports a fresh "started" result: the round consumes them all
    for node in names:
        env.lrm[node] = LrmStatus(
            state="active",
            mode="active",
            results={
                sd.uid: LrmResult(sid, "started", 0)
                for sid, sd in mgr.ss.items()
                if sd.node == node and sd.uid
            },
        )
    env.now += 10
    consume = _timed(mgr.manage)
    # a node fails: one round marks it unknown, then after the fence delay its
    # services go fence -> recovery -> started elsewhere in one round
    failed = names[-1]
    env.online[failed] = False
    env.agent_locks_free = False
    env.now += 10
    mgr.manage()
    env.now += 61
    mgr.manage()  # services -> fence, fencing fails (lock not free yet)
    env.agent_locks_free = True
    env.now += 10
    recovery = _timed(mgr.manage)
    moved = sum(1 for sd in mgr.ss.values() if sd.node != failed)
    assert moved == services, "recovery round did not move every service"
    assert mgr.crs_mode_in_use == mode, f"scheduler {mode} fell back to {mgr.crs_mode_in_use}"
    return {
        "nodes": nodes,
        "services": services,
        "crs": mode,
        "steady_round_ms": round(statistics.median(w for w, _ in steady) * 1000, 2),
        "result_round_ms": round(consume[0] * 1000, 2),
        "recovery_round_ms": round(recovery[0] * 1000, 2),
        "steady_round_cpu_ms": round(statistics.median(c for _, c in steady) * 1000, 2),
        "result_round_cpu_ms": round(consume[1] * 1000, 2),
        "recovery_round_cpu_ms": round(recovery[1] * 1000, 2),
        "recovered": services // nodes,
    }


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench sim")
    ap.add_argument("--json", action="store_true", help="end with one JSON line")
    ap.add_argument("--quick", action="store_true", help="small sizes only (smoke test)")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one size in this process
    ap.add_argument("--one-scale", help=argparse.SUPPRESS)  # internal: the scale failover, here
    args = ap.parse_args(argv)
    if args.one:
        n, s = (int(x) for x in args.one.split("/"))
        print(json.dumps(run_one(n, s)))
        return 0
    if args.one_scale:
        n, s = (int(x) for x in args.one_scale.split("/"))
        print(json.dumps(run_scale_failover(n, s)))
        return 0

    sims = []
    for n, s in QUICK_SIZES if args.quick else SIZES:
        out = subprocess.run(
            [sys.executable, "-m", "bench", "sim", "--one", f"{n}/{s}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        row = json.loads(out.strip().splitlines()[-1])
        ref = REFERENCE_SECONDS.get(f"{n}/{s}")
        row["reference_s"] = ref
        row["speedup_vs_reference"] = round(ref / row["wall_s"], 1) if ref else None
        sims.append(row)
        print(
            f"sim {n:>3} nodes {s:>5} services: {row['wall_s']:>7.2f} s wall, "
            f"{row['peak_rss_mib']:>6.1f} MiB peak, "
            f"{row['virtual_s']} virtual s, finished={row['finished']}"
            + (f", {row['speedup_vs_reference']}x the reference" if ref else "")
        )
    n, s = QUICK_SCALE_FAILOVER if args.quick else SCALE_FAILOVER
    out = subprocess.run(
        [sys.executable, "-m", "bench", "sim", "--one-scale", f"{n}/{s}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    fo = json.loads(out.strip().splitlines()[-1])
    print(
        f"scale failover {n:>3} nodes {s:>5} services: {fo['wall_s']:>7.2f} s wall "
        f"({fo['cpu_s']} s CPU), {fo['peak_rss_mib']:>6.1f} MiB peak, {fo['rounds']} rounds of "
        f"{fo['virtual_round_s']} virtual s, fenced {fo['fenced']}, recovered "
        f"{fo['services_recovered']} of {fo['services_on_cut_node']}, {fo['watchdog_resets']} watchdog "
        f"resets, {fo['double_runs']} double runs; master round median {fo['master_round_ms_median']} ms "
        f"(max {fo['master_round_ms_max']}), LRM round median {fo['lrm_round_ms_median']} ms"
    )
    rounds = []
    for (n, s), mode in (
        (size, m) for size in (ROUND_SIZES[:1] if args.quick else ROUND_SIZES) for m in ROUND_MODES
    ):
        row = bench_round(n, s, repeat=5, mode=mode)
        rounds.append(row)
        print(
            f"manager round {s:>5} services / {n:>3} nodes, {mode:>7}: steady {row['steady_round_ms']} ms, "
            f"consume results {row['result_round_ms']} ms, recover {row['recovered']} services "
            f"{row['recovery_round_ms']} ms (CPU {row['steady_round_cpu_ms']} / "
            f"{row['result_round_cpu_ms']} / {row['recovery_round_cpu_ms']} ms)"
        )
    result = {"simulations": sims, "scale_failover": fo, "manager_rounds": rounds}
    if args.json:
        print(json.dumps(result))
    return 0
