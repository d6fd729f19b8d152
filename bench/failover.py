"""Failover benchmark: ``python -m bench failover --runs N [--json]``.

Each run: a fresh 3-node local cluster (default settings) with 5 ``proc``
services (HTTP, agents/demo_service.py) on node2; once all answer, node2's
whole process tree is SIGKILLed (daemon, watchdog, services); we time until
every one of the 5 answers again from another node. The services' markers
are checked for overlaps (two copies of one service alive at once).

``--store etcd``: the same on a cluster whose store is etcd, each node in its
own network namespace (root) with an etcd member beside it on the first nodes
(``--etcd-members``; ha-cluster's default: every node up to 3, then 3).
``--with-etcd`` also kills node2's etcd member (a host crash).

``--nodes N --services S`` (scale mode, issue #15): one cluster of N nodes
with S bare ``proc`` services (``exec sleep``, spread round-robin, added
``--batch`` at a time), brought up once. After ``--settle`` s we measure it at
rest (CPU per node, store traffic; bench/idle.py) for ``--rest`` s; then each
run kills one node (node2, node3, ... in turn) and times until every service
it ran is running on another node (the agent's own record: its process alive,
``ha-manager status`` ``started`` elsewhere), with the store's traffic during
that window; the killed node is started again before the next run. No
service may run on two nodes at once (checked from every node's records at
the end of each run). Between two runs the services the killed node ran are
migrated back to it (``rebalanced_s``, the time that took), so that every run
starts from the same balanced cluster: without it the node killed before comes
back empty, and the ``basic`` scheduler (as the reference's) puts every
service of the next victim on it, one node starting them all, ``max_workers``
at a time. ``--no-rebalance`` keeps that case (runs after the first then time
it). ``--netns`` puts each node in its own network
namespace (``--store etcd`` always does).

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

from agents.proc import ProcPlugin
from agents.vm import GuestAnswer, VmPlugin, ping_guest
from bench.idle import StoreMeter, measure_rest, populate
from bench.livecluster import LiveCluster, wait_for
from cli.api_client import ApiClient

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


def runs_on(agent: ProcPlugin, node: str, sid: str) -> bool:
    """Does NODE's agent record a live process of SID? (bare proc services: no markers)"""
    st = agent.current(node, sid.split(":", 1)[1])
    return st is not None and agent.any_alive(st)


def running_nodes(c: LiveCluster, agent: ProcPlugin, sid: str) -> list[str]:
    """The nodes whose agent records a live process of SID."""
    return [n for n in c.nodes if runs_on(agent, n, sid)]


def scale_run(c: LiveCluster, agent: ProcPlugin, victim: str, store: str) -> dict[str, object]:
    """Kill VICTIM; time until each of its services runs elsewhere; start it again."""
    ms = c.manager_status()
    mine = sorted(sid for sid, sd in ms.service_status.items() if sd.node == victim and sd.state == "started")
    meter = StoreMeter(c, store)
    t0 = time.monotonic()
    c.kill(victim)
    killed = time.monotonic() - t0  # the kill command's own time (a Python start-up: ~1 s at 20 nodes)
    back: dict[str, float] = {}
    deadline = t0 + 180
    while len(back) < len(mine) and time.monotonic() < deadline:
        meter.poll()
        ss = c.manager_status().service_status
        for sid in mine:
            sd = ss.get(sid)
            if sid in back or sd is None or sd.state != "started" or sd.node == victim:
                continue
            # only where the master placed it: on a 2-core host the bench's own look at every
            # node for every service (2,000 reads a turn) took CPU from the failover it measures
            if runs_on(agent, sd.node, sid):
                back[sid] = time.monotonic() - t0
        time.sleep(0.2)
    window = time.monotonic() - t0
    if len(back) < len(mine):
        missing = sorted(set(mine) - set(back))
        raise RuntimeError(f"{len(missing)} of {len(mine)} not recovered within 180 s: {missing[:10]}")
    traffic = meter.result(window)
    twice = [sid for sid in c.manager_status().service_status if len(running_nodes(c, agent, sid)) > 1]
    c.up(victim)
    times = sorted(back.values())
    return {
        "victim": victim,
        "moved": mine,
        "services": len(mine),
        "failover_s": round(max(times), 3) if times else 0.0,
        "first_s": round(times[0], 3) if times else 0.0,
        "kill_command_s": round(killed, 3),
        "median_service_s": round(statistics.median(times), 3) if times else 0.0,
        "during_failover": traffic,
        "twice": twice,
    }


