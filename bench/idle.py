"""What a node costs at rest: ``python -m bench idle --nodes N --services S --seconds T [--json]``.

A fresh local cluster of N nodes with S ``proc`` services spread round-robin
over them (node1, node2, ...). Once every service runs (and answers, for the
default HTTP services) and the cluster had ``--settle`` seconds to calm down,
nothing is changed for T seconds, and we measure:

* CPU per node: utime+stime (plus cutime+cstime: helpers it started and
  reaped, e.g. service launches) of the node's ``ha-node`` and ``ha-watchdog``
  from ``/proc/<pid>/stat``, as a percentage of one core; and the sum over
  all nodes. The services themselves are not counted.
* Store writes per second. dir store: the lines appended to the store's
  change journal (``.pyha/journal``: one per record write or delete, by
  record name); lease renewals are not journalled, so they are NOT in this
  count (each node renews its agent lease, the master also the manager
  lease, every ``renew_interval``). etcd store: the growth of the etcd
  revision, which counts every mutation (lease records included), and the
  requests the etcd members answered, by gRPC method, from their ``/metrics``
  (``store_requests_per_s``: reads are ``Range``, writes ``Txn``; the bench's
  own two reads of the revision are in it).
* Read syscalls per second of the ``ha-node`` processes (``syscr`` of
  ``/proc/<pid>/io``): an upper bound for store reads, not a count of them
  (bus and wake-up reads are in it too); the store is not instrumented.

Bus messages per second: the frames every node's bus received (heartbeats
included), from each node's Prometheus metrics (``pyha_bus_frames_total``).

``--kind sleep`` runs ``sleep`` services without a health check instead of
the HTTP demo service (for large S: a demo service is a Python process).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import urllib.request
from functools import partial
from pathlib import Path

from admin.ports import free_port
from admin.resources import add_resources
from bench.livecluster import LiveCluster, wait_for

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pid: int) -> int | None:
    """utime+stime+cutime+cstime of PID in clock ticks (None when gone)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    f = raw[raw.rindex(b")") + 2 :].split()
    return int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])


