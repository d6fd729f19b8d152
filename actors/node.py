"""One node's runtime: the supervisor that wires store, bus, watchdog and the actors.

Start order: store, bus transport, ``ha-watchdog`` process and its driver,
WatchdogActor, LrmActor, CrmActor, ticker. Orderly stop (SIGTERM): the LRM
handles the shutdown request under the shutdown policy (BEHAVIOUR.md §3.2.5)
and exits, then the CRM (a master releases its lease), then everything is
stopped and the watchdog disarmed. Any unexpected death of a daemon actor
or of the watchdog driver takes the node down *without* disarming: the
watchdog fires and kills the node's services, so the cluster can recover
them safely (this is the supervisor's "defined way").

Self-fencing without the watchdog: the SocketDriver's guard (actors/watchdog.py)
calls :meth:`NodeRuntime.self_fence` when ``ha-watchdog`` died, stalled or failed
to fire. The node then stops acquiring leases and starting services, and kills
its services' process groups, its watchdog and finally its own cgroup (which
holds this daemon and every launch in flight); see docs/RUNTIME.md.

One ``ha-node`` per node: the first holds ``run/<node>/ha-node.lock``; its
leases carry a per-process holder token (``node#token``), so even a second
process on another host cannot believe it holds this node's lease.

Quorum: the node is quorate only while the bus sees a strict majority *and*
the store answered a round trip that started within ``store_quorum_window``
(:class:`StoreHealth`; on etcd a linearizable read only succeeds through a
member that reaches the etcd majority). Losing either is a ``QuorumLost`` for
the WatchdogActor: it stops petting at once, and the daemons stop acquiring
and renewing leases (docs/RUNTIME.md, "etcd mode").
"""

# size: the node supervisor: start and stop order, bus-to-actor wiring, quorum and self-fencing share
#   NodeRuntime's state; its docstring walks through them in order

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import secrets
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pykka
from loguru import logger

from actors.api import ApiActor, ApiQueue, Members, busy_reply
from actors.api import Request as ApiCall
from actors.api import StatusWritten as ApiStatusWritten
from actors.crm_master import CrmActor
from actors.daemon import Exited, Shutdown, Tick, TickGate, Waker
from actors.env import LiveEnv, MovingPlugin, NodeContext
from actors.lrm import LrmActor
from actors.members import MembershipFollower
from actors.metrics import NodeMetrics, TimedStore
from actors.notifier import Notifier
from actors.peer import PeerCalls, VmIncoming
from actors.quiet_rounds import QuietRounds
from actors.supervise import Supervised
from actors.watchdog import (
    WATCHDOG_STATUS_EVERY,
    Disarm,
    Fenced,
    PetTick,
    Quorum,
    SocketDriver,
    WatchdogActor,
    WatchdogClient,
)
from admin.cluster import SHUTDOWN_FILE, ClusterConfig
from admin.member_records import publish_member_version
from admin.private import exposed
from agents import make_registry
from agents.usage import UsageSampler
from agents.vm import VmPlugin
from bus.codec import Envelope
from bus.guard import raise_fd_limit
from bus.keys import CurveKeys
from bus.membership import Membership
from bus.messages import (
    Ack,
    ApiReply,
    ApiRequest,
    CommandResult,
    PeerDown,
    PeerUp,
    QuorumLost,
    QuorumRegained,
    ServiceCommand,
)
from bus.reliability import Outbox
from bus.transport import Transport, TransportConfig
from fence.device import device_problem
from fence.kill import NodeKiller
from fence.procfs import read_pid_file
from ha.announce import Announcer, Reporter, route_results
from ha.env import ResourcePlugin
from ha.errors import HaError
from ha.records import LrmStatus, ManagerStatus
from ha.states import LrmState
from store.base import Changes, Store, open_watch
from store.records import (
    CRM_COMMANDS,
    DATACENTER_CFG,
    GROUPS_CFG,
    LOCATIONS,
    MANAGER_LEASE,
    RESOURCES_CFG,
    RULES_CFG,
    agent_lease,
    read_manager_status,
    write_capacity,
)

# the watcher sleeps on the store's change watch (inotify, etcd watch) and probes the store at
# least this often (the store-health probe: far below store_quorum_window = lease_ttl - watchdog_timeout)
DIR_PROBE_INTERVAL = 0.5
TICK_SLACK = 0.005  # s: a timer that wakes this little early still counts as due
DAEMON_CGROUP = "_daemon"  # <cgroup_base>/<node>/_daemon: this process (no service name starts with "_")
EXIT_FENCED = 2


def advance(deadline: float, interval: float, now: float) -> float:
    """The next deadline of a periodic timer; after a stall, one interval from now (no burst)."""
    nxt = deadline + interval
    return nxt if nxt > now else now + interval


