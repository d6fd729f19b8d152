"""Live-migration benchmark: ``python -m bench vm-migrate --runs N [--json]`` (issue #12).

One fresh 3-node local cluster with one ``vm:`` service, the default guest
(agents/guestimage.py, TCG unless ``PYHA_VM_ACCEL=kvm``), started on node1.
Each run live-migrates it to the next node (node1 -> node2 -> node3 -> node1 ...)
with the API's ``migrate`` (what ``ha-manager migrate`` sends, here from this
process so that no Python start-up is timed) and measures:

* ``total_ms``, ``downtime_ms``: QEMU's own figures (``query-migrate`` on the
  source: the whole migration, and the time the guest was stopped in it), from
  the source node's log line ``live migration to <node> done in ...``;
* ``paused_ms``: the guest's whole pause as the agent saw it: QEMU's downtime
  plus the hand-over (location move, source quit, target resume);
* ``agent_ms``: the agent's whole migrate step, from asking the target to
  launch its ``-incoming`` QEMU to the target's guest running; of it
  ``target_ready_ms`` until the target's QEMU listened; ``source_gone_ms``
  from its end until the source's QEMU had exited (waited for in the
  background: not on the migration's path);
* ``command_to_started_ms``: from the API call to the service in state
  ``started`` on the target in the manager status;
* ``overhead_ms`` = ``command_to_started_ms - total_ms`` (the issue's
  "control-plane overhead": everything but QEMU's own migration, the target
  QEMU's launch included) and ``cluster_ms`` = ``command_to_started_ms -
  agent_ms`` (the master and LRM rounds alone).

``phases_p50_ms`` (``phase_*_ms`` per run) splits that time up, from the
source agent's ``live migration phases (ms)`` log line (agents/vmqmp.py
``Phases``) and the master's state-change log lines (wall clocks of one host):
``master_issue`` (API call to the master's round setting ``migrate``),
``lrm_dispatch`` (to the source's agent starting), ``agent_setup`` (the
source's QMP session set up, while the target listens), ``agent_listen`` (the
rest of the wait for the target's ``listen``), ``agent_listen_rtt`` (the
whole ``listen``: ``agent_peer_listen`` the request's way there and back,
``agent_target_records`` its reading of the service's records,
``agent_target_arm`` its LRM going active, then ``agent_target_standby``
taking over its warm standby QEMU (agents/vmstandby.py) or, without one,
``agent_target_prepare`` the command line and ``agent_target_launch`` the
launcher; ``agent_target_qmp`` until QEMU's QMP greeted,
``agent_target_incoming`` its migration port), ``agent_transfer`` (QMP
``migrate`` and QEMU's migration), ``agent_commit`` (the location move),
``agent_quit`` (the source QEMU's ``quit``), ``agent_resume`` (the target's
``resume`` round trip: ``agent_target_resume_records`` its reading of the
service's records, ``agent_target_resume_connect`` / ``_check`` / ``_cont``
its QMP session, its check that the migration completed and QEMU's ``cont``,
``agent_peer_resume`` the rest), ``master_finish`` (agent done to the
master's round setting ``started``) and ``status_seen`` (until this bench
heard it: the node's ``service`` event, docs/API.md "Events", then a read of
the status to be sure; the status is read every 5 ms too, should an event be
lost).

Every run checks that the guest kept its boot id and that its uptime grew,
and that one QEMU of the service is left running, on the target (the other
nodes hold standbys: ``-incoming`` QEMUs that never ran it).
Goals (issue #12): downtime p50 <= 300 ms, overhead <= 50 ms.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import statistics
import tempfile
import time
from datetime import datetime
from functools import partial
from pathlib import Path

import zmq

from agents.proc import ProcState
from agents.vm import GuestAnswer, VmPlugin, kvm_requested, ping_guest
from agents.vmincoming import STANDBY
from agents.vmstandby import standby_limit
from bench.livecluster import LiveCluster, wait_for
from cli.api_client import ApiClient, decode_event

SID = "vm:100"
NAME = "100"
DONE = re.compile(
    r"service vm:100: live migration to (\S+) done in (\d+) ms, downtime (\d+) ms \(QEMU\); "
    r"guest paused (\d+) ms, (\d+) ms in all \(target QEMU ready after (\d+) ms\)"
)
GONE = re.compile(r"service vm:100: source QEMU gone (\d+) ms after the resume")
PHASES = re.compile(
    r"service vm:100: live migration phases \(ms\): (.*) wall_start=([\d.]+) wall_end=([\d.]+)"
)
STATE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) .*service 'vm:100': state changed from '(\w+)' to '(\w+)'",
    re.M,
)
GOAL_DOWNTIME_MS = 300
GOAL_OVERHEAD_MS = 50


def percentile(values: list[float], p: float) -> float:
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(p / 100 * (len(s) - 1))))
    return s[k]


def _answer(paths: VmPlugin, node: str) -> GuestAnswer | None:
    return ping_guest(paths.health_path(node, NAME), timeout=1.0)


def _done_line(c: LiveCluster, node: str, seen: int) -> re.Match[str] | None:
    """The source's next "live migration ... done" log line (after the ``seen`` earlier ones)."""
    found = list(DONE.finditer(c.log(node)))
    return found[seen] if len(found) > seen else None


