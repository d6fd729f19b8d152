"""Failover benchmark: ``python -m bench failover --runs N [--json]``.

Each run: a fresh 3-node local cluster (default settings) with 5 ``proc``
services (HTTP, agents/demo_service.py) on node2; once all answer, node2's
whole process tree is SIGKILLed (daemon, watchdog, services); we time until
every one of the 5 answers again from another node. The services' markers
are checked for overlaps (two copies of one service alive at once).

``--store etcd``: the same on a cluster whose store is etcd, one member per
node, each node with its member in its own network namespace (root).
``--with-etcd`` also kills node2's etcd member (a host crash).

``--type vm``: one ``vm:`` service instead (the default guest, agents/guestimage.py;
TCG unless ``PYHA_VM_ACCEL=kvm``) on node2; we time from the kill until the
guest answers its health check from another node, and split that time into
the guest's own boot (its uptime at that answer) and the cluster's part
(detection, fencing, recovery, QEMU start). Each recovered guest must be a new
boot, and no guest may answer from two nodes at once.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from agents.vm import GuestAnswer, VmPlugin, ping_guest
from bench.livecluster import LiveCluster, wait_for

SERVICES = [f"proc:svc{i}" for i in range(1, 6)]
VM_SID = "vm:101"


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


def one_vm_run(root: Path, store: str, with_etcd: bool = False) -> dict[str, float | bool]:
    c = LiveCluster(root, store=store)
    try:
        c.manager("add", VM_SID, "--node", "node2", "--memory", "256")
        c.up()
        paths = VmPlugin(c.config().state_dir, cgroup_base=None)
        name = VM_SID.split(":")[1]

        def answers() -> dict[str, GuestAnswer]:
            out = {}
            for n in c.nodes:
                if (a := ping_guest(paths.health_path(n, name), timeout=0.3)) is not None:
                    out[n] = a
            return out

        first = wait_for(lambda: answers().get("node2"), 120, f"{VM_SID} answering on node2")
        assert isinstance(first, GuestAnswer)
        t0 = time.monotonic()
        c.kill("node2", with_etcd=with_etcd)
        back: tuple[float, GuestAnswer] | None = None
        twice = False
        while back is None and time.monotonic() - t0 < 180:
            seen = answers()
            twice = twice or len(seen) > 1
            back = next(((time.monotonic() - t0, a) for n, a in seen.items() if n != "node2"), None)
            time.sleep(0.05)
        if back is None:
            raise RuntimeError(f"{VM_SID} not recovered within 180 s")
        took, ans = back
        return {
            "failover_s": round(took, 3),
            "guest_boot_s": round(ans.uptime, 3),
            "cluster_s": round(took - ans.uptime, 3),
            "new_boot": ans.boot_id != first.boot_id,
            "twice": twice,
        }
    finally:
        c.close()


def vm_main(args: argparse.Namespace) -> int:
    rows = []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="pyha-bench-") as tmp:
            row = one_vm_run(Path(tmp), args.store, args.with_etcd)
        rows.append(row)
        print(f"run {i + 1}/{args.runs}: {VM_SID} answering again {row['failover_s']:.2f} s after the kill: "
              f"the guest's boot {row['guest_boot_s']:.2f} s, the cluster {row['cluster_s']:.2f} s; "
              f"new boot {row['new_boot']}, answered twice {row['twice']}")  # fmt: skip

    def med(key: str) -> float:
        return round(statistics.median(float(r[key]) for r in rows), 3)

    result: dict[str, object] = {
        "type": "vm",
        "store": args.store,
        "runs": args.runs,
        "failover_s": [r["failover_s"] for r in rows],
        "median_s": med("failover_s"),
        "guest_boot_median_s": med("guest_boot_s"),
        "cluster_median_s": med("cluster_s"),
        "per_run": rows,
        "overlaps": sum(1 for r in rows if r["twice"]),
        "all_new_boots": all(r["new_boot"] for r in rows),
    }
    if args.with_etcd:
        result["with_etcd"] = True
    print(f"median {result['median_s']} s (guest boot {result['guest_boot_median_s']} s, "
          f"cluster {result['cluster_median_s']} s), overlaps {result['overlaps']}")  # fmt: skip
    if args.json:
        print(json.dumps(result))
    return 0 if result["overlaps"] == 0 and result["all_new_boots"] else 1


def percentile(values: list[float], p: float) -> float:
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(p / 100 * (len(s) - 1))))
    return s[k]


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench failover")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--store", choices=["dir", "etcd"], default="dir")
    ap.add_argument("--with-etcd", action="store_true", help="etcd: also kill node2's etcd member")
    ap.add_argument("--type", choices=["proc", "vm"], default="proc", help="vm: one QEMU guest (see above)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.type == "vm":
        return vm_main(args)
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