class StoreHealth:
    """Is the store reachable? True while a call that *started* within ``window`` s succeeded.

    The node's store watcher probes ``changed_since`` (every answer is a probe). On
    etcd that is a linearizable range read: it is answered only after the member
    confirmed with a majority that its leader still leads, so a node cut off from
    the etcd majority stops being healthy ``window`` s after the start of its last
    successful probe, even while its bus still works. ``contact`` (etcd:
    ``EtcdStore.quorum_contact``, on the same clock) is when the store's last
    successful linearizable request of any kind started (a lease renewal is one):
    it counts as a probe, so a node at rest that renews its lease needs no other.
    """

    def __init__(
        self,
        window: float,
        clock: Callable[[], float] = time.monotonic,
        contact: Callable[[], float] | None = None,
    ) -> None:
        self.window = window
        self.clock = clock
        self.contact = contact
        self.ok_at = -math.inf  # start time of the last successful probe
        self.last_error: str | None = None

    def probe(self, store: Store, token: str | None) -> Changes | None:
        t0 = self.clock()
        try:
            changes = store.changed_since(token)
        except HaError as e:
            self.last_error = str(e)
            return None
        self.ok_at = max(self.ok_at, t0)
        self.last_error = None
        return changes

    def last_ok(self) -> float:
        return max(self.ok_at, self.contact()) if self.contact is not None else self.ok_at

    def healthy(self) -> bool:
        return self.clock() - self.last_ok() <= self.window

    def describe(self) -> str:
        age = self.clock() - self.last_ok()
        last = f" (last error: {self.last_error})" if self.last_error else ""
        return f"no store round trip succeeded for {age:.1f}s{last}"


