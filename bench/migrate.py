"""Migrate benchmark: ``python -m bench migrate [--runs N] [--json]``.

One 3-node local cluster, one ``proc`` HTTP service. Each run queues a
``migrate`` (straight into the store, as ha-manager does) and waits until the
service answers from the target node. The time the agents themselves spend
(stopping on the source: from ``stopping service`` to ``moved`` in its log;
starting on the target: from ``starting service`` in its log until this
poller got an answer) is subtracted; the rest is the control plane: command
pickup, manager rounds, bus messages, lease and status writes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path

from admin.commands import crm_command
from bench.livecluster import LiveCluster

SID = "proc:mig"


def log_time(line: str) -> float:
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S.%f").timestamp()


def find(log: str, needle: str, after: float) -> float | None:
    for line in log.splitlines():
        if needle in line:
            t = log_time(line)
            if t >= after:
                return t
    return None


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench migrate")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--store", choices=["dir", "etcd"], default="dir")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    totals: list[float] = []
    agent: list[float] = []
    overhead: list[float] = []
    with tempfile.TemporaryDirectory(prefix="pyha-bench-") as tmp:
        c = LiveCluster(Path(tmp), store=args.store)
        try:
            c.add_service(SID, "node1")
            c.up()
            c.wait_serving(SID, 60, on="node1")
            time.sleep(1.0)
            store = c.open_store()
            here = "node1"
            for i in range(args.runs):
                target = ["node2", "node3", "node1"][i % 3]
                t0 = time.time()
                crm_command(store, f"migrate {SID} {target}", c.nodes)
                while c.serving_node(SID) != target:
                    if time.time() - t0 > 60:
                        raise RuntimeError(f"migration to {target} did not finish")
                    time.sleep(0.002)
                t1 = time.time()
                time.sleep(0.3)  # let the logs flush
                c.wait_state(SID, "started", 30, node=target)  # the next move is refused before
                src, dst = c.log(here), c.log(target)
                stop_a = find(src, f"stopping service {SID}", t0 - 0.01)
                stop_b = find(src, f"service {SID} - moved to node '{target}'", t0 - 0.01)
                start_a = find(dst, f"starting service {SID}", t0 - 0.01)
                start_b = find(dst, f"service status {SID} started", t0 - 0.01)
                if None in (stop_a, stop_b, start_a, start_b):
                    raise RuntimeError("agent log lines not found")
                assert stop_a and stop_b and start_a and start_b
                # the agents' own time: the source's stop, and the target's start until the
                # service answered (seen by this poller: the agent's health-check polling
                # would otherwise be counted twice). Everything else is the control plane:
                # command pickup, manager rounds, bus messages, status and lease writes.
                a = (stop_b - stop_a) + (t1 - start_a)
                total = t1 - t0
                totals.append(total)
                agent.append(a)
                overhead.append(total - a)
                ms = {k: round(v * 1000) for k, v in {"total": total, "agents": a, "cp": total - a}.items()}
                print(f"run {i + 1}: {here} -> {target} total {ms['total']} ms, agents {ms['agents']} ms, "
                      f"control plane {ms['cp']} ms")  # fmt: skip
                here = target
                time.sleep(0.5)
            store.close()
            overlaps = len(c.overlaps())
        finally:
            c.close()
    q = statistics.quantiles(overhead, n=100) if len(overhead) > 1 else overhead * 99
    result = {
        "store": args.store,
        "runs": args.runs,
        "total_p50_ms": round(statistics.median(totals) * 1000, 1),
        "agents_p50_ms": round(statistics.median(agent) * 1000, 1),
        "control_plane_p50_ms": round(statistics.median(overhead) * 1000, 1),
        "control_plane_p95_ms": round(q[94] * 1000, 1),
        "overlaps": overlaps,
    }
    print(f"control plane p50 {result['control_plane_p50_ms']} ms (agents {result['agents_p50_ms']} ms, "
          f"total {result['total_p50_ms']} ms), overlaps {overlaps}")  # fmt: skip
    if args.json:
        print(json.dumps(result))
    return 0
