"""One node's runtime: the supervisor that wires store, bus, watchdog and the actors.

Start order: store, bus transport, ``ha-watchdog`` process and its driver,
WatchdogActor, LrmActor, CrmActor, ticker. Orderly stop (SIGTERM): the LRM
handles the shutdown request under the shutdown policy (BEHAVIOUR.md §3.2.5)
and exits, then the CRM (a master releases its lease), then everything is
stopped and the watchdog disarmed. Any unexpected death of a daemon actor
or of the watchdog driver takes the node down *without* disarming: the
watchdog fires and kills the node's services, so the cluster can recover
them safely (this is the supervisor's "defined way").
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pykka
from loguru import logger

from actors.api import ApiActor
from actors.api import Request as ApiCall
from actors.api import StatusWritten as ApiStatusWritten
from actors.cluster import ClusterConfig
from actors.crm_master import CrmActor
from actors.daemon import Exited, Shutdown, Tick, Waker
from actors.env import LiveEnv, MovingPlugin, NodeContext
from actors.lrm import LrmActor
from actors.watchdog import Disarm, PetTick, Quorum, SocketDriver, WatchdogActor, WatchdogClient
from agents import make_registry
from bus.codec import Envelope
from bus.keys import CurveKeys
from bus.membership import Membership
from bus.messages import (
    Ack,
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
from ha.env import ResourcePlugin
from ha.errors import HaError
from ha.records import LrmStatus, ManagerStatus
from store.dirstore import DirStore
from store.records import (
    CRM_COMMANDS,
    DATACENTER_CFG,
    GROUPS_CFG,
    LOCATIONS,
    RESOURCES_CFG,
    RULES_CFG,
    read_manager_status,
)

SHUTDOWN_FILE = "shutdown-request"


class NodeRuntime:
    def __init__(self, cluster: ClusterConfig, node: str, *, spawn_watchdog: bool = True) -> None:
        if node not in cluster.nodes:
            raise ValueError(f"node '{node}' is not a member of cluster '{cluster.cluster}'")
        self.cluster = cluster
        self.node = node
        self.spawn_watchdog = spawn_watchdog
        self.log = logger.bind(ident=f"{node}/node")
        self.stopping = threading.Event()
        self.done = threading.Event()
        self.exit_code = 0
        self._lock = threading.Lock()
        self.watchdog_proc: subprocess.Popen[bytes] | None = None
        self.announced: dict[str, str] = {}  # sid -> uid last sent to its LRM
        self.reported: set[str] = set()  # result uids already sent to the master
        self.master: str | None = None

    # -- start --------------------------------------------------------------------
    def start(self) -> None:
        c = self.cluster
        run = c.run_dir(self.node)
        run.mkdir(parents=True, exist_ok=True)
        (run / SHUTDOWN_FILE).unlink(missing_ok=True)
        (run / "ha-node.pid").write_text(f"{os.getpid()}\n")
        self.store = DirStore(c.store_dir)
        keys = CurveKeys.load(c.keys_dir, self.node) if c.curve else None
        membership = Membership.of(sorted(c.nodes.items()))
        self.bus = Transport(
            self.node, membership, cluster=c.cluster, curve=c.curve, keys=keys, config=TransportConfig()
        )
        self.bus.start()
        # results and commands are re-sent until acknowledged (on PeerUp and heartbeats)
        self.outbox = Outbox(self.bus.send)
        self.outbox.attach(self.bus.subscribe)

        if self.spawn_watchdog:
            self._start_watchdog_process()
        driver = SocketDriver(c.watchdog_socket(self.node))
        t = c.timing
        self.watchdog = WatchdogActor.start(
            self.node, driver, t.renew_interval + t.margin / 2, self.bus.quorate
        )

        agents = make_registry(c.state_dir, cgroup_base="auto" if c.cgroups else None)
        plugins: dict[str, ResourcePlugin] = {k: MovingPlugin(v) for k, v in agents.items()}
        self.ctx = NodeContext(
            node=self.node,
            nodes=sorted(c.nodes),
            store=self.store,
            membership=_BusMembership(self.bus),
            watchdog=WatchdogClient(self.watchdog),
            plugins=plugins,
            lease_ttl=t.lease_ttl,
            max_workers=c.max_workers,
            shutdown_kind=self._shutdown_kind,
            on_manager_status=self._announce_commands,
            on_lrm_status=self._report_results,
        )
        timing = c.core_timing()
        # the API first: the master's status hook (_announce_commands) tells it every write
        self.api = ApiActor.start(
            self.node, sorted(c.nodes), self.store, lambda: self.bus.quorate, self.bus.reply, cluster=c
        )
        self.lrm_waker, self.crm_waker = Waker(), Waker()
        self.lrm = LrmActor.start(
            self.node,
            LiveEnv(self.ctx, "lrm"),
            timing,
            lambda i: LiveEnv(self.ctx, "lrm"),
            c.max_workers,
            c.command_timeout,
            self._exited,
            self.lrm_waker,
        )
        self.crm = CrmActor.start(self.node, LiveEnv(self.ctx, "crm"), timing, self._exited, self.crm_waker)
        self.bus.subscribe(self._on_bus)
        self.ticker = threading.Thread(target=self._tick_loop, name=f"ticker-{self.node}")
        self.ticker.start()
        self.watcher = threading.Thread(target=self._watch_loop, name=f"store-watch-{self.node}")
        self.watcher.start()
        self.log.info(f"node started (bus {self.bus.endpoint}, store {c.store_dir})")

    def _start_watchdog_process(self) -> None:
        c = self.cluster
        args = [
            sys.executable, "-m", "cli.watchdog", "--node", self.node,
            "--socket", str(c.watchdog_socket(self.node)),
            "--timeout", str(c.timing.watchdog_timeout),
            "--pgid-dir", str(c.state_dir / self.node),
            "--kill-pid", str(os.getpid()),
            "--exit-on-disarm",
        ]  # fmt: skip
        cg = _cgroup_root()
        if cg is not None and c.cgroups:
            args += ["--cgroup", str(cg / "pyha" / self.node)]
        log = open(c.log_file(self.node).with_suffix(".watchdog.log"), "ab")  # noqa: SIM115
        # its own session: a signal to the node's process group must not reach it
        self.watchdog_proc = subprocess.Popen(args, stdout=log, stderr=log, start_new_session=True)
        log.close()
        (c.run_dir(self.node) / "ha-watchdog.pid").write_text(f"{self.watchdog_proc.pid}\n")

    # -- bus -> actors ----------------------------------------------------------------
    def _on_bus(self, env: Envelope) -> None:
        msg = env.body
        if env.sender != self.node:
            self.ctx.last_seen[env.sender] = time.time()
        # the records were written before these were sent: acknowledge (the LRM
        # acts at most once per UID anyway) and wake the daemon that reads them
        if isinstance(msg, ApiRequest):
            with contextlib.suppress(pykka.ActorDeadError):
                self.api.tell(ApiCall(env))
        elif isinstance(msg, ServiceCommand):
            self.bus.send(env.sender, Ack(msg.uid))
            self.lrm_waker.poke()
        elif isinstance(msg, CommandResult):
            self.bus.send(env.sender, Ack(msg.uid))
            self.crm_waker.poke()
        elif isinstance(msg, QuorumLost | QuorumRegained):
            self.watchdog.tell(Quorum(isinstance(msg, QuorumRegained)))
            self.crm_waker.poke()
            self.lrm_waker.poke()
        elif isinstance(msg, PeerUp | PeerDown):
            self.crm_waker.poke()

    # -- records -> bus (written first, then announced) --------------------------------
    def _announce_commands(self, ms: ManagerStatus) -> None:
        """After the master wrote manager_status: send each changed request to its node."""
        with contextlib.suppress(pykka.ActorDeadError):
            self.api.tell(ApiStatusWritten(ms))  # exact event stream: every write, no merging
        current: dict[str, str] = {}
        for sid, sd in ms.service_status.items():
            if not sd.uid or not sd.node:
                continue
            current[sid] = sd.uid
            if self.announced.get(sid) == sd.uid:
                continue
            params = {k: v for k, v in (("timeout", sd.timeout),) if v is not None}
            cmd = ServiceCommand(sid, sd.uid, sd.state, sd.node, sd.target, params)
            old = self.announced.get(sid)
            if old is not None:
                self.outbox.ack(old)  # superseded: stop re-sending it
            if sd.node == self.node:
                self.lrm_waker.poke()
            else:
                self.outbox.put(sd.node, sd.uid, cmd)
        self.announced = current

    def _report_results(self, status: LrmStatus) -> None:
        """After this LRM wrote lrm_status: send new results to the master."""
        ms_master: str | None = None
        with contextlib.suppress(HaError):
            ms_master = read_manager_status(self.store)[0].master_node
        new = [(uid, r) for uid, r in status.results.items() if uid not in self.reported]
        self.reported = set(status.results)
        for uid, r in new:
            msg = CommandResult(r.sid, uid, r.exit_code)
            if ms_master is None or ms_master == self.node:
                self.crm_waker.poke()
            else:
                self.outbox.put(ms_master, uid, msg)

    # -- timers and supervision ---------------------------------------------------------
    def _tick_loop(self) -> None:
        c = self.cluster
        next_tick = time.monotonic()
        quorate = self.bus.quorate
        while not self.stopping.is_set():
            now = time.monotonic()
            with contextlib.suppress(pykka.ActorDeadError):
                self.watchdog.tell(PetTick())
            q = self.bus.quorate
            if q != quorate:
                quorate = q
                with contextlib.suppress(pykka.ActorDeadError):
                    self.watchdog.tell(Quorum(q))
            if now >= next_tick:
                next_tick = now + c.timing.renew_interval
                for ref in (self.crm, self.lrm):
                    with contextlib.suppress(pykka.ActorDeadError):
                        ref.tell(Tick())
            if self.watchdog_proc is not None and self.watchdog_proc.poll() is not None:
                self._fatal(f"ha-watchdog exited ({self.watchdog_proc.returncode})")
                return
            self.stopping.wait(c.pet_interval)

    # records an administrator changes: the CRM acts on them at once, not at its next tick.
    # (Only these: status records change every tick and are announced on the bus.)
    ADMIN_RECORDS = frozenset({CRM_COMMANDS, RESOURCES_CFG, RULES_CFG, GROUPS_CFG, DATACENTER_CFG})

    def _watch_loop(self, interval: float = 0.02) -> None:
        token: str | None = None
        while not self.stopping.wait(interval):
            try:
                changes = self.store.changed_since(token)
            except HaError:
                continue
            first = token is None
            token = changes.token
            if first:
                continue
            names = changes.names
            if names is None or names & self.ADMIN_RECORDS or any(n.startswith(LOCATIONS) for n in names):
                self.crm_waker.poke()

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
            self.bus.stop()
        with contextlib.suppress(Exception):
            self.store.close()
        if self.watchdog_proc is not None and orderly:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.watchdog_proc.wait(timeout=5)
        (self.cluster.run_dir(self.node) / "ha-node.pid").unlink(missing_ok=True)
        self.log.info("node stopped" + ("" if orderly else " (failure)"))
        self.done.set()


class _BusMembership:
    """The Env's membership view, from the bus transport."""

    def __init__(self, bus: Transport) -> None:
        self.bus = bus

    def quorate(self) -> bool:
        return self.bus.quorate

    def peers_up(self) -> frozenset[str]:
        return self.bus.peers_up()


def _cgroup_root() -> Path | None:
    for candidate in (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup")):
        if (candidate / "cgroup.controllers").exists():
            return candidate
    return None