def rebalance(c: LiveCluster, node: str, sids: list[str], timeout: float = 300) -> float:
    """Migrate SIDS back to NODE (online again) with the API; seconds until all run there."""
    t0 = time.monotonic()
    wait_for(lambda: c.manager_status().node_status.get(node) == "online", 60, f"{node} online")
    with ApiClient(c.config(), timeout=10.0) as api:
        for sid in sids:
            api.call("migrate", {"sid": sid, "node": node})

    def home() -> bool:
        ss = c.manager_status().service_status
        return all(
            (sd := ss.get(sid)) is not None and sd.node == node and sd.state == "started" for sid in sids
        )

    wait_for(home, timeout, f"{len(sids)} services migrated back to {node}", step=0.5)
    return time.monotonic() - t0


def scale_main(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="pyha-bench-") as tmp:
        c = LiveCluster(
            Path(tmp), nodes=args.nodes, store=args.store, netns=args.netns, etcd_members=args.etcd_members
        )
        try:
            t_up = time.monotonic()
            populate(c, args.services, "sleep", args.batch, args.batch_pause)
            print(f"{args.services} services running on {args.nodes} nodes after "
                  f"{time.monotonic() - t_up:.1f} s; settling {args.settle:g} s", flush=True)  # fmt: skip
            time.sleep(args.settle)
            rest = measure_rest(c, args.store, args.rest)
            print(f"at rest: CPU {rest['cpu_total_pct']}% of one core in total, "
                  f"{rest['cpu_per_node_mean_pct']}% per node", flush=True)  # fmt: skip
            agent = ProcPlugin(c.config().state_dir, cgroup_base=None)
            rows: list[dict[str, object]] = []
            overlaps = 0
            for i in range(args.runs):
                victim = c.nodes[1 + i % (len(c.nodes) - 1)]
                row = scale_run(c, agent, victim, args.store)
                rows.append(row)
                twice = row["twice"]
                assert isinstance(twice, list)
                overlaps += len(twice)
                print(f"run {i + 1}/{args.runs}: {row['services']} services of {victim} running again "
                      f"{row['failover_s']:.2f} s after the kill (first {row['first_s']:.2f} s); "
                      f"twice: {len(twice)}", flush=True)  # fmt: skip
                if args.rebalance and i + 1 < args.runs:
                    moved = row["moved"]
                    assert isinstance(moved, list)
                    row["rebalanced_s"] = round(rebalance(c, victim, moved), 1)
                    print(f"  {len(moved)} services migrated back to {victim} in {row['rebalanced_s']} s",
                          flush=True)  # fmt: skip
                time.sleep(args.settle)
        finally:
            c.close()
    times = [float(str(r["failover_s"])) for r in rows]
    result: dict[str, object] = {
        "mode": "scale",
        "nodes": args.nodes,
        "services": args.services,
        "store": args.store,
        "netns": args.netns or args.store == "etcd",
        "runs": args.runs,
        "rebalanced_between_runs": args.rebalance,
        "failover_s": times,
        "median_s": round(statistics.median(times), 3),
        "p95_s": round(percentile(times, 95), 3),
        "at_rest": rest,
        "per_run": rows,
        "overlaps": overlaps,
    }
    print(f"median {result['median_s']} s, p95 {result['p95_s']} s, overlaps {overlaps}")
    if args.json:
        print(json.dumps(result))
    return 0 if overlaps == 0 else 1


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
    scale = ap.add_argument_group("scale mode (one cluster of N nodes, S bare proc services)")
    scale.add_argument("--nodes", type=int, default=0, help="scale mode: this many nodes (>= 3)")
    scale.add_argument("--services", type=int, default=0, help="scale mode: this many services")
    scale.add_argument("--batch", type=int, default=0, help="add the services this many at a time")
    scale.add_argument("--batch-pause", type=float, default=5.0, help="seconds between two batches")
    scale.add_argument("--settle", type=float, default=15.0, help="seconds of rest before measuring")
    scale.add_argument("--rest", type=float, default=30.0, help="seconds measured at rest")
    scale.add_argument("--netns", action="store_true", help="each node in its own network namespace")
    scale.add_argument("--etcd-members", type=int, help="--store etcd: nodes with an etcd member")
    scale.add_argument(
        "--no-rebalance", dest="rebalance", action="store_false",
        help="do not migrate the killed node's services back to it between runs",
    )  # fmt: skip
    args = ap.parse_args(argv)
    if args.type == "vm":
        return vm_main(args)
    if args.nodes or args.services:
        if args.nodes < 3 or args.services < 1 or args.runs < 1:
            ap.error("scale mode needs --nodes >= 3, --services >= 1 and --runs >= 1")
        return scale_main(args)
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