class NodeRuntime:
    def __init__(self, cluster: ClusterConfig, node: str, *, spawn_watchdog: bool = True) -> None:
        if node not in cluster.nodes:
            raise ValueError(f"node '{node}' is not a member of cluster '{cluster.cluster}'")
        self.cluster = cluster
        self.node = node
        self.spawn_watchdog = spawn_watchdog
        self.log = logger.bind(ident=f"{node}/node")
        self.stopping = threading.Event()
        # moved by the store watcher when locations/ may have changed (NodeContext.locations_epoch)
        self.locations_epoch = [0]
        self.done = threading.Event()
        self.exit_code = 0
        self._lock = threading.Lock()
        self.watchdog_proc: subprocess.Popen[bytes] | None = None
        self.announcer = Announcer(node)  # what this node announced to the LRMs (as master)
        self.reporter = Reporter(node)  # which of its LRM's results it announced
        self.master: str | None = None
        self._told_quorate: bool | None = None
        self._told_quorate_once = False
        self.fenced = threading.Event()
        self._lock_fd: int | None = None
        # SAFETY: every lease this process holds names it, not just the node (docs/RUNTIME.md)
        self.holder = f"{node}#{secrets.token_hex(6)}"
        self.killer: NodeKiller | None = None
        self.watchdog_driver = "userspace"
        # what nodes/<node>/membership says: the membership version, the members the bus counts up
        self._published: tuple[int, frozenset[str]] | None = None

    def _publish_capacity(self) -> None:
        """This node's CPUs and memory for the ``static`` scheduler (``nodes/<node>/capacity``).

        Nodes that share a host (the local clusters) each report the whole host.
        A failed write is logged: the scheduler then falls back to ``basic``.
        """
        cpus = float(len(os.sched_getaffinity(0)))
        mem = 0.0
        with contextlib.suppress(OSError, ValueError, IndexError):
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemTotal:"):
                    mem = float(line.split()[1]) * 1024
        try:
            write_capacity(self.store, self.node, cpus, mem)
        except HaError as e:
            self.log.warning(f"capacity not published (static scheduler falls back to basic): {e}")

    def claim(self) -> None:
        """Be the only ha-node of this node on this host, with a usable watchdog (else HaError)."""
        c = self.cluster
        # SAFETY (issue #11): a local user who can open a lease file can block the lease
        # (flock works on a read-only descriptor) and so get this node fenced
        where = [c.root, c.keys_dir] + ([c.store_dir] if c.store_kind == "dir" else [])
        problem = exposed(where)
        if problem is not None:
            raise HaError(f"not starting: {problem}")
        self.watchdog_driver = self._choose_driver()
        run = self.cluster.run_dir(self.node)
        run.mkdir(parents=True, exist_ok=True)
        fd = os.open(run / "ha-node.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            other = read_pid_file(run / "ha-node.pid")
            pid = f", pid {other}" if other else ""
            raise HaError(f"{self.node} is already running{pid}; not starting a second ha-node") from None
        self._lock_fd = fd  # held (and the lock with it) until this process ends

    # -- start --------------------------------------------------------------------
    def start(self) -> None:
        c = self.cluster
        # as many descriptors as allowed: a connection flood must not starve the store and the
        # watchdog (the bus's guard keeps a reserve below this limit, bus.guard)
        soft, hard = raise_fd_limit()
        self.log.info(f"open files limit {soft} (hard {hard})")
        if self._lock_fd is None:
            self.claim()
        run = c.run_dir(self.node)
        (run / SHUTDOWN_FILE).unlink(missing_ok=True)
        (run / "ha-node.pid").write_text(f"{os.getpid()}\n")
        self.metrics = NodeMetrics(self.node, c.cluster)
        self.store = TimedStore(c.open_store(), self.metrics)
        self._publish_capacity()
        self.health = StoreHealth(c.store_quorum_window, contact=getattr(self.store, "quorum_contact", None))
        # first probe before anything acts: quorate from the start when the store answers
        first = self.health.probe(self.store, None)
        self._watch_token = first.token if first is not None else None
        keys = CurveKeys.load(c.keys_dir, self.node) if c.curve else None
        membership = Membership.of(sorted(c.nodes.items()))
        self.bus = Transport(
            self.node, membership, cluster=c.cluster, curve=c.curve, keys=keys, config=TransportConfig()
        )
        self.bus.start()
        self._serve_metrics()
        # results and commands are re-sent until acknowledged (on PeerUp and heartbeats)
        self.outbox = Outbox(self.bus.send)
        self.outbox.attach(self.bus.subscribe)
        self.peers = PeerCalls(self.node, self.bus.send)  # requests to other members (actors/peer.py)

        if self.spawn_watchdog:
            self._start_watchdog_process()
        self._join_daemon_cgroup()
        t = c.timing
        node_cg = [c.cgroup_base / self.node] if c.cgroup_base is not None else []
        wd_pid = [self.watchdog_proc.pid] if self.watchdog_proc is not None else []
        self.killer = NodeKiller(node_cg, [c.state_dir / self.node], wd_pid)
        driver = SocketDriver(
            c.watchdog_socket(self.node),
            self.self_fence,
            guard_timeout=c.watchdog_guard_timeout,
            watchdog_timeout=t.watchdog_timeout,
        )
        self.watchdog = WatchdogActor.start(
            self.node, driver, t.renew_interval + t.margin / 2, self.quorate(), self.self_fence
        )

        agents = make_registry(c.state_dir, cgroup_base=c.cgroup_base)
        usage = UsageSampler(node_cg[0] if node_cg else None)
        usage.sample()  # the first reading: the LRM's first writes can carry a rate
        plugins: dict[str, ResourcePlugin] = {k: MovingPlugin(v) for k, v in agents.items()}
        self.ctx = NodeContext(
            node=self.node,
            locations_epoch=self.locations_epoch,
            nodes=sorted(c.nodes),
            cluster=c.cluster,
            store=self.store,
            membership=_NodeMembership(self),
            watchdog=WatchdogClient(self.watchdog),
            plugins=plugins,
            lease_ttl=t.lease_ttl,
            max_workers=c.max_workers,
            shutdown_kind=self._shutdown_kind,
            on_manager_status=self._announce_commands,
            on_lrm_status=self._report_results,
            renew_latency_cap=c.renew_latency_cap,
            holder=self.holder,
            fenced=self.fenced,
            watchdog_confirmed=lambda: driver.confirmed,
            usage=usage,
            metrics=self.metrics,
            notifier=(
                Notifier(c.notify, cluster=c.cluster, node=self.node, metrics=self.metrics)
                if c.notify is not None and c.notify.targets
                else None
            ),
        )
        # live migration: this node as the target (an API operation between members), as the source (the peer)
        self.vm_incoming = VmIncoming(
            self.ctx,
            urllib.parse.urlsplit(c.nodes[self.node]).hostname or "127.0.0.1",
            wake_lrm=lambda: self.lrm_waker.poke(),  # noqa: PLW0108 - the waker is made below
        )
        vm = agents.get("vm")
        if isinstance(vm, VmPlugin):
            vm.peer = self._vm_peer
            self.vm_incoming.warm_up()
        timing = c.core_timing()
        # the API first: the master's status hook (_announce_commands) tells it every write
        self.api_sup = Supervised("API", self._start_api, f"{self.node}/node")
        self.lrm_waker, self.crm_waker = Waker(), Waker()
        self.crm_gate = TickGate()  # ticks the slave CRM would drop are not sent
        lrm_env = LiveEnv(self.ctx, "lrm")
        self.lrm = LrmActor.start(
            self.node,
            lrm_env,
            timing,
            lambda i: LiveEnv(self.ctx, "lrm"),
            c.max_workers,
            c.command_timeout,
            self._exited,
            self.lrm_waker,
            lrm_env.settle_unwatched,
            recheck_interval=c.recheck_interval,
            incoming=self.ctx.incoming,
            on_state=self._lrm_state,
        )
        self.crm = CrmActor.start(
            self.node,
            LiveEnv(self.ctx, "crm"),
            timing,
            self._exited,
            self.crm_waker,
            self.metrics,
            QuietRounds(self.ctx.store),
            # on etcd a look at the lease is a request, and its expiry is the watch's business
            self._manager_lease_left if c.store_kind == "dir" else None,
            self.crm_gate,
        )
        self.bus.subscribe(self._on_bus)
        self.members = MembershipFollower(c, self.node, self._apply_membership)
        self._publish_member_version()
        self.ticker = threading.Thread(target=self._tick_loop, name=f"ticker-{self.node}")
        self.ticker.start()
        self.watcher = threading.Thread(target=self._watch_loop, name=f"store-watch-{self.node}")
        self.watcher.start()
        self.log.info(f"node started (bus {self.bus.endpoint}, store {c.store_url})")

    def _watch_runtime(self) -> None:
        self.metrics.watch_runtime(
            quorate=self.quorate,
            bus_quorate=lambda: self.bus.quorate,
            store_healthy=self.health.healthy,
            peers_up=self.bus.peers_up,
            members=self.cluster.nodes,
            bus_stats=self.bus.stats,
        )

    def _lrm_state(self, state: str) -> None:
        """After each LRM iteration: ``ctx.lrm_active`` says whether it holds its lease and watchdog."""
        if state == LrmState.ACTIVE:
            self.ctx.lrm_active.set()
        else:
            self.ctx.lrm_active.clear()

    def _member_view(self) -> tuple[int, frozenset[str]]:
        """(membership version, the members this node's bus counts up, itself included)."""
        c = self.cluster
        return c.config_version, (self.bus.peers_up() | {self.node}) & frozenset(c.nodes)

    def _publish_member_version(self) -> None:
        """``nodes/<node>/membership``: ha-cluster add-node/remove-node wait for it, and add-node
        checks every member's view of the others (next tick again after a failed write)."""
        c, view = self.cluster, self._member_view()
        try:
            publish_member_version(self.store, self.node, view[0], sorted(c.nodes), sorted(view[1]))
        except HaError as e:
            self.log.warning(f"membership version not published: {e}")
            return
        self._published = view

    def _apply_membership(self, new: ClusterConfig, membership: Membership, keys: CurveKeys | None) -> None:
        """cluster.json lists one member more or fewer (actors/members.py): follow it.

        SAFETY: the bus counts votes by the new list from its next heartbeat on; one
        member at a time keeps every majority of the old list overlapping every
        majority of the new one (bus.membership.one_member_change). A member that
        left is dropped from the node list, not fenced: the master's node status
        turns it ``gone`` (BEHAVIOUR.md §6.1), and it runs nothing (it was emptied
        and stopped first).
        """
        c = self.cluster
        added = sorted(set(new.nodes) - set(c.nodes))
        removed = sorted(set(c.nodes) - set(new.nodes))
        self.bus.set_membership(membership, keys)
        # replaced, never changed in place: other threads iterate the old dicts and lists
        c.nodes, c.metrics_ports = dict(new.nodes), dict(new.metrics_ports)
        c.config_version = new.config_version
        self.ctx.nodes = sorted(new.nodes)
        with contextlib.suppress(pykka.ActorDeadError):
            self.api.tell(Members(dict(new.nodes)))
        self._watch_runtime()
        self.log.info(
            f"membership version {new.config_version}: {len(new.nodes)} members"
            + (f", {' '.join(added)} added" if added else "")
            + (f", {' '.join(removed)} removed" if removed else "")
            + f" (quorum needs {len(new.nodes) // 2 + 1})"
        )
        self.crm_waker.poke()

    def _serve_metrics(self) -> None:
        """Prometheus metrics on the bus address and ``metrics_port`` (docs/OPERATIONS.md); a
        port that cannot be bound is logged, the node runs on without metrics."""
        m, c = self.metrics, self.cluster
        self._watch_runtime()
        where = c.metrics_address(self.node)
        if where is None:
            return
        try:
            m.serve(*where)
        except OSError as e:
            self.log.warning(f"metrics not served on {where[0]}:{where[1]}: {e}")
            return
        self.log.info(f"metrics on http://{where[0]}:{where[1]}/metrics")

    def _choose_driver(self) -> str:
        """The watchdog driver of cluster.json (auto/device/userspace); HaError when unusable."""
        c = self.cluster
        problem = device_problem(c.watchdog_device)
        if c.watchdog == "device" and problem is not None:
            raise HaError(f"watchdog 'device' configured but {problem}")
        if c.watchdog == "auto":
            return "device" if problem is None else "userspace"
        return c.watchdog

    def _start_watchdog_process(self) -> None:
        c = self.cluster
        args = [
            sys.executable, "-P", "-m", "cli.watchdog", "--node", self.node,
            "--socket", str(c.watchdog_socket(self.node)),
            "--timeout", str(c.timing.watchdog_timeout),
            # four status bytes per guard window: one late byte never fences a healthy node
            "--status-every", str(min(WATCHDOG_STATUS_EVERY, c.watchdog_guard_timeout / 4)),
            "--driver", self.watchdog_driver, "--device", c.watchdog_device,
            "--pgid-dir", str(c.state_dir / self.node),
            "--kill-pid", str(os.getpid()),
            "--exit-on-disarm",
        ]  # fmt: skip
        if c.cgroup_base is not None:
            args += ["--cgroup", str(c.cgroup_base / self.node)]
        log = open(c.log_file(self.node).with_suffix(".watchdog.log"), "ab")  # noqa: SIM115
        ready_r, ready_w = os.pipe()
        args += ["--ready-fd", str(ready_w)]
        # its own session: a signal to the node's process group must not reach it
        self.watchdog_proc = subprocess.Popen(
            args, stdout=log, stderr=log, start_new_session=True, pass_fds=(ready_w,)
        )
        log.close()
        os.close(ready_w)
        try:
            with os.fdopen(ready_r, "rb") as r:
                ready = r.readline()
        except OSError:
            ready = b""
        if ready != b"ready\n":
            code = self.watchdog_proc.wait(timeout=10)
            raise HaError(
                f"ha-watchdog did not start (exit code {code}; see {c.log_file(self.node).stem}.watchdog.log)"
            )
        (c.run_dir(self.node) / "ha-watchdog.pid").write_text(f"{self.watchdog_proc.pid}\n")
        self.log.info(f"ha-watchdog started (pid {self.watchdog_proc.pid}, {self.watchdog_driver} driver)")

    def _join_daemon_cgroup(self) -> None:
        """Move this process into ``<cgroup_base>/<node>/_daemon``.

        SAFETY: the node's cgroup then holds this daemon, every service and every
        launch in flight, so one ``cgroup.kill`` (the watchdog's, ha-cluster kill's,
        or our own self-fence) kills them together: no launch can escape a fence by
        forking while the services are being killed. ha-watchdog, started before,
        stays outside.
        """
        base = self.cluster.cgroup_base
        if base is None:
            self.log.warning(
                "no cgroup v2: fencing falls back to process-group records; a service launched"
                " at the moment of a fence could escape it (docs/RUNTIME.md)"
            )
            return
        cg = base / self.node / DAEMON_CGROUP
        try:
            cg.mkdir(parents=True, exist_ok=True)
            (cg / "cgroup.procs").write_text("0")
        except OSError as e:
            raise HaError(f"cannot join the node's cgroup {cg}: {e.strerror or e}") from e

    # -- self-fencing -----------------------------------------------------------------
    def self_fence(self, why: str) -> None:
        """The watchdog cannot protect this node: kill its services and this daemon now.

        SAFETY: called by the watchdog guard (any thread) when ha-watchdog died,
        stalled or did not fire. Order: stop renewing and starting (the flag every
        lease call and every start checks), stop petting, then kill the recorded
        service groups and the watchdog, then the node's cgroup, which holds this
        daemon and every launch in flight: nothing started afterwards survives.
        The node's leases are not released; they expire, and only then does the
        master recover the services (by then they are dead).
        """
        with self._lock:
            if self.fenced.is_set():
                return
            self.fenced.set()
        self.log.critical(f"{why}: fencing this node (its services and this daemon are killed)")
        with contextlib.suppress(Exception):
            self.watchdog.tell(Fenced())
        killer = self.killer or NodeKiller()
        rep = killer.fire(cgroups_last=True)
        # still here: this process is not in the node's cgroup (no cgroup v2)
        self.log.critical(f"fenced: {rep.describe()}")
        with contextlib.suppress(Exception):
            logger.complete()
        sys.stderr.flush()
        os._exit(EXIT_FENCED)

    # -- bus -> actors ----------------------------------------------------------------
    def _on_bus(self, env: Envelope) -> None:
        msg = env.body
        if env.sender != self.node:
            self.ctx.last_seen[env.sender] = time.time()
        # the records were written before these were sent: acknowledge (the LRM
        # acts at most once per UID anyway) and wake the daemon that reads them
        if isinstance(msg, ApiRequest):
            # a bounded mailbox: over a client's share it is answered "busy" here, on the bus thread
            queue = self.api_queue
            why = queue.admit(env)
            if why is not None:
                reply = busy_reply(self.node, env, why)
                if reply is not None:
                    self.bus.reply(env, reply)
                return
            try:
                self.api.tell(ApiCall(env))
            except pykka.ActorDeadError:
                queue.done(env)
        elif isinstance(msg, ApiReply):
            self.peers.deliver(msg)  # the answer to one of this node's requests to a member
        elif isinstance(msg, ServiceCommand):
            self.bus.send(env.sender, Ack(msg.uid))
            self.lrm_waker.poke()
        elif isinstance(msg, CommandResult):
            self.bus.send(env.sender, Ack(msg.uid))
            self.crm_waker.poke()
        elif isinstance(msg, QuorumLost | QuorumRegained):
            self._quorum_changed()
            self.crm_waker.poke()
            self.lrm_waker.poke()
        elif isinstance(msg, PeerUp | PeerDown):
            self.crm_waker.poke()

    # -- records -> bus (written first, then announced) --------------------------------
    def _announce_commands(self, ms: ManagerStatus) -> None:
        """After the master wrote manager_status: deliver what the core says to announce.

        The decision (changed requests are sent, re-checks are not) is
        :class:`ha.announce.Announcer`'s; this only delivers it.
        """
        with contextlib.suppress(pykka.ActorDeadError):
            # a snapshot: ``ms`` is the master's live object, changed by its next round
            self.api.tell(ApiStatusWritten(ms.copy()))  # exact event stream: every write, no merging
        out = self.announcer.after_write(ms)
        for uid in out.superseded:
            self.outbox.ack(uid)  # superseded: stop re-sending it
        for c in out.to_send():
            self.outbox.put(
                c.destination, c.uid, ServiceCommand(c.sid, c.uid, c.state, c.node, c.target, dict(c.params))
            )
        if out.wake_lrm:
            self.lrm_waker.poke()

    def _report_results(self, status: LrmStatus) -> None:
        """After this LRM wrote lrm_status: deliver its new results (:func:`ha.announce.route_results`)."""
        new = self.reporter.take_new(status.results)
        if not new:
            return
        ms: ManagerStatus | None = None
        with contextlib.suppress(HaError):
            ms = read_manager_status(self.store, only_node=self.node)[0]  # its own services suffice
        out = route_results(self.node, new, ms)
        for r in out.to_send():
            assert r.destination is not None
            self.outbox.put(r.destination, r.uid, CommandResult(r.sid, r.uid, r.exit_code))
        if out.wake_crm:
            self.crm_waker.poke()

    # -- quorum ----------------------------------------------------------------------
    def quorate(self) -> bool:
        """Bus majority and a store that answers (see the module doc)."""
        return self.bus.quorate and self.health.healthy()

    def _quorum_changed(self) -> None:
        """Tell the WatchdogActor the current quorum when it changed (any thread)."""
        with self._lock:
            q = self.quorate()
            if q == self._told_quorate:
                return
            self._told_quorate = q
            if not q and self._told_quorate_once:
                why = [] if self.bus.quorate else ["the bus sees no majority"]
                if not self.health.healthy():
                    why.append(self.health.describe())
                self.log.warning(f"not quorate: {'; '.join(why) or 'changed meanwhile'}")
            elif self._told_quorate_once:
                self.log.info("quorate again (bus majority, store reachable)")
            self._told_quorate_once = True
            # under the lock: two threads must not deliver their answers in the wrong order
            with contextlib.suppress(pykka.ActorDeadError):
                self.watchdog.tell(Quorum(q))

    # -- timers and supervision ---------------------------------------------------------
    def _start_api(self) -> pykka.ActorRef[ApiActor]:
        c = self.cluster
        # a new actor starts with an empty mailbox: the new queue counts what it holds
        self.api_queue = ApiQueue()
        return ApiActor.start(
            self.node,
            sorted(c.nodes),
            self.store,
            self.quorate,
            self.bus.reply,
            cluster=c,
            queue=self.api_queue,
            last_seen=self.ctx.last_seen,
            member_ops={"vm_incoming": self.vm_incoming},
        )

    def _vm_peer(self, node: str, args: Mapping[str, Any], timeout: float) -> Mapping[str, Any]:
        """The vm agent's way to the target of a live migration (:data:`agents.vmqmp.Peer`)."""
        result = self.peers.call(node, "vm_incoming", args, timeout)
        return result if isinstance(result, dict) else {}

    @property
    def api(self) -> pykka.ActorRef[ApiActor]:
        return self.api_sup.ref

    def _tick_loop(self) -> None:
        """Pets every ``pet_interval``, the CRM/LRM ticks every ``renew_interval``: one wake-up
        serves both when they coincide (the defaults), and it sleeps until the earlier."""
        c = self.cluster
        next_tick = next_pet = time.monotonic()
        while not self.stopping.is_set():
            now = time.monotonic()
            tick = now >= next_tick - TICK_SLACK
            # The look-ups first, the messages last: each message wakes an actor thread that
            # takes the GIL at this thread's next system call (issue #17: fewer switches).
            if self.watchdog_proc is not None and self.watchdog_proc.poll() is not None:
                # SAFETY: no watchdog, no services (the guard usually saw it first)
                self.self_fence(f"ha-watchdog exited ({self.watchdog_proc.returncode})")
                return
            if tick and not self.stopping.is_set():
                self.api_sup.check()  # issue #10: a dead API actor is restarted, not silent
                self._follow_membership()
            self._quorum_changed()  # SAFETY: a quorum loss reaches the watchdog before the pet
            if now >= next_pet - TICK_SLACK:
                next_pet = advance(next_pet, c.pet_interval, now)
                with contextlib.suppress(pykka.ActorDeadError):
                    self.watchdog.tell(PetTick())
            if tick:
                next_tick = advance(next_tick, c.timing.renew_interval, now)
                for ref in (self.crm, self.lrm):
                    if ref is self.crm and not self.crm_gate.due(now + TICK_SLACK):
                        continue  # a slave CRM waiting for the manager lease's expiry
                    with contextlib.suppress(pykka.ActorDeadError):
                        ref.tell(Tick())
            self.stopping.wait(max(0.0, min(next_pet, next_tick) - time.monotonic()))

    def _manager_lease_left(self) -> float | None:
        """Seconds the manager lease still runs for another holder (a slave CRM's next try)."""
        try:
            info = self.ctx.store.lease_info(MANAGER_LEASE)
        except HaError:
            return None
        if info is None or info.holder == self.ctx.holder:
            return None
        return info.remaining

    def _follow_membership(self) -> None:
        """A changed cluster.json (ha-cluster add-node/remove-node): follow it (actors/members.py)."""
        try:
            self.members.check()  # reads two small files; the store write is the watcher's
        except Exception as e:  # the ticker pets the watchdog: it must not die of this
            self.log.opt(exception=e).error(f"membership change failed: {e}")

    # records an administrator changes: the CRM acts on them at once, not at its next tick.
    # (Only these: status records change every tick and are announced on the bus.)
    ADMIN_RECORDS = frozenset({CRM_COMMANDS, RESOURCES_CFG, RULES_CFG, GROUPS_CFG, DATACENTER_CFG})

    def _watch_loop(self) -> None:
        """Watch the store for admin changes; every look is also the store-health probe.

        The store's change watch (``Store.watch()``: inotify on the dir store's journal,
        an etcd watch) wakes it on a write; it sleeps otherwise. The health probe
        (``changed_since``) runs at least every ``DIR_PROBE_INTERVAL`` s (well inside
        ``store_quorum_window``); on etcd only when no other linearizable request of this
        node (a lease renewal) started within a third of that window; a safety read every
        ``watch.safety_poll`` s. While the watch is down (etcd restarting) or missing it
        polls as before: every 0.1 s on etcd, 0.02 s on the dir store.
        """
        c = self.cluster
        etcd = c.store_kind == "etcd"
        watch = open_watch(self.store)
        polling = 0.1 if etcd else 0.02
        contact = getattr(self.store, "quorum_contact", None) if etcd else None
        token = self._watch_token
        next_observe = next_safety = 0.0
        try:
            while True:
                live = watch is not None and watch.live
                if watch is not None:
                    woke = watch.wait(DIR_PROBE_INTERVAL if live else polling)
                    if self.stopping.is_set():
                        return
                elif self.stopping.wait(polling):
                    return
                else:
                    woke = False
                now = time.monotonic()
                if self._published != self._member_view():
                    self._publish_member_version()  # a new membership or bus view, or a failed write
                if etcd and not live and now >= next_observe:
                    # while the watch is up it notes every lease revision as it arrives
                    next_observe = now + c.timing.renew_interval
                    self._observe_leases()
                if live and not woke and now < next_safety:
                    if contact is not None and now - contact() < c.store_quorum_window / 3:
                        continue  # healthy: a lease renewal reached the etcd majority just now
                if live and watch is not None and now >= next_safety:
                    next_safety = now + watch.safety_poll
                changes = self.health.probe(self.store, token)
                if changes is None:
                    continue
                first = token is None
                token = changes.token
                names = changes.names
                moved = names is None or any(n.startswith(LOCATIONS) for n in names)
                if moved:
                    self.locations_epoch[0] += 1  # the daemons read locations/ again
                if first:
                    continue
                if names is None or moved or names & self.ADMIN_RECORDS:
                    self.crm_waker.poke()
                    self.vm_incoming.changed()  # the vm standbys follow config and locations
        finally:
            if watch is not None:
                watch.close()

    def _observe_leases(self) -> None:
        """Look at the other nodes' leases every tick (etcd).

        An etcd lease held by someone else counts as expired only once *this*
        client saw its revision unchanged for a full ttl (docs/ETCD.md). Watching
        all the time makes that clock start within a tick of the holder's last
        renewal, so a master that must fence a dead node takes its agent lease
        about ``lease_ttl`` after the node's last renewal, not ``lease_ttl`` after
        it first looked. (It can only make take-overs later than the holder's
        deadline, never earlier.)
        """
        names = [agent_lease(n) for n in self.cluster.nodes if n != self.node]
        names.append(MANAGER_LEASE)
        for name in names:
            try:
                self.store.lease_info(name)
            except HaError:
                return

    def _exited(self, ev: Exited) -> None:
        """A daemon's loop ended (called on that daemon's thread)."""
        if ev.error is not None:
            self._fatal(f"{ev.daemon} failed: {ev.error}")
            return
        self.log.info(f"{ev.daemon} exited")
        if ev.daemon == "lrm":
            # the reference's order: the LRM exit triggers the CRM stop (§9.4)
            with contextlib.suppress(pykka.ActorDeadError):
                self.crm.tell(Shutdown())
        elif ev.daemon == "crm":
            threading.Thread(target=self._finish, args=(True, 0), name="node-stop").start()

    def _fatal(self, why: str) -> None:
        """Defined failure: stop acting, keep the watchdog armed, exit. The watchdog fences us."""
        self.log.critical(f"{why}: taking the node down (the watchdog will fence it)")
        threading.Thread(target=self._finish, args=(False, 2), name="node-stop").start()

    def request_shutdown(self, kind: str | None = None) -> None:
        """SIGTERM: 'shutdown' (default), 'reboot' or 'restart' (from the run dir or argument)."""
        if kind is not None:
            (self.cluster.run_dir(self.node) / SHUTDOWN_FILE).write_text(kind)
        self.log.info(f"shutdown requested ({self._request_kind()})")
        with contextlib.suppress(pykka.ActorDeadError):
            self.lrm.tell(Shutdown())

    def _request_kind(self) -> str:
        try:
            return (self.cluster.run_dir(self.node) / SHUTDOWN_FILE).read_text().strip() or "shutdown"
        except FileNotFoundError:
            return "shutdown"

    def _shutdown_kind(self) -> tuple[bool, bool]:
        kind = self._request_kind()
        if kind == "restart":
            return False, False
        return True, kind == "reboot"

    def _finish(self, orderly: bool, code: int) -> None:
        with self._lock:
            if self.stopping.is_set():
                return
            self.stopping.set()
        self.exit_code = code
        for ref in (self.api, self.crm, self.lrm):
            with contextlib.suppress(Exception):
                ref.stop(timeout=10)
        if orderly:
            with contextlib.suppress(Exception):
                self.watchdog.ask(Disarm(), timeout=5)
        with contextlib.suppress(Exception):
            self.watchdog.stop(timeout=5)  # closes the driver: disconnect while armed fires it
        with contextlib.suppress(Exception):
            self.vm_incoming.close()  # its standby QEMUs (agents/vmstandby.py)
        with contextlib.suppress(Exception):
            self.bus.stop()
        with contextlib.suppress(Exception):
            self.store.close()
        with contextlib.suppress(Exception):
            if self.ctx.notifier is not None:
                self.ctx.notifier.close(timeout=2)
        with contextlib.suppress(Exception):
            self.metrics.close()
        if self.watchdog_proc is not None and orderly:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.watchdog_proc.wait(timeout=5)
        (self.cluster.run_dir(self.node) / "ha-node.pid").unlink(missing_ok=True)
        self.log.info("node stopped" + ("" if orderly else " (failure)"))
        self.done.set()


class _NodeMembership:
    """The Env's membership view: peers from the bus, quorum from bus and store."""

    def __init__(self, runtime: NodeRuntime) -> None:
        self.runtime = runtime

    def quorate(self) -> bool:
        return self.runtime.quorate()

    def peers_up(self) -> frozenset[str]:
        return self.runtime.bus.peers_up()