def _gone_line(c: LiveCluster, node: str, seen: int) -> re.Match[str] | None:
    found = list(GONE.finditer(c.log(node)))
    return found[seen] if len(found) > seen else None


def _standby(paths: VmPlugin, node: str) -> ProcState | None:
    """The node's standby QEMU of vm:100 (agents/vmstandby.py), if it holds one."""
    mark = paths.marker(node, NAME)
    return paths.load_state(node, NAME) if mark is not None and mark[0] == STANDBY else None


def _rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return 0.0


def _phases_line(c: LiveCluster, node: str, seen: int) -> re.Match[str] | None:
    found = list(PHASES.finditer(c.log(node)))
    return found[seen] if len(found) > seen else None


def _state_changes(c: LiveCluster, old: str, new: str, after: float) -> list[float]:
    """Wall times of the master's "state changed from OLD to NEW" log lines of vm:100 after ``after``."""
    out = []
    for n in c.nodes:
        for m in STATE.finditer(c.log(n)):
            if (m.group(2), m.group(3)) == (old, new):
                t = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp()
                if t >= after - 0.002:  # the log's milliseconds are truncated
                    out.append(t)
    return sorted(out)


def _heard(sub: zmq.Socket[bytes], kind: str) -> bool:
    """Has an event of ``kind`` come in (the others read and dropped)?"""
    while sub.poll(0):
        ev = decode_event(sub.recv_multipart())
        if ev is not None and ev.get("type") == kind:
            return True
    return False


def _drain(sub: zmq.Socket[bytes]) -> None:
    while sub.poll(0):
        sub.recv_multipart()


def _await_started(c: LiveCluster, sub: zmq.Socket[bytes], target: str, t0: float, i: int) -> None:
    """Until the manager status says vm:100 ``started`` on ``target``: heard as the node's event
    (docs/API.md "Events", published once the status is written), then read back to be sure; the
    status is also read every 5 ms, for an event that went missing (PUB/SUB may drop one)."""
    next_read = 0.0
    while True:
        now = time.monotonic()
        if now - t0 > 90:
            raise RuntimeError(f"run {i + 1}: {SID} not started on {target} within 90 s")
        heard = False
        if sub.poll(1):
            ev = decode_event(sub.recv_multipart())
            heard = bool(
                ev
                and ev.get("type") == "service"
                and ev.get("sid") == SID
                and (ev.get("state"), ev.get("node")) == ("started", target)
            )
        if heard or now >= next_read:
            if c.service_state(SID) == ("started", target):
                return
            next_read = now + 0.005


def breakdown(c: LiveCluster, source: str, seen: int, t_call: float, t_seen: float) -> dict[str, float]:
    """Where the command-to-started time went, in ms (see the module doc, "phases")."""
    m = wait_for(partial(_phases_line, c, source, seen), 10, "the source's phases line")
    assert isinstance(m, re.Match)
    out = {f"agent_{k}": float(v) for k, v in (kv.split("=") for kv in m.group(1).split())}
    start, end = float(m.group(2)), float(m.group(3))
    to_migrate = _state_changes(c, "started", "migrate", t_call)
    to_started = _state_changes(c, "migrate", "started", t_call)
    t_mig = to_migrate[0] if to_migrate else start
    t_sta = to_started[0] if to_started else t_seen
    out["master_issue"] = (t_mig - t_call) * 1000  # API call -> the master's round sets "migrate"
    out["lrm_dispatch"] = (start - t_mig) * 1000  # -> the source's agent starts
    out["master_finish"] = (t_sta - end) * 1000  # agent done -> the master's round sets "started"
    out["status_seen"] = (t_seen - t_sta) * 1000  # -> its manager_status write seen by this bench
    target = sum(
        v
        for k, v in out.items()
        if k.startswith("agent_target_") and not k.startswith("agent_target_resume_")
    )
    out["agent_peer_listen"] = out.get("agent_listen_rtt", 0.0) - target  # the request's way there and back
    resume = sum(v for k, v in out.items() if k.startswith("agent_target_resume_"))
    out["agent_peer_resume"] = out.get("agent_resume", 0.0) - resume
    return {k: round(v, 1) for k, v in out.items()}


