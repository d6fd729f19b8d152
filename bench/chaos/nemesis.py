"""The nemesis: :class:`Chaos` injects the schedule's faults one at a time and heals each.

Every step: pick the node (or service), inject the fault and hold it, heal, wait
until every service answers, then check (:class:`bench.chaos.heal.Healer`) for
double runs and nodes that fenced themselves. :meth:`Chaos.run` is the whole run.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import time
from typing import Final

from bench.chaos.heal import Healer
from bench.chaos.observe import Poller, log
from bench.chaos.schedule import CLUSTER_KINDS, CONFIG_HARM_OUTAGE_S, COVER_LIMIT, Options, Schedule, Step
from bench.livecluster import LiveCluster, process_cmdline
from bench.markers import read_copies

STEP_SETTLE_S: Final = 20.0  # after each heal: wait up to this long until every service answers
SETUP_CALM_S: Final = 2.0


class Chaos(Healer):
    """Injects the faults of a seeded schedule on a live cluster, one at a time, each healed and checked."""

    def __init__(self, c: LiveCluster, opts: Options) -> None:
        super().__init__(c, [f"proc:svc{i}" for i in range(1, opts.services + 1)])
        self.o = opts
        self.faults = dict.fromkeys(opts.kinds, 0)
        self.self_fenced = 0
        self.collateral: list[str] = []
        self.steps: list[dict[str, object]] = []
        self.inconsistent: list[str] = []
        # config_corrupt steps during which a service stopped or a node fenced
        self.config_harm: list[str] = []

    # -- faults -------------------------------------------------------------------------------
    def sig(self, node: str, what: str, sig: signal.Signals) -> int | None:
        """Send SIG to NODE's WHAT (ha-node / ha-watchdog) if it runs; its pid."""
        pid = self.c.running_pid(node, what)
        if pid is None:
            return None
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return None
        if sig == signal.SIGSTOP:
            self.stopped.add(pid)
        return pid

    def service_pid(self, sid: str) -> int | None:
        """The running demo service of SID: from its HTTP answer, else its newest marker copy."""
        assert self.poller is not None
        ans = self.poller.answer(sid) or self.c.ask(sid)
        pid: int | None = None
        if ans is not None and isinstance(ans.get("pid"), int):
            pid = int(str(ans["pid"]))
        else:
            copies, _ = read_copies(self.c.markers)
            if copies.get(sid):
                pid = copies[sid][-1].pid
        if pid is None:
            return None
        cmd = process_cmdline(pid)  # a recycled pid is not the service
        return pid if "agents.demo_service" in cmd and str(self.c.markers) in cmd else None

    def apply(self, s: Step) -> str | None:
        """Inject step S and hold it (the caller heals); None when applied, else why it was skipped."""
        c, node = self.c, s.node
        if s.kind == "node_kill":
            with_etcd = c.store_kind == "etcd"  # a host crash takes the member with it
            if not self.cli(f"kill {node}", lambda: c.kill(node, with_etcd=with_etcd)):
                return "kill failed"
            self.sleep(s.hold)
        elif s.kind in ("daemon_kill", "watchdog_kill"):
            what = "ha-node" if s.kind == "daemon_kill" else "ha-watchdog"
            if self.sig(node, what, signal.SIGKILL) is None:
                return f"{what} of {node} not running"
            self.sleep(s.hold)
        elif s.kind in ("daemon_stop", "watchdog_stop"):
            what = "ha-node" if s.kind == "daemon_stop" else "ha-watchdog"
            pid = self.sig(node, what, signal.SIGSTOP)
            if pid is None:
                return f"{what} of {node} not running"
            self.sleep(s.hold)
            self.cont(pid)
        elif s.kind == "both_kill":
            if self.sig(node, "ha-watchdog", signal.SIGKILL) is None:
                return f"ha-watchdog of {node} not running"
            self.sleep(self.o.both_kill_gap)
            if self.sig(node, "ha-node", signal.SIGKILL) is None:
                log(f"{self.t()}     (ha-node of {node} was gone before its SIGKILL)")
            self.sleep(s.hold)
        elif s.kind == "both_stop":
            wd = self.sig(node, "ha-watchdog", signal.SIGSTOP)
            if wd is None:
                return f"ha-watchdog of {node} not running"
            self.sleep(self.o.both_stop_gap)
            hn = self.sig(node, "ha-node", signal.SIGSTOP)
            if hn is None:
                log(f"{self.t()}     (ha-node of {node} was gone before its SIGSTOP)")
            self.sleep(s.hold)
            self.cont(wd)
            self.cont(hn)
        elif s.kind == "service_kill":
            sid = self.sids[s.service]
            pid = self.service_pid(sid)
            if pid is None:
                return f"{sid} has no running copy"
            try:
                os.killpg(os.getpgid(pid), signal.SIGKILL)
            except ProcessLookupError:
                return f"{sid} (pid {pid}) already gone"
            log(f"{self.t()}     {sid}: SIGKILLed process group of pid {pid}")
        elif s.kind == "partition":
            if not self.cli(f"partition {node}", lambda: c.partition(node)):
                return "partition failed"
            self.partitioned.add(node)
            self.sleep(s.hold)
        elif s.kind == "etcd_kill":
            if not self.cli(f"etcd-kill {node}", lambda: c.etcd_kill(node)):
                return "etcd-kill failed"
            self.etcd_down.add(node)
            self.sleep(s.hold)
        elif s.kind == "lrm_restart":
            if c.running_pid(node) is None:
                return f"ha-node of {node} not running"
            self.cli(f"stop {node} --kind restart", lambda: c.stop(node, kind="restart"))
            self.sleep(s.hold)
        elif s.kind == "migrate":
            sid = self.sids[s.service]
            assert self.poller is not None
            ans = self.poller.answer(sid)
            cur = str(ans["node"]) if ans is not None else (c.service_state(sid)[1] or "")
            i = c.nodes.index(cur) if cur in c.nodes else 0
            target = c.nodes[(i + 1 + s.offset) % len(c.nodes)]
            res = c.manager("migrate", sid, target, check=False)
            if res.returncode != 0:
                return f"migrate {sid} {target} refused: {(res.stderr or res.stdout).strip()[:200]}"
            log(f"{self.t()}     migrate {sid} {cur} -> {target}")
            try:
                c.wait_serving(sid, STEP_SETTLE_S, on=target)
            except AssertionError:
                self.note(f"{sid} not answering on {target} {STEP_SETTLE_S:g} s after the migrate")
        elif s.kind == "config_corrupt":
            return self.corrupt_config(s)
        else:  # pragma: no cover - kinds are validated
            raise ValueError(s.kind)
        return None

    def corrupt_config(self, s: Step) -> str | None:
        """Random bytes in a config file (always one that is not UTF-8) for the hold, then the original.

        Issue #10: no service may stop and no node may fence because of it; the
        step checks both (``config_harm``).
        """
        if self.store is None:
            self.store = self.c.open_store()
        name, rng = s.config_file, random.Random(s.pick)
        record = self.store.read(name)
        original = None if record is None else record.data
        base = original or b""
        junk = bytes([0xFF]) + rng.randbytes(rng.randint(0, 64))
        if base and rng.random() < 0.7:
            at = rng.randrange(len(base) + 1)
            bad = base[:at] + junk + base[at:]
        else:
            bad = junk
        self.store.write(name, bad)
        log(f"{self.t()}     {name}: {len(junk)} random bytes in ({len(base)} bytes before)")
        self.sleep(s.hold)
        if original is None:
            self.store.delete(name)
        else:
            self.store.write(name, original)
        return None

    def target(self, s: Step) -> str:
        """The node a node fault hits (seeded pick among the nodes running a service, or all)."""
        assert self.poller is not None
        serving = sorted({str(a["node"]) for sid in self.sids if (a := self.poller.answer(sid)) is not None})
        cands = [n for n in serving if n in self.c.nodes] if s.busy else []
        cands = cands or self.c.nodes
        return cands[s.pick % len(cands)]

    def step(self, s: Step) -> None:
        if s.node_fault:
            s.node = self.target(s)
        label = s.label(self.sids)
        self.current = label
        before = self.fence_counts()
        t_start = time.monotonic()
        skipped = self.apply(s)
        held = time.monotonic() - t_start
        self.current = f"{label} (healing)"
        if s.node_fault:
            self.heal_node(s.node)
        healed = time.monotonic() - t_start - held
        self.current = f"{label} (settling)"
        waited = self.wait_answering(STEP_SETTLE_S)
        after = self.fence_counts()
        fenced = [n for n in self.c.nodes if after[n] != before[n]]
        if s.node_fault and s.node in fenced:
            self.self_fenced += 1
        for n in fenced:
            if n != s.node or not s.node_fault:
                self.collateral.append(f"{label}: {n} fenced itself")
        new, events = self.check_overlaps(label)
        assert self.poller is not None
        outage = self.poller.worst_since(t_start)
        if s.kind in CLUSTER_KINDS and skipped is None:
            harm = [f"{label}: {n} fenced itself" for n in fenced]
            if outage[0] > CONFIG_HARM_OUTAGE_S:
                harm.append(f"{label}: a service did not answer for {outage[0]:.1f}s ({outage[1]})")
            self.config_harm.extend(harm)
        if skipped is not None:
            log(f"{self.t()} {label}: skipped ({skipped})")
        else:
            self.faults[s.kind] += 1
            took = f"hold {held:.1f}s, healed in {healed:.1f}s" if s.node_fault else f"took {held:.1f}s"
            ans = f"all answering after {waited:.1f}s" if waited is not None else "NOT all answering"
            fence = f", fenced: {','.join(fenced)}" if fenced else ""
            out = f", longest outage {outage[0]:.1f}s ({outage[1]})" if outage[0] > 0 else ""
            dbl = (
                f", DOUBLE RUNS: {new} new ({events} event(s))" if new
                else f", {events} more event(s) of earlier double runs" if events
                else ", no double run"
            )  # fmt: skip
            log(f"{self.t()} {label}: {took}, {ans}{fence}{out}{dbl}")
        self.steps.append({
            "i": s.index, "kind": s.kind, "node": s.node if s.node_fault else None,
            "service": self.sids[s.service] if s.kind in ("service_kill", "migrate") else None,
            "file": s.config_file if s.kind in CLUSTER_KINDS else None, "hold_s": round(held, 2),
            "skipped": skipped, "fenced": fenced, "longest_outage_s": round(outage[0], 2),
            "new_double_runs": new,
        })  # fmt: skip
        self.current = f"after {label}"
        self.sleep(s.pause)

    # -- the whole run ------------------------------------------------------------------------
    def setup(self) -> None:
        c = self.c
        for i, sid in enumerate(self.sids):
            c.add_service(sid, c.nodes[i % len(c.nodes)])
        c.up()
        for i, sid in enumerate(self.sids):
            c.wait_serving(sid, 60, on=c.nodes[i % len(c.nodes)])
        self.poller = Poller(c.hosts, dict(c.ports), self.fault_label)
        self.poller.start()
        time.sleep(SETUP_CALM_S)  # answering is not yet started: let the LRMs finish their start checks

    def run(self) -> tuple[float, float | None, list[str]]:
        """The whole run: setup, the faults, the final heal and settle; (fault time, settled after, down)."""
        o = self.o
        sched = Schedule(o.seed, o.kinds, self.c.nodes, len(self.sids))
        log(f"{self.t()} setting up: {len(self.c.nodes)} nodes ({self.c.store_kind} store"
            f"{', network namespaces' if self.c.netns else ''}), {len(self.sids)} services")  # fmt: skip
        self.setup()
        self.check_overlaps("setup")
        self.t0 = time.monotonic()
        budget = o.minutes * 60
        log(f"{self.t()} faults for {o.minutes:g} min, seed {o.seed}, kinds {','.join(o.kinds)}")
        while True:
            used = time.monotonic() - self.t0
            if used >= budget and not (o.cover and not sched.covered() and used < COVER_LIMIT * budget):
                break
            if o.fail_fast and self.incidents:
                log(f"{self.t()} a double run was found: no more faults (--fail-fast)")
                break
            self.current = "between steps"
            down = self.heal_all()
            if down:
                # never fault a second node while one is still down: wait for it instead
                self.sleep(2)
                continue
            s = sched.next()
            self.step(s)
            if self.steps[-1]["skipped"] is not None and self.faults[s.kind] == 0:
                sched.retry(s.kind)  # not injected yet: keep the first round complete
        fault_time = time.monotonic() - self.t0
        self.current = "final heal"
        log(f"{self.t()} faults done ({sched.count} steps); healing everything, settling up to {o.settle:g}s")
        t_heal = time.monotonic()
        down = self.heal_all()
        self.current = "final settle"
        waited = self.wait_answering(max(1.0, o.settle - (time.monotonic() - t_heal)))
        settled = round(time.monotonic() - t_heal, 2) if waited is not None else None
        if waited is not None:
            self.sleep(1.0)  # a copy started late would show up in the markers now
        self.check_overlaps("end")
        self.inconsistent = self.where_at_end()
        return fault_time, settled, down

    def teardown(self) -> list[int]:
        """Stop polling, SIGCONT what we stopped, tear the cluster down; leftover pids killed."""
        if self.poller is not None:
            self.poller.stop()
        for pid in list(self.stopped):
            self.cont(pid)
        if self.store is not None:
            with contextlib.suppress(Exception):
                self.store.close()
        self.c.close()
        return self.c.kill_leftovers()
