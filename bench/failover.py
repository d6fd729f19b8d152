"""Failover benchmark: ``python -m bench failover --runs N [--json]``.

Each run: a fresh 3-node local cluster (default settings) with 5 ``proc``
services (HTTP, agents/demo_service.py) on node2; once all answer, node2's
whole process tree is SIGKILLed (daemon, watchdog, services); we time until
every one of the 5 answers again from another node. The services' markers
are checked for overlaps (two copies of one service alive at once).

``--store etcd``: the same on a cluster whose store is etcd, one member per
node, each node with its member in its own network namespace (root).
``--with-etcd`` also kills node2's etcd member (a host crash).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from bench.livecluster import LiveCluster

SERVICES = [f"proc:svc{i}" for i in range(1, 6)]


def one_run(root: Path, store: str, with_etcd: bool = False) -> tuple[float, list[float], int]:
    c = LiveCluster(root, store=store)
    try:
        for sid in SERVICES:
            c.add_service(sid, "node2")
        c.up()
        for sid in SERVICES:
            c.wait_serving(sid, 60, on="node2")
        t0 = time.monotonic()
        c.kill("node2", with_etcd=with_etcd)
        back: dict[str, float] = {}
        deadline = t0 + 120
        while len(back) < len(SERVICES) and time.monotonic() < deadline:
            for sid in SERVICES:
                if sid not in back:
                    node = c.serving_node(sid)
                    if node is not None and node != "node2":
                        back[sid] = time.monotonic() - t0
            time.sleep(0.02)
        if len(back) < len(SERVICES):
            raise RuntimeError(f"not recovered within 120 s: {sorted(set(SERVICES) - set(back))}")
        time.sleep(0.5)
        overlaps = len(c.overlaps())
        return max(back.values()), sorted(back.values()), overlaps
    finally:
        c.close()


def percentile(values: list[float], p: float) -> float:
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(p / 100 * (len(s) - 1))))
    return s[k]


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench failover")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--store", choices=["dir", "etcd"], default="dir")
    ap.add_argument("--with-etcd", action="store_true", help="etcd: also kill node2's etcd member")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    times: list[float] = []
    per_service: list[list[float]] = []
    overlaps = 0
    for i in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="pyha-bench-") as tmp:
            worst, each, ov = one_run(Path(tmp), args.store, args.with_etcd)
        times.append(round(worst, 3))
        per_service.append([round(x, 3) for x in each])
        overlaps += ov
        print(f"run {i + 1}/{args.runs}: all 5 services answering again {worst:.2f} s after the kill, "
              f"overlaps {ov}")  # fmt: skip
    result: dict[str, object] = {
        "store": args.store,
        "runs": args.runs,
        "services": len(SERVICES),
        "failover_s": times,
        "per_service_s": per_service,
        "median_s": round(statistics.median(times), 3),
        "p95_s": round(percentile(times, 95), 3),
        "overlaps": overlaps,
    }
    if args.with_etcd:
        result["with_etcd"] = True
    print(f"median {result['median_s']} s, p95 {result['p95_s']} s, overlaps {overlaps}")
    if args.json:
        print(json.dumps(result))
    return 0 if overlaps == 0 else 1