def run(root: Path, runs: int) -> dict[str, object]:
    c = LiveCluster(root)
    try:
        c.manager("add", SID, "--node", "node1", "--memory", "256")
        c.up()
        paths = VmPlugin(c.config().state_dir, cgroup_base=None)
        first = wait_for(lambda: _answer(paths, "node1"), 120, "vm:100 answering on node1")
        assert isinstance(first, GuestAnswer)
        c.wait_state(SID, "started", node="node1")
        if standby_limit() > 0:  # a cluster at rest holds its standbys (agents/vmstandby.py)
            wait_for(lambda: _standby(paths, "node2"), 30, "a standby of vm:100 on node2")
        rows: list[dict[str, float]] = []
        seen = {n: 0 for n in c.nodes}
        prev = first
        with ApiClient(c.config(), timeout=10.0) as api, contextlib.ExitStack() as stack:
            sub, _ = api.subscribe(("service", "heartbeat"))
            stack.callback(sub.close)  # before the client's context ends (it waits for its sockets)
            try:
                wait_for(partial(_heard, sub, "heartbeat"), 10, "the event stream's first heartbeat")
            except AssertionError:  # the status reads every 5 ms still see each move
                print("no event stream heard (no heartbeat in 10 s): the status is read every 5 ms only")
            for i in range(runs):
                source, target = c.nodes[i % 3], c.nodes[(i + 1) % 3]
                time.sleep(1.0)  # let the previous move settle (LRM results, status writes)
                _drain(sub)
                t0, wall0 = time.monotonic(), time.time()
                api.call("migrate", {"sid": SID, "node": target})
                _await_started(c, sub, target, t0, i)
                took_ms = (time.monotonic() - t0) * 1000
                wall1 = time.time()
                ans = wait_for(partial(_answer, paths, target), 30, f"vm:100 answering on {target}")
                assert isinstance(ans, GuestAnswer)
                if ans.boot_id != first.boot_id or ans.uptime <= prev.uptime:
                    raise RuntimeError(f"run {i + 1}: the guest was not migrated live: {prev} -> {ans}")
                prev = ans
                m = wait_for(partial(_done_line, c, source, seen[source]), 10, "the source's log line")
                assert isinstance(m, re.Match) and m.group(1) == target
                phases = breakdown(c, source, seen[source], wall0, wall1)
                seen[source] += 1
                g = wait_for(partial(_gone_line, c, source, seen[source] - 1), 10, "the source QEMU gone")
                assert isinstance(g, re.Match)
                gone = float(g.group(1))
                total, down, paused, agent, ready = (float(m.group(k)) for k in (2, 3, 4, 5, 6))
                row = {
                    "total_ms": total,
                    "downtime_ms": down,
                    "paused_ms": paused,
                    "agent_ms": agent,
                    "target_ready_ms": ready,
                    "source_gone_ms": gone,
                    "command_to_started_ms": round(took_ms, 1),
                    "overhead_ms": round(took_ms - total, 1),
                    "cluster_ms": round(took_ms - agent, 1),
                }
                row.update({f"phase_{k}_ms": v for k, v in phases.items()})
                rows.append(row)
                print(
                    f"run {i + 1}/{runs}: {source} -> {target}: QEMU {total:.0f} ms "
                    f"(downtime {down:.0f} ms), "
                    f"guest paused {paused:.0f} ms, command -> started {took_ms:.0f} ms "
                    f"(overhead {row['overhead_ms']:.0f} ms: target QEMU launch {ready:.0f} ms, "
                    f"master/LRM {row['cluster_ms']:.0f} ms)"
                )
                print("  phases (ms): " + " ".join(f"{k}={v:g}" for k, v in phases.items()))
        with contextlib.suppress(AssertionError):  # (PYHA_VM_STANDBY=0: none)
            wait_for(lambda: sum(_standby(paths, n) is not None for n in c.nodes) == 2, 10, "2 standbys")
        standby_rss = [_rss_mib(st.pid) for n in c.nodes if (st := _standby(paths, n)) is not None]
        # the service's QEMU (state file, no -incoming marker): only on the last target
        qemus = [n for n in c.nodes if paths.load_state(n, NAME) is not None and not _standby(paths, n)]
        if qemus != [c.nodes[runs % 3]]:
            raise RuntimeError(f"QEMU state left on {qemus}, expected only {c.nodes[runs % 3]}")
    finally:
        c.close()

    def stat(key: str) -> dict[str, float]:
        vals = [r.get(key, 0.0) for r in rows]
        return {"p50": round(statistics.median(vals), 1), "p95": round(percentile(vals, 95), 1)}

    out: dict[str, object] = {
        "runs": runs,
        "accel": "kvm" if kvm_requested() else "tcg",
        "guest_memory_mb": 256,
        **{k: stat(k) for k in rows[0] if not k.startswith("phase_")},
        "phases_p50_ms": {
            k.removeprefix("phase_").removesuffix("_ms"): stat(k)["p50"]
            for k in dict.fromkeys(k for r in rows for k in r if k.startswith("phase_"))
        },
        "standby_rss_mib": standby_rss,  # each idle standby QEMU's resident memory at the end
        "per_run": rows,
        "goals": {"downtime_p50_ms": GOAL_DOWNTIME_MS, "overhead_ms": GOAL_OVERHEAD_MS},
    }
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench vm-migrate")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pyha-bench-") as tmp:
        result = run(Path(tmp), max(1, args.runs))
    down, over = result["downtime_ms"], result["overhead_ms"]
    assert isinstance(down, dict) and isinstance(over, dict)
    print(
        f"downtime p50 {down['p50']} ms (goal <= {GOAL_DOWNTIME_MS}), p95 {down['p95']} ms; "
        f"overhead p50 {over['p50']} ms (goal <= {GOAL_OVERHEAD_MS}), p95 {over['p95']} ms"
    )
    if args.json:
        print(json.dumps(result))
    return 0