def read_syscalls(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            if line.startswith("syscr:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


class JournalCounter:
    """Counts the lines appended to a dir store's change journal (follows its rotation)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.counts: dict[str, int] = {}
        st = path.stat()
        self.ino, self.off = st.st_ino, st.st_size

    def poll(self) -> None:
        try:
            with open(self.path, "rb") as f:
                ino = os.fstat(f.fileno()).st_ino
                if ino != self.ino:  # rotated: the new file holds only new lines
                    self.ino, self.off = ino, 0
                f.seek(self.off)
                chunk = f.read()
        except OSError:
            return
        end = chunk.rfind(b"\n") + 1
        self.off += end
        for name in chunk[:end].split(b"\n"):
            if name:
                key = name.decode(errors="replace")
                self.counts[key] = self.counts.get(key, 0) + 1


def etcd_revision(c: LiveCluster) -> int:
    store = c.open_store()
    try:
        return int(store.changed_since(None).token.rpartition(":")[2])
    finally:
        store.close()


def bus_frames(c: LiveCluster) -> int | None:
    """Bus frames received by all nodes so far (heartbeats included), from their Prometheus metrics.

    None when a node serves no metrics (``metrics_port``) or does not answer.
    """
    conf = c.config()
    total = 0
    for n in c.nodes:
        where = conf.metrics_address(n)
        if where is None:
            return None
        try:
            with urllib.request.urlopen(f"http://{where[0]}:{where[1]}/metrics", timeout=2.0) as r:
                text = r.read().decode()
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith('pyha_bus_frames_total{direction="received"}'):
                total += int(float(line.rsplit(" ", 1)[1]))
    return total


def etcd_requests(c: LiveCluster) -> dict[str, int]:
    """Requests answered by all etcd members, by gRPC method (store.etcd_launch.member_requests)."""
    from cli.cluster_etcd import local_etcd, status_context  # noqa: PLC0415 - etcd runs only
    from store.etcd_launch import member_requests  # noqa: PLC0415

    cfg = c.config()
    ctx = status_context(cfg)
    total: dict[str, int] = {}
    for m in local_etcd(cfg).members.values():
        for method, n in (member_requests(m, context=ctx) or {}).items():
            total[method] = total.get(method, 0) + n
    return total


def build(c: LiveCluster, services: int, kind: str, first: int = 0) -> list[str]:
    """Write S proc services into resources.cfg (in-process: one tool call each would take minutes)."""
    sids = []
    entries: list[tuple[str, dict[str, str]]] = []
    store = c.open_store()
    try:
        for i in range(first, first + services):
            sid = f"proc:idle{i + 1}"
            node = c.nodes[i % len(c.nodes)]
            opts = {"node": node}
            if kind == "http":
                port = free_port()
                c.ports[sid] = port
                bind = "0.0.0.0" if c.netns else "127.0.0.1"
                opts["cmd"] = f"{sys.executable} -m agents.demo_service --port {port} --bind {bind}"
                opts["check_tcp"] = f"127.0.0.1:{port}"
            else:
                opts["cmd"] = "exec sleep 100000"
            entries.append((sid, opts))
            sids.append(sid)
        add_resources(store, entries, c.nodes)  # one write: not one per service for every node to read
    finally:
        store.close()
    return sids


def all_started(c: LiveCluster, sids: list[str]) -> bool:
    ss = c.manager_status().service_status
    return all(sid in ss and ss[sid].state == "started" for sid in sids)


def populate(c: LiveCluster, services: int, kind: str, batch: int = 0, batch_pause: float = 5.0) -> list[str]:
    """Add S services (``--batch`` at a time, each batch once the last one runs), start the cluster,
    wait until every service is ``started`` (and, for http services, answers)."""
    batch = batch or services
    sids = build(c, min(batch, services), kind)
    c.up()
    wait_for(lambda: all_started(c, sids), 60 + services, "every service started", step=0.5)
    while len(sids) < services:  # --batch: the rest a batch at a time, once the last one runs
        time.sleep(batch_pause)
        sids += build(c, min(batch, services - len(sids)), kind, first=len(sids))
        wait_for(partial(all_started, c, list(sids)), 60 + batch, "a batch started", step=0.5)
        print(f"{len(sids)} services added", flush=True)
    if kind == "http":
        deadline = time.monotonic() + 120 + 2 * services
        try:
            for sid in sids:
                c.wait_serving(sid, max(1.0, deadline - time.monotonic()))
        except AssertionError:
            ss = c.manager_status().service_status
            silent = [f"{s} ({ss[s].state} on {ss[s].node})" for s in sids if s in ss and c.ask(s) is None]
            raise RuntimeError(f"not answering: {', '.join(silent[:20])}") from None
    return sids


def daemon_pids(c: LiveCluster, nodes: list[str] | None = None) -> dict[str, dict[str, int]]:
    """Each node's ``ha-node`` and ``ha-watchdog`` pids; a node missing one is an error (with its log)."""
    pids = {n: {w: c.running_pid(n, w) for w in ("ha-node", "ha-watchdog")} for n in nodes or c.nodes}
    for n, p in pids.items():
        if None in p.values():
            tail = "\n".join(c.log(n).splitlines()[-25:])
            wd = "\n".join(c.watchdog_log(n).splitlines()[-15:])
            raise RuntimeError(
                f"{n} is not running: {p}; the end of its log:\n{tail}\nthe end of its watchdog's log:\n{wd}"
            )
    return {n: {w: int(v) for w, v in p.items() if v is not None} for n, p in pids.items()}


class StoreMeter:
    """Store traffic over a window: record writes (dir: the journal), revisions and requests (etcd)."""

    def __init__(self, c: LiveCluster, store: str) -> None:
        self.c, self.store = c, store
        self.journal = JournalCounter(c.dir / "store" / ".pyha" / "journal") if store == "dir" else None
        self.rev0 = etcd_revision(c) if store == "etcd" else 0
        self.req0 = etcd_requests(c) if store == "etcd" else {}

    def poll(self) -> None:
        if self.journal is not None:
            self.journal.poll()

    def result(self, elapsed: float) -> dict[str, object]:
        out: dict[str, object] = {}
        if self.journal is not None:
            self.journal.poll()
            writes = sum(self.journal.counts.values())
            out["store_writes_per_s"] = round(writes / elapsed, 2)
            by_kind: dict[str, int] = {}
            for name, k in self.journal.counts.items():
                key = name.split("/", 1)[0]
                if key == "nodes":
                    key = "nodes/*/" + name.rsplit("/", 1)[-1]
                by_kind[key] = by_kind.get(key, 0) + k
            per_kind = {k: round(v / elapsed, 2) for k, v in sorted(by_kind.items())}
            out["store_writes_by_record_per_s"] = per_kind
            out["store_writes_note"] = "record writes from the journal; lease renewals not included"
        else:
            rev1, req1 = etcd_revision(self.c), etcd_requests(self.c)
            out["store_revisions_per_s"] = round((rev1 - self.rev0) / elapsed, 2)
            r0 = self.req0
            by_method = {k: req1[k] - r0.get(k, 0) for k in sorted(req1) if req1[k] > r0.get(k, 0)}
            out["store_requests_per_s"] = round(sum(by_method.values()) / elapsed, 2)
            out["store_requests_by_method_per_s"] = {k: round(v / elapsed, 2) for k, v in by_method.items()}
        return out


def measure_rest(c: LiveCluster, store: str, seconds: float) -> dict[str, object]:
    """CPU per node, read syscalls, bus messages and store traffic over SECONDS of rest."""
    pids = daemon_pids(c)
    meter = StoreMeter(c, store)
    cpu0 = {n: {w: cpu_ticks(p) or 0 for w, p in ws.items()} for n, ws in pids.items()}
    io0 = {n: read_syscalls(ws["ha-node"]) or 0 for n, ws in pids.items()}
    frames0 = bus_frames(c)
    t0 = time.monotonic()
    deadline = t0 + seconds
    while (now := time.monotonic()) < deadline:
        meter.poll()
        time.sleep(min(0.5, deadline - now))
    cpu1 = {n: {w: cpu_ticks(p) or 0 for w, p in ws.items()} for n, ws in pids.items()}
    io1 = {n: read_syscalls(ws["ha-node"]) or 0 for n, ws in pids.items()}
    frames1 = bus_frames(c)
    elapsed = time.monotonic() - t0
    for n, ws in pids.items():
        for w, wp in ws.items():
            if c.running_pid(n, w) != wp:
                raise RuntimeError(f"{n}'s {w} (pid {wp}) did not survive the measurement")

    def pct(ticks: int) -> float:
        return round(100.0 * ticks / CLK_TCK / elapsed, 2)

    per_node: dict[str, dict[str, float]] = {}
    total = 0
    for n in pids:
        d = {w: cpu1[n][w] - cpu0[n][w] for w in cpu0[n]}
        per_node[n] = {w: pct(v) for w, v in d.items()}
        per_node[n]["total"] = pct(sum(d.values()))
        total += sum(d.values())
    node_totals = [v["total"] for v in per_node.values()]
    result: dict[str, object] = {
        "seconds": round(elapsed, 2),
        "cpu_total_pct": pct(total),
        "cpu_per_node_mean_pct": round(sum(node_totals) / len(node_totals), 2),
        "cpu_per_node_max_pct": max(node_totals),
        "cpu_per_node_pct": per_node,
        "read_syscalls_per_s": round(sum(io1[n] - io0[n] for n in pids) / elapsed, 1),
    }
    if frames0 is not None and frames1 is not None:
        # every frame a node received is one bus message (heartbeats included; ZMTP pings not)
        result["bus_messages_per_s"] = round((frames1 - frames0) / elapsed, 1)
        result["bus_messages_per_node_per_s"] = round((frames1 - frames0) / elapsed / len(pids), 1)
    result.update(meter.result(elapsed))
    return result


def measure(args: argparse.Namespace, root: Path) -> dict[str, object]:
    c = LiveCluster(root, nodes=args.nodes, store=args.store)
    try:
        t_up = time.monotonic()
        populate(c, args.services, args.kind, args.batch, args.batch_pause)
        ready_s = time.monotonic() - t_up
        print(f"{args.services} services running on {args.nodes} nodes after {ready_s:.1f} s; "
              f"settling {args.settle:g} s")  # fmt: skip
        time.sleep(args.settle)
        rest = measure_rest(c, args.store, args.seconds)
        head: dict[str, object] = {
            "nodes": args.nodes, "services": args.services, "kind": args.kind, "store": args.store,
        }  # fmt: skip
        return head | rest
    finally:
        c.close()


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench idle")
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--services", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument(
        "--settle", type=float, default=15.0, help="seconds of rest before measuring (a re-check round)"
    )
    ap.add_argument("--store", choices=["dir", "etcd"], default="dir")
    ap.add_argument("--kind", choices=["http", "sleep"], default="http",
                    help="http: the demo HTTP service with a TCP check; sleep: a bare process")  # fmt: skip
    ap.add_argument(
        "--batch",
        type=int,
        default=0,
        help="add the services this many at a time (a big cluster starting everything at once "
        "can starve its own watchdog pets on a small machine)",
    )
    ap.add_argument("--batch-pause", type=float, default=5.0, help="seconds between two batches")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.nodes < 1 or args.services < 0 or args.seconds <= 0:
        ap.error("need --nodes >= 1, --services >= 0, --seconds > 0")
    with tempfile.TemporaryDirectory(prefix="pyha-bench-") as tmp:
        r = measure(args, Path(tmp))
    print(f"at rest over {r['seconds']} s: CPU {r['cpu_total_pct']}% of one core in total, "
          f"{r['cpu_per_node_mean_pct']}% per node (max {r['cpu_per_node_max_pct']}%); "
          f"store writes {r.get('store_writes_per_s', r.get('store_revisions_per_s'))}/s; "
          + (f"store requests {r['store_requests_per_s']}/s; " if "store_requests_per_s" in r else "")
          + f"read syscalls {r['read_syscalls_per_s']}/s; "
          + f"bus messages {r.get('bus_messages_per_s', 'not measured')}/s")  # fmt: skip
    if args.json:
        print(json.dumps(r))
    return 0
