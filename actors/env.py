"""The live runtime's implementation of the core's Env port.

One ``LiveEnv`` per daemon (CRM, LRM, each worker) of a node. Records and
leases go to the store; quorum and membership come from the bus; watchdog
calls go to the node's WatchdogActor; logs go to loguru. Nothing here
sleeps: the core's sleeps are the actors' timers.

Store trouble (``StoreError``: etcd unreachable, no majority, or a write
whose answer was lost, "outcome unknown") never makes the core believe it
holds a lease: a lease call that fails or takes longer than
``renew_latency_cap`` answers "not acquired" (the watchdog is then not
updated). Writes whose outcome is unknown are re-read before the next one:
``manager_status`` is written with compare-and-swap on the version this
master last saw, ``locations/<sid>`` moves and the ``crm_commands`` drain
look at the record again to learn whether they happened.
"""

# size: LiveEnv implements the whole ha.env.Env port for the live runtime, one method per port call, with
#   the store-trouble rules of its docstring

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from loguru import logger

from actors.metrics import NodeMetrics
from actors.moves import RoundMoves, batches
from actors.notifier import Notifier
from actors.observe import MasterObserver
from admin.placement import place_unplaced
from agents.usage import Usage, UsageSampler
from agents.vmspec import static_caps
from fence.clock import boottime
from ha.config.datacenter import DatacenterConfig, parse_datacenter_cfg
from ha.config.groups import GroupConfig, format_groups_cfg, parse_groups_cfg
from ha.config.inforce import InForce, Reading
from ha.config.resources import ResourceConfig, ServiceConfig, format_resources_cfg, parse_resources_cfg
from ha.config.rules import RulesConfig, format_rules_cfg, parse_rules_cfg
from ha.config.sectionconfig import edit_config
from ha.crs.stats import DYNAMIC, STATIC, GuestInfo, NodeStats, ServiceStats
from ha.env import NodeInfo, ResourcePlugin
from ha.errors import ConfigError, HaError, LockLost
from ha.records import LrmStatus, ManagerStatus
from ha.states import RequestedState
from ha.status import crs_in_use
from store import records as rec
from store.base import ABSENT, Record, Store, StoreError, VersionConflict
from store.etcd_batch import MAX_WRITES

MIB = 1024 * 1024
NODE_VERSION = "9.1.0"  # satisfies the group-to-rules migration's minimum (§5.14)

_LEVELS = {
    "err": "ERROR",
    "warn": "WARNING",
    "warning": "WARNING",
    "notice": "INFO",
    "info": "INFO",
    "email": "WARNING",
    "debug": "DEBUG",
}


class Membership(Protocol):
    """What the Env needs of the bus."""

    def quorate(self) -> bool: ...

    def peers_up(self) -> frozenset[str]: ...


class WatchdogPort(Protocol):
    """The node's watchdog multiplexer (actors/watchdog.py)."""

    def open(self, client: str, at_most: float | None = None) -> str: ...

    def update(self, handle: str, at_most: float | None = None) -> None: ...

    def close(self, handle: str) -> None: ...


# s: how old a location record read by the manager may be for the move that follows (_location)
LOCATION_REUSE = 1.0


@dataclass
class NodeContext:
    """What every daemon of one node shares."""

    node: str
    nodes: list[str]
    store: Store
    membership: Membership
    watchdog: WatchdogPort
    plugins: dict[str, ResourcePlugin]
    lease_ttl: float
    max_workers: int = 4
    # (shutdown, reboot) as the reference's is_node_shutdown (§3.2.5)
    shutdown_kind: Callable[[], tuple[bool, bool]] = lambda: (False, False)
    # announcements after records were written (the actors send bus messages)
    on_manager_status: Callable[[ManagerStatus], None] | None = None
    on_lrm_status: Callable[[LrmStatus], None] | None = None
    # wall time at which the bus last heard from each node (any message, heartbeats included)
    last_seen: dict[str, float] = field(default_factory=dict)
    # SAFETY: a lease call that took longer than this is not relied on (docs/RUNTIME.md)
    renew_latency_cap: float = 0.5
    # who holds this process's leases: "node#token", unique per ha-node process
    holder: str = ""
    # set when the node fences itself: no lease is acquired or renewed, no service started
    fenced: threading.Event = field(default_factory=threading.Event)
    # live migration (actors/peer.py): sid -> monotonic deadline of a guest coming in here; while
    # one is pinned the LRM takes and keeps its agent lease and watchdog (actors/lrm.py PacedLRM)
    incoming: dict[str, float] = field(default_factory=dict)
    # set while this node's LRM is active after its last iteration (agent lease renewed in it,
    # watchdog armed), cleared otherwise
    lrm_active: threading.Event = field(default_factory=threading.Event)
    # ha-watchdog confirmed recently that it is armed (the SocketDriver's guard view)
    watchdog_confirmed: Callable[[], bool] = lambda: True
    # the cluster's name (services see it as PYHA_CLUSTER)
    cluster: str = ""
    # measures the node's and its services' CPU and memory (the ``dynamic`` scheduler's stats);
    # only the LRM samples it, when it writes lrm_status
    usage: UsageSampler | None = None
    # the node's Prometheus metrics and the master's notification targets (docs/OPERATIONS.md)
    metrics: NodeMetrics | None = None
    notifier: Notifier | None = None
    # counted up by the node's store watcher when locations/ may have changed (or it cannot
    # tell); None without a watcher: the daemons then ask the store's change log each time
    locations_epoch: list[int] | None = None
    _parse_lock: threading.Lock = field(default_factory=threading.Lock)


class _Unknown:
    """The version of a record whose last write has an unknown outcome: re-read it."""


_UNKNOWN = _Unknown()

# lrm_status and manager_status are written on a change only, never to refresh their timestamps
# (issue #17; docs/RUNTIME.md, "At rest"): `ha-manager status` takes a daemon's proof of life from
# its lease or the bus (admin/liveness.py), not from the record's age. The one exception: under
# the dynamic scheduler an LRM writes its measured usage when it moved (agents/usage.py
# ``Usage.moved_from``), at most every USAGE_REFRESH seconds.
USAGE_REFRESH = 10.0
# The measured usage of a node the bus does not count up, and whose lrm_status is older than
# this, is not used (a node that stopped: `ha-manager status` calls it "dead?" after 30 s too).
USAGE_MAX_AGE = 30.0
_STALE = _Unknown()  # changed by another writer: re-read (the content, not just the version) first


class LiveEnv:
    # Groups stay groups on a live cluster (issue #13): the master applies each group used by a
    # resource as a node-affinity rule in memory every round (ha/groups.py ``add_group_rules``,
    # the engine the reference's migration would have written) and never deletes groups.cfg,
    # so groupadd/groupset/--group and rules work side by side. The simulator keeps the
    # reference's migration (§5.14).
    migrate_groups = False

    def __init__(self, ctx: NodeContext, daemon: str) -> None:
        self.ctx = ctx
        self.daemon = daemon
        self.ident = f"{ctx.node}/{daemon}"
        self.log_ = logger.bind(ident=self.ident)
        self._bad_config_logged: set[str] = set()
        self._config_errors: dict[str, list[str]] = {}  # file -> errors last recorded
        self._in_force: dict[str, InForce[Any]] = {}  # file -> this daemon's reading of it
        # manager_status as this daemon last read or wrote it (the CRM's CAS base)
        self._ms_version: str | _Unknown | None = _UNKNOWN
        self._store_trouble: str | None = None  # last lease-call problem logged (no repeats)
        self._renewed: dict[str, float] = {}  # lease -> boottime start of its last counted renewal
        self._manager_lease_held = False  # the last get_ha_manager_lock succeeded
        self._crm_watchdog: str | None = None  # the CRM's watchdog handle while it holds one
        # the last location record read (sid, record, monotonic time): see _location
        self._location_seen: tuple[str, Record | None, float] | None = None
        # the master's location reads and moves of a round, batched on etcd (actors/moves.py)
        self._moves = RoundMoves(LOCATION_REUSE, MAX_WRITES)
        # the resources.cfg this daemon last read: a location without a record is its node there
        self._service_config_seen: ServiceConfig | None = None
        self._to_drain: bytes | None = None  # crm_commands read this round, drained after manager_status
        # the LRM may have left an unwatched mark (an earlier process, or its own release): clear it
        # once its watchdog is armed again
        self._unwatched_maybe = daemon == "lrm"
        self._refused_fence: dict[str, bytes] = {}  # node -> the unwatched mark already logged
        self._placement_checked: str | _Unknown | None = _UNKNOWN  # resources.cfg version placed
        self._resources_epoch = 0  # bumped to parse resources.cfg again for a location change
        self._parsed_locations: dict[str, str] = {}  # the locations the config in force follows
        self._locations = rec.LocationsCache()
        self._crm_ms_parsed: tuple[str | None, ManagerStatus] | None = None  # a slave CRM's last read
        # what this daemon last wrote (without its timestamp), when, and the version written
        self._lrm_written: tuple[dict[str, Any], float] | None = None
        self._usage_written: Usage | None = None  # the measured usage the last write carried
        # node -> (its measured usage, its lrm_status timestamp) as this daemon last read them
        self._usage_seen: dict[str, tuple[rec.NodeUsage | None, float | None]] = {}
        # sid -> (its last measured (cpu, mem), when): bridges a move until the new node measured it
        self._last_measured: dict[str, tuple[tuple[float, float], float]] = {}
        self._ms_written: tuple[dict[str, Any], float, str] | None = None
        self._ms_parsed: tuple[str, ManagerStatus] | None = None  # the LRM's last read, by version
        # the master's metrics and notifications, from what the core writes (actors/observe.py)
        self.observer = (
            MasterObserver(ctx.metrics, ctx.notifier, ctx.last_seen)
            if daemon == "crm" and ctx.metrics is not None
            else None
        )

    @property
    def holder(self) -> str:
        return self.ctx.holder or self.ctx.node

    # -- identity, time, log ------------------------------------------------
    def nodename(self) -> str:
        return self.ctx.node

    def get_time(self) -> float:
        return time.time()

    def log(self, level: str, msg: str) -> None:
        lvl = _LEVELS.get(level.strip(), "INFO")
        self.log_.log(lvl, msg.rstrip("\n"))

    def cluster_name(self) -> str:
        """The cluster's name (agents pass it to services as ``PYHA_CLUSTER``)."""
        return self.ctx.cluster

    def send_notification(self, prefix: str, text: str, node: str) -> None:
        self.log_.warning(f"{prefix}: {text}")
        if self.observer is not None:
            self.observer.notification(prefix, text, node)

    def sleep(self, seconds: float) -> None:
        pass  # the actor's next tick is the sleep

    def sleep_until(self, when: float) -> None:
        pass

    def loop_start_hook(self) -> None:
        pass

    def loop_end_hook(self) -> None:
        pass

    # -- membership -------------------------------------------------------------
    def cluster_state_update(self) -> bool:
        return True

    def quorate(self) -> bool:
        return self.ctx.membership.quorate()

    def get_node_info(self) -> tuple[dict[str, NodeInfo], bool]:
        quorate = self.ctx.membership.quorate()
        up = self.ctx.membership.peers_up()
        info = {n: NodeInfo(quorate and (n == self.ctx.node or n in up)) for n in self.ctx.nodes}
        return info, quorate

    def get_node_last_seen(self, node: str) -> float | None:
        return self.ctx.last_seen.get(node)

    def is_node_shutdown(self) -> tuple[bool, bool]:
        return self.ctx.shutdown_kind()

    def get_node_version(self, node: str) -> str | None:
        return NODE_VERSION if node in self.ctx.nodes else None

    # -- records -------------------------------------------------------------------
    def _config(
        self,
        name: str,
        parse: Callable[[str, str | None], tuple[object, list[ConfigError]]],
        entries: Callable[[object], MutableMapping[str, Any]] | None,
        key_extra: str = "",
        read: tuple[Record | None] | None = None,
    ) -> Reading[Any]:
        """A config file as in force on this node (``ha.config.inforce``): never raises for its content.

        Config errors and what was kept from the last good reading are logged once
        each and reported (``_config_problem``). ``read``: the record as the caller just
        read it (one request less on etcd), else it is read here.
        """
        record = self.ctx.store.read(name) if read is None else read[0]
        version = None if record is None else record.version
        view = self._in_force.get(name)
        if view is None:
            view = self._in_force[name] = InForce(name, entries)
        reading = view.read(None if record is None else record.data, version, parse, key_extra)
        if reading.fresh:
            if reading.kept:
                self._note_kept(name, version, reading.kept)
            self._report(name, reading.errors, version)
        return reading

    def _report(self, name: str, errors: list[ConfigError], version: str | None) -> None:
        for e in errors:
            key = f"{version}:{e}"
            if key not in self._bad_config_logged:
                self._bad_config_logged.add(key)
                self.log("err", f"configuration error, section skipped: {e}")
        self._config_problem(name, [str(e) for e in errors])

    def _note_kept(self, name: str, version: str | None, kept: list[str]) -> None:
        key = f"{version}:kept:{','.join(kept)}"
        if key not in self._bad_config_logged:
            self._bad_config_logged.add(key)
            self.log("err", f"{name} has errors: keeping the last good configuration of {', '.join(kept)}")

    def _config_problem(self, name: str, errors: list[str]) -> None:
        """The master records which config files have errors, and since when (``ha-manager status``).

        Only the CRM's Env writes it (only the master reads the config in the CRM),
        and only when the list changed; a failed write is retried on the next change
        or the next master. It is a report, never an input to any decision.
        """
        if self.daemon != "crm" or self._config_errors.get(name, []) == errors:
            return
        self._config_errors[name] = errors
        try:
            rec.update_config_errors(self.ctx.store, name, errors, time.time())
        except HaError as e:
            self.log("warning", f"could not record the config errors of {name}: {e}")

    def read_manager_status(self) -> ManagerStatus:
        """The record; a read becomes the compare-and-swap base only when this Env has none.

        Once this master wrote, its base is its own last write: reads by the CRM's
        health checks (every iteration) must not move it, or a change by another
        writer would be adopted without the Manager ever seeing it (issue #10).
        """
        if self.daemon == "lrm":
            return self._lrm_read_manager_status()
        # The CRM looks every iteration (CRM.healthy, can_get_active, allowed_to_get_idle):
        # parsed again only when the record changed (issue #15/#17: the whole status of
        # thousands of services, on every node, twice a second). Every reader gets the same
        # object: none changes what it reads (the Manager copies what it starts from).
        record = self.ctx.store.read(rec.MANAGER_STATUS)
        version = None if record is None else record.version
        if self._crm_ms_parsed is None or self._crm_ms_parsed[0] != version:
            raw = {} if record is None else rec.decode_json(rec.MANAGER_STATUS, record.data)
            self._crm_ms_parsed = (version, ManagerStatus.from_dict(raw))
        ms = self._crm_ms_parsed[1]
        if isinstance(self._ms_version, _Unknown):  # first read, unknown outcome, or stale
            self._ms_version = version
        if self.observer is not None and self._manager_lease_held and self.observer.needs_baseline:
            self.observer.baseline(ms)  # a new term: report only what changes under this master
        return ms

    def _lrm_read_manager_status(self) -> ManagerStatus:
        """The LRM's read, every tick: parsed again only when the record changed.

        The LRM only reads what it gets (ha/lrm.py ``update_service_status`` even
        recognises the same object again), so an unchanged record is the same object.
        """
        record = self.ctx.store.read(rec.MANAGER_STATUS)
        if record is None:
            self._ms_parsed = None
            return ManagerStatus()
        if self._ms_parsed is not None and self._ms_parsed[0] == record.version:
            return self._ms_parsed[1]
        raw = rec.decode_json(rec.MANAGER_STATUS, record.data)
        # only this node's services (on or moving to it): all the LRM acts on (§3.2.2)
        ms = ManagerStatus.from_dict(raw, only_node=self.ctx.node)
        self._ms_parsed = (record.version, ms)
        if self.ctx.metrics is not None:
            self.ctx.metrics.saw_raw_manager_status(raw, ms)
        return ms

    def write_manager_status(self, ms: ManagerStatus) -> None:
        self.keep_master_alive()  # the end of a round that may have been long
        try:
            self._write_manager_status(ms)
        finally:
            # the round's moves are synced and announced now even when nothing is written
            # (not master any more, nothing changed); a write did it before replacing the file
            sync = getattr(self.ctx.store, "sync_deferred", None)
            if sync is not None:
                with contextlib.suppress(StoreError, OSError):
                    sync()

    def _write_manager_status(self, ms: ManagerStatus) -> None:
        # SAFETY: only the holder of the manager lease writes manager_status
        # (§11.1 item 1). A master whose thread stalled past its lease must not
        # overwrite what a new master wrote meanwhile.
        store = self.ctx.store
        info = store.lease_info(rec.MANAGER_LEASE)
        if info is None or info.holder != self.holder:
            self._moves.discard()  # SAFETY: the Manager that decided them is dropped (LockLost)
            raise LockLost("manager lease no longer held, not writing manager_status")
        self._commit_moves()  # the round's moves land before the write the LRMs act on
        # Compare-and-swap on the version this master last saw: a write of a deposed
        # master that lands late (etcd: a write whose answer was lost) cannot replace
        # anything written after it, and a surprise here makes us re-read.
        if self._ms_version is _STALE:
            raise LockLost("manager_status changed under this master: not written before a re-read")
        if isinstance(self._ms_version, _Unknown):
            rec_now = store.read(rec.MANAGER_STATUS)
            self._ms_version = None if rec_now is None else rec_now.version
        full = ms.to_dict()
        content = _without_timestamp(full)
        last = self._ms_written
        if (
            last is not None
            and last[0] == content
            and self._ms_version == last[2]
            and _version(store.read(rec.MANAGER_STATUS)) == last[2]
        ):
            # Nothing changed and the record is still our own last write (a read, not a write:
            # a write by anyone else must still end in the conflict below): no write, no
            # announcement; commands applied without effect leave the queue.
            self._drain_quietly()
            return
        expect = ABSENT if self._ms_version is None else self._ms_version
        try:
            self._ms_version = rec.write_manager_status(store, ms, expect, full)
        except VersionConflict as e:
            # SAFETY: someone else wrote manager_status: this master's picture is stale.
            # Adopting the new version and writing again would replace what it never saw,
            # so no write is accepted until manager_status was read again (the CRM leaves
            # the master state on LockLost and its next Manager starts from the record).
            self._ms_version = _STALE
            raise LockLost(
                f"manager_status changed under this master (version {e.actual}, expected {e.expected}):"
                " re-reading it before the next write"
            ) from None
        except StoreError:
            self._ms_version = _UNKNOWN  # it may still land: re-read before the next write
            raise
        self._ms_written = (content, time.monotonic(), self._ms_version)
        self._drain_quietly()
        if self.observer is not None:
            self.observer.written(ms)
        if self.ctx.on_manager_status is not None:
            self.ctx.on_manager_status(ms)

    def _drain_quietly(self) -> None:
        try:
            self._drain_applied()
        except StoreError as e:
            self.log("warning", f"applied crm commands not taken off the queue yet: {e}")

    def read_lrm_status(self, node: str) -> LrmStatus:
        self.keep_master_alive()  # a round reads every node's: 20 requests on a loaded etcd
        st, usage = rec.read_lrm_status_and_usage(self.ctx.store, node)
        self._usage_seen[node] = (usage, st.timestamp)
        if st.mode is None and st.state is None:
            st.mode = "unknown"  # the real environment's answer for a missing file (§6.1)
        return st

    def write_lrm_status(self, status: LrmStatus) -> None:
        # Only this LRM writes its lrm_status, all of it, whenever it changed, and only then
        # (issue #17: no timestamp refreshes): after a failed write (outcome unknown included)
        # the next tick writes again, and the results it carries are announced only after a
        # write that succeeded.
        # The measured usage (issue #14) rides along with these writes while ``dynamic`` is
        # configured or in use. On its own it is a reason to write only then: for the node's
        # first measurement (so that the master need not wait to use it), and when it moved
        # (``Usage.moved_from``), at most every USAGE_REFRESH s.
        # A sample is due every few seconds, or now when the status changed (agents/usage.py);
        # only while ``dynamic`` is configured or in use: nothing else reads the numbers, and
        # a sample reads every service's cgroup (issue #17 at rest; issue #15: 200 services
        # starting on a node meant 200 status changes, each sampling every cgroup).
        content = _without_timestamp(status.to_dict())
        last = self._lrm_written
        changed = last is None or last[0] != content
        dynamic = self._dynamic_in_use()
        if not changed and not dynamic:
            return
        usage = self._sample_usage(force=changed) if dynamic else None
        if not changed and not self._usage_due(usage, last):
            return
        record = None if usage is None else rec.NodeUsage(usage.cpu, usage.mem, dict(usage.services))
        rec.write_lrm_status(self.ctx.store, self.ctx.node, status, record)
        self._lrm_written = (content, time.monotonic())
        self._usage_written = usage
        if self.ctx.on_lrm_status is not None:
            self.ctx.on_lrm_status(status)

    def _usage_due(self, usage: Usage | None, last: tuple[dict[str, Any], float] | None) -> bool:
        """Is the measured usage alone worth a write of an unchanged lrm_status? (see above)"""
        if usage is None:
            return False
        if self._usage_written is None:
            return True  # the first measurement
        if last is not None and time.monotonic() - last[1] < USAGE_REFRESH:
            return False
        return self._dynamic_in_use() and usage.moved_from(self._usage_written)

    def _dynamic_in_use(self) -> bool:
        """Is ``dynamic`` (placement by measured usage) configured or in use, as the last
        manager_status says? Configured counts too: a master that fell back to ``basic`` for
        want of measurements must get them."""
        ms = self._ms_parsed[1] if self._ms_parsed is not None else None
        return ms is not None and "dynamic" in crs_in_use(ms)

    def _sample_usage(self, force: bool) -> Usage | None:
        sampler = self.ctx.usage
        if sampler is None:
            return None
        try:
            sampler.sample(force)
        except OSError as e:  # the readers answer None for what they cannot read: unexpected
            self.log("warning", f"could not measure the node's usage: {e}")
        return sampler.snapshot()

    def read_crm_commands(self) -> str:
        """The queued commands; they leave the queue only once this round's manager_status is written.

        A master that dies (or fails to write manager_status) after reading the
        queue has not lost them: the next round, or the next master, reads them
        again (issue #10: "no administrator command is lost"). Commands are
        therefore delivered at least once; each is idempotent in the manager
        (a move to where the service already is, a maintenance request already
        made, a second stop are logged and ignored, §5.6).
        """
        cur = self.ctx.store.read(rec.CRM_COMMANDS)
        data = b"" if cur is None else cur.data
        self._to_drain = data if data.strip() else None
        return data.decode(errors="replace")

    def _drain_applied(self) -> None:
        """After manager_status was written: take what this round applied off the queue.

        Compare-and-swap, so a line an administrator appended meanwhile stays;
        if the queue no longer starts with what was applied, someone drained it
        already. A store error leaves it queued (applied again next round).
        """
        applied, self._to_drain = self._to_drain, None
        if applied is None:
            return
        store = self.ctx.store
        for _ in range(10):
            cur = store.read(rec.CRM_COMMANDS)
            data = b"" if cur is None else cur.data
            if cur is None or not data.startswith(applied):
                return
            try:
                store.write(rec.CRM_COMMANDS, data[len(applied) :], cur.version)
                return
            except VersionConflict:
                continue  # an admin appended meanwhile: read again
        self.log("warning", "crm_commands keeps changing: applied commands stay queued for the next round")

    def any_pending_crm_command(self) -> bool:
        return rec.any_pending_crm_command(self.ctx.store)

    def read_service_config(self) -> ServiceConfig:
        read: tuple[Record | None] | None = None
        if self.daemon == "crm":
            self._commit_moves()  # the locations read below include this master's own moves
            read = self._place_unplaced()
        epoch = self.ctx.locations_epoch
        locations = self._locations.read(self.ctx.store, None if epoch is None else epoch[0])

        def parse(text: str, version: str | None) -> tuple[object, list[ConfigError]]:
            conf, errors = parse_resources_cfg(text, rec.RESOURCES_CFG, nodes=locations)
            conf.digest = version
            return conf, errors

        def services(value: object) -> MutableMapping[str, Any]:
            assert isinstance(value, ServiceConfig)
            return value.services

        # Parsed again only for a new version of resources.cfg (or when a moved location needs
        # it, ServiceConfig.relocate): not on every move, which with thousands of services made
        # every daemon of every node parse the whole file on each iteration (issue #15).
        reading = self._config(rec.RESOURCES_CFG, parse, services, str(self._resources_epoch), read)
        conf = reading.value
        assert isinstance(conf, ServiceConfig)
        if not reading.fresh and locations != self._parsed_locations:
            if not conf.relocate(self._parsed_locations, locations):
                self._resources_epoch += 1
                return self.read_service_config()
        self._parsed_locations = locations
        if reading.fresh:
            conf.incomplete = bool(reading.errors)  # the Manager removes nothing missing from it
        view = self._in_force.get(rec.RESOURCES_CFG)
        for sid in view.kept if view is not None else ():  # carried over: where it is now
            cd = conf.services[sid]
            node = locations.get(sid)
            if node is not None and cd.node != node:
                cd.node = node
        self._service_config_seen = conf
        return conf

    def _place_unplaced(self) -> tuple[Record | None] | None:
        """A section written without ``node`` is placed on load (issue #13, admin/placement.py),
        checked once per version of resources.cfg. Returns the record it read when that is
        still the current one (nothing placed), for the caller's parse: on etcd each read is a
        request, and the master read resources.cfg twice in a row every iteration."""
        record = self.ctx.store.read(rec.RESOURCES_CFG)
        version = None if record is None else record.version
        if version == self._placement_checked:
            return (record,)
        try:
            placed = place_unplaced(self.ctx.store, list(self.ctx.nodes), self.ctx.node)
            for sid, node in placed.items():
                self.log("info", f"placed resource '{sid}' (no node in resources.cfg) on node '{node}'")
        except HaError as e:
            self.log("warning", f"could not place resources without a node: {e}")
            return None
        self._placement_checked = version
        return None if placed else (record,)

    def _edit_resources(self, edit: Callable[[ServiceConfig], None]) -> None:
        """Read-modify-write resources.cfg with compare-and-swap, retrying on conflicts.

        What the edit does not touch is kept byte for byte (comments, sections
        that fail to parse, bytes that are not UTF-8); an edit that cannot keep it
        is refused (issue #10). So a ``crm-command stop`` still lands while some
        other section of the file is broken.
        """
        store = self.ctx.store
        for _ in range(20):
            record = store.read(rec.RESOURCES_CFG)
            version = None if record is None else record.version
            # an edit that would replace a section that does not parse is refused (ConfigError)
            after = edit_config(
                b"" if record is None else record.data, rec.RESOURCES_CFG, parse_resources_cfg,
                format_resources_cfg, edit,
            )  # fmt: skip
            try:
                store.write(rec.RESOURCES_CFG, after, version or "")
                return
            except VersionConflict:
                continue
        raise HaError("resources.cfg keeps changing, giving up this edit")

    def update_service_config(self, sid: str, changes: dict[str, object], delete: list[str]) -> None:
        def edit(conf: ServiceConfig) -> None:
            cd = conf.services.get(sid)
            if cd is None:
                return
            for key, value in changes.items():
                if key == "state":
                    cd.state = str(value)
                elif key == "node":
                    cd.node = str(value)
                else:
                    cd.extra[key] = str(value)
            for key in delete:
                cd.extra.pop(key, None)

        self._edit_resources(edit)

    def write_service_config(self, conf: ServiceConfig) -> None:
        def replace_all(current: ServiceConfig) -> None:
            current.services = {sid: cd.copy() for sid, cd in conf.services.items()}

        self._edit_resources(replace_all)

    def read_group_config(self) -> GroupConfig:
        def parse(text: str, version: str | None) -> tuple[object, list[ConfigError]]:
            conf, errors = parse_groups_cfg(text, rec.GROUPS_CFG)
            conf.digest = version or None
            return conf, errors

        def groups(value: object) -> MutableMapping[str, Any]:
            assert isinstance(value, GroupConfig)
            return value.groups

        value = self._config(rec.GROUPS_CFG, parse, groups).value
        assert isinstance(value, GroupConfig)
        return value

    def delete_group_config(self) -> None:
        self.ctx.store.delete(rec.GROUPS_CFG)

    def read_rules_config(self) -> RulesConfig:
        def parse(text: str, version: str | None) -> tuple[object, list[ConfigError]]:
            conf, errors = parse_rules_cfg(text, rec.RULES_CFG)
            conf.digest = version or None
            return conf, errors

        def rules(value: object) -> MutableMapping[str, Any]:
            assert isinstance(value, RulesConfig)
            return value.rules

        value = self._config(rec.RULES_CFG, parse, rules).value
        assert isinstance(value, RulesConfig)
        return value

    def write_rules_config(self, rules: RulesConfig) -> None:
        self.ctx.store.write(rec.RULES_CFG, format_rules_cfg(rules).encode())

    def write_groups_config(self, groups: GroupConfig) -> None:
        self.ctx.store.write(rec.GROUPS_CFG, format_groups_cfg(groups).encode())

    def fencing_token(self, sid: str) -> int:
        """The token a start of ``sid`` passes to its agent (``HA_FENCING_TOKEN``, docs/AGENTS.md)."""
        return rec.read_fencing_token(self.ctx.store, sid)

    def steal_service(self, sid: str, current_node: str, new_node: str) -> None:
        """Move a service's location (recovery by the master, or after a migration)."""
        self.keep_master_alive()  # a recovery of many services on etcd is a long round
        store = self.ctx.store
        node, version, current = self._location(sid, reuse=True)
        if node == new_node and node != current_node:
            # already moved: a master stole it, then its manager_status write failed, and the
            # round that retries the recovery (from the record) moves it again, to the same node
            return
        if node != current_node:
            raise HaError(f"service '{sid}' is on node '{node}', not on '{current_node}'")
        # the dir store syncs the moves of a round together, before its manager_status write;
        # the master's moves are announced (journal) together there too: the LRMs act on that
        # write, not on the moves (a live migration's commit, the LRM's, is announced at once:
        # its target reads it before it resumes the guest)
        batching = batches(store) if self.daemon == "crm" else None
        if batching is not None:
            # etcd: the round's moves go together, before its manager_status write (actors/moves.py)
            self._moves.queue(sid, rec.location_value(current, new_node), version or ABSENT)
            return
        deferring = getattr(store, "deferring", None)
        try:
            with deferring(notes=self.daemon == "crm") if deferring is not None else contextlib.nullcontext():
                expect = version if version is not None else ""
                rec.write_location(store, sid, new_node, expect, current=current)
        except StoreError as e:
            # outcome unknown: read the location again to learn whether the move happened
            # (a compare-and-swap that lands late can only land if nothing moved meanwhile)
            now, _ = rec.read_location(store, sid)
            if now == new_node:
                return
            raise HaError(f"moving service '{sid}' to '{new_node}' failed: {e}") from e

    def service_location(self, sid: str) -> str | None:
        self.keep_master_alive()  # per recovered service, beside steal_service
        return self._location(sid)[0]

    def prefetch_locations(self, sids: list[str]) -> None:
        """The master is about to look at (and maybe move) these services' locations: on etcd
        their records are read in one request here, not one request each (actors/moves.py)."""
        store = batches(self.ctx.store)
        if store is None or self.daemon != "crm" or len(sids) < 2:
            return
        self.keep_master_alive()
        with contextlib.suppress(StoreError):  # each is read on its own then
            self._moves.prefetch(store, sids)

    def _commit_moves(self) -> None:
        if not self._moves:
            return
        store = batches(self.ctx.store)
        assert store is not None  # only a batching store queues moves
        if not self._manager_lease_held:
            self._moves.discard()
            raise LockLost("manager lease no longer held: the round's moves are not written")
        self.keep_master_alive()
        self._moves.commit(store)

    def _location(self, sid: str, reuse: bool = False) -> tuple[str | None, str | None, Record | None]:
        """(node, version, record) of the service's location record; the config's node while it
        has none.

        ``reuse``: the record this Env read for SID at most ``LOCATION_REUSE`` s ago will do
        (a recovery's move right after the manager looked: on etcd each read is a request,
        and a round moved 100 services with four requests each, issue #15). SAFETY: the move
        is a compare-and-swap on that record's version, so a record that changed meanwhile
        makes the move fail (and the next round retry), never move it twice.
        """
        if self._moves.pending(sid):
            self._commit_moves()  # this master moved it this round: the record must show that
        seen, self._location_seen = self._location_seen, None  # a look serves one move at most
        prefetched, record = (False, None) if reuse else self._moves.seen(sid)
        if reuse and seen is not None and seen[0] == sid and time.monotonic() - seen[2] < LOCATION_REUSE:
            record = seen[1]
        elif not prefetched:
            record = self.ctx.store.read(rec.location_name(sid))
        if not reuse:  # the manager's look (service_location), for the move that may follow
            self._location_seen = (sid, record, time.monotonic())
        node = None if record is None else rec.parse_location(record.data)[0]
        version = None if record is None else record.version
        if node is None:
            # never moved: the node resources.cfg names, as this daemon last read it (the
            # master: in this round), not a read of the configuration per service (on etcd
            # several requests; issue #15). A move from there expects no record (ABSENT), so a
            # record created meanwhile makes it fail.
            conf = self._service_config_seen
            cd = (conf if conf is not None and sid in conf.services else self.read_service_config()).get(sid)
            node = cd.node if cd is not None else None
        return node, version, record

    def get_datacenter_settings(self) -> DatacenterConfig:
        def parse(text: str, version: str | None) -> tuple[object, list[ConfigError]]:
            try:
                return parse_datacenter_cfg(text, rec.DATACENTER_CFG), []
            except ConfigError as e:
                return DatacenterConfig(), [e]

        value = self._config(rec.DATACENTER_CFG, parse, None).value
        assert isinstance(value, DatacenterConfig)
        return value

    # Scheduler stats (issue #14, BEHAVIOUR.md §5.10; docs/RUNTIME.md "Measured load").
    def get_node_stats(self, mode: str) -> dict[str, NodeStats]:
        """Each node's capacity as its ha-node published it at start (``nodes/<n>/capacity``),
        with, for ``dynamic``, the CPU and memory in use (:meth:`_measured`).

        A node missing here makes the scheduler fall back to ``basic`` when it is online.
        """
        if mode not in (STATIC, DYNAMIC):
            raise HaError(f"no {mode} node stats on live nodes")
        measured = self._measured()[0] if mode == DYNAMIC else {}
        out: dict[str, NodeStats] = {}
        for node in self.ctx.nodes:
            cap = rec.read_capacity(self.ctx.store, node)
            if cap is None:
                continue
            if mode == STATIC:
                out[node] = NodeStats(maxcpu=cap[0], maxmem=cap[1])
            elif node in measured:
                cpu, mem = measured[node]
                out[node] = NodeStats(maxcpu=cap[0], maxmem=cap[1], cpu=cpu, mem=mem)
        if not out:
            raise HaError(f"no node has published its capacity{' and usage' if mode == DYNAMIC else ''}")
        return out

    def get_service_stats(self, mode: str) -> dict[str, ServiceStats]:
        """The resources' ``maxcpu`` (CPUs) and ``maxmem`` (MiB) properties, 0 when unset (a
        ``vm:``'s ``cores`` and ``memory`` then, agents/vmspec.py ``static_caps``); for
        ``dynamic`` also the measured ``cpu`` (cores) and ``mem`` (bytes), 0 when not measured."""
        if mode not in (STATIC, DYNAMIC):
            return {}
        measured = self._measured()[1] if mode == DYNAMIC else {}
        out = {}
        for sid, cd in self.read_service_config().services.items():
            cpu, mem = measured.get(sid, (0.0, 0.0))
            # a guest weighs its config (cores, memory), as the reference's; maxcpu/maxmem win
            cores, memory = static_caps(cd.extra) if cd.type == "vm" else (0.0, 0.0)
            out[sid] = ServiceStats(
                maxcpu=float(cd.extra.get("maxcpu") or cores),
                maxmem=float(cd.extra.get("maxmem") or memory) * MIB,
                cpu=cpu,
                mem=mem,
            )
        return out

    def _measured(self) -> tuple[dict[str, tuple[float, float]], dict[str, tuple[float, float]]]:
        """(node -> (cpu, mem), sid -> (cpu, mem)) from the nodes' recent lrm_status ``usage``.

        A service's use is what the node it is located on (``locations/<sid>``) measured,
        else what another node still reports (a move that node has not written since),
        else, while it is requested ``started``, its last measurement of the past
        ``USAGE_MAX_AGE`` seconds (moved, and not measured on its new node yet).
        A node's use is what it measured besides its services (ha-node itself, actions in
        flight) plus the use of every measured service located on it: the moment a service
        is moved its load counts on its new node, as the simulator counts it (sim/stats.py),
        so a rebalancing round never acts on a source node's use from before a move.
        """
        now = time.time()
        alive = {self.ctx.node, *self.ctx.membership.peers_up()}
        reports: dict[str, rec.NodeUsage] = {}
        for node in self.ctx.nodes:
            seen = self._usage_seen.get(node)
            if seen is None:
                st, usage = rec.read_lrm_status_and_usage(self.ctx.store, node)
                seen = self._usage_seen[node] = (usage, st.timestamp)
            usage, ts = seen
            # an unchanged lrm_status is not written again (issue #17): its report is current
            # while the node is up on the bus, else for USAGE_MAX_AGE seconds after its write
            if usage is not None and (node in alive or (ts is not None and now - ts <= USAGE_MAX_AGE)):
                reports[node] = usage
        conf = self.read_service_config().services
        where = {sid: cd.node for sid, cd in conf.items()}
        services: dict[str, tuple[float, float]] = {}
        for sid, node in sorted(where.items()):
            found = [
                reports[n].services[sid]
                for n in (node, *sorted(reports))
                if sid in reports.get(n, _NONE).services
            ]
            if found:
                services[sid] = found[0]
                self._last_measured[sid] = (found[0], now)
                continue
            last = self._last_measured.get(sid)
            if (
                last is not None
                and now - last[1] <= USAGE_MAX_AGE
                and conf[sid].state == RequestedState.STARTED
            ):
                services[sid] = last[0]
        for sid in [s for s in self._last_measured if s not in conf]:
            del self._last_measured[sid]
        nodes: dict[str, tuple[float, float]] = {}
        for node, u in reports.items():
            cpu = max(0.0, u.cpu - sum(c for c, _ in u.services.values()))
            mem = max(0.0, u.mem - sum(m for _, m in u.services.values()))
            nodes[node] = (cpu, mem)
        for sid, (cpu, mem) in services.items():
            node = where[sid]
            if node in nodes:
                ncpu, nmem = nodes[node]
                nodes[node] = (ncpu + cpu, nmem + mem)
        return nodes, services

    def get_guests(self) -> dict[str, GuestInfo]:
        return {}

    # -- locks and watchdog ------------------------------------------------------------
    def _acquire(self, lease: str) -> bool:
        """Create/renew/take over a lease; False unless it surely succeeded in time.

        SAFETY: locks are acquired and renewed only while quorate (§1.4; quorate
        includes "the store answered recently") and never once the node fenced
        itself. A store failure, an unknown outcome or a call slower than
        ``renew_latency_cap`` counts as "not renewed": the caller then does not
        update its watchdog. (A renewal that did happen stays ours; the next call
        renews it again.) Durations are measured on CLOCK_BOOTTIME: a call that
        spans a suspend of the host is slow, not fast.
        """
        if self.ctx.fenced.is_set() or not self.quorate():
            return False
        t0 = boottime()
        try:
            ok = self.ctx.store.acquire_lease(lease, self.holder, self.ctx.lease_ttl)
        except StoreError as e:
            self._lease_timed(lease, boottime() - t0, "error")
            self._trouble(f"{lease}:error", f"lease {lease}: store unavailable, not renewed: {e}")
            return False
        took = boottime() - t0
        self._lease_timed(lease, took, "ok" if ok else "held")
        if ok and took > self.ctx.renew_latency_cap:
            self._trouble(
                f"{lease}:slow",
                f"lease {lease}: renewal took {took:.2f}s (more than {self.ctx.renew_latency_cap:g}s),"
                " not relied on",
            )
            return False
        if ok and self.ctx.fenced.is_set():
            return False  # fenced while the call ran
        if self._store_trouble is not None and ok:
            self.log("info", f"lease {lease}: store usable again")
            self._store_trouble = None
        if ok:
            self._renewed[lease] = t0  # the watchdog update that follows counts from here
        return ok

    def _lease_timed(self, lease: str, took: float, result: str) -> None:
        """``pyha_lease_renewal_seconds``: manager, agent (this node's own) or fence (another's)."""
        if self.ctx.metrics is None:
            return
        kind = "manager" if lease == rec.MANAGER_LEASE else "agent"
        if kind == "agent" and lease != rec.agent_lease(self.ctx.node):
            kind = "fence"
        self.ctx.metrics.lease_renewal.labels(kind, result).observe(took)

    def _trouble(self, key: str, msg: str) -> None:
        """Log a lease-call problem once per kind, until a call succeeds again."""
        if key != self._store_trouble:
            self.log("warning", msg)
        self._store_trouble = key

    def _release(self, lease: str) -> bool:
        try:
            return self.ctx.store.release_lease(lease, self.holder)
        except StoreError as e:
            self.log("warning", f"lease {lease}: release failed ({e}), it will expire")
            return False

    def get_ha_manager_lock(self) -> bool:
        ok = self._acquire(rec.MANAGER_LEASE)
        if ok and not self._manager_lease_held:
            # a new term: the compare-and-swap base is the record as this master reads it next,
            # not what this process read (or wrote) before, as a slave or in an earlier term
            self._ms_version = _UNKNOWN
            # and the locations as the records have them now: an earlier master's last moves
            # may not be in the change log (it died before announcing them, DirStore.deferring)
            self._locations = rec.LocationsCache()
            self._moves.discard()  # an earlier term's reads and moves count for nothing
            if self.observer is not None:
                self.observer.new_term()
        self._manager_lease_held = ok
        return ok

    def release_ha_manager_lock(self) -> bool:
        self._manager_lease_held = False
        return self._release(rec.MANAGER_LEASE)

    def get_ha_agent_lock(self, node: str | None = None) -> bool:
        if node is None or node == self.ctx.node:
            return self._acquire(rec.agent_lease(self.ctx.node))
        return self._fence_by_lease(node)

    def _fence_by_lease(self, node: str) -> bool:
        """The master takes a failed node's agent lease: fencing succeeds (§6.3).

        SAFETY: the lease proves the node's services are dead only if the node ran
        them under its watchdog. A node that gave up lease and watchdog while its
        services kept running (disarm, LRM restart) left the ``unwatched`` mark
        first; while it exists, taking the free lease proves nothing, so fencing
        fails and recovery waits until the node's LRM is back. The mark is read
        *after* taking the lease: it is written before the release, so a release
        that let us in is always seen.
        """
        lease = rec.agent_lease(node)
        if not self._acquire(lease):
            return False
        try:
            mark = self.ctx.store.read(rec.unwatched_name(node))
        except StoreError as e:
            self.log("warning", f"fencing '{node}': cannot read its unwatched mark ({e}), retrying")
            self._release(lease)
            return False
        if mark is None:
            self._refused_fence.pop(node, None)
            return True
        if self._refused_fence.get(node) != mark.data:
            self._refused_fence[node] = mark.data
            why = mark.data.decode(errors="replace").strip()
            self.log(
                "err",
                f"cannot fence node '{node}' by its lease: it gave up lease and watchdog ({why}),"
                " so its services may still run; recovery waits until its LRM is back",
            )
        self._release(lease)
        return False

    def release_ha_agent_lock(self) -> bool:
        if self.daemon == "lrm":
            running = self._local_services_running()
            if running:
                # SAFETY: records first: the mark lands before the lease is free
                what = ", ".join(running[:5]) + (" ..." if len(running) > 5 else "")
                self.ctx.store.write(
                    rec.unwatched_name(self.ctx.node),
                    f"released at {time.strftime('%Y-%m-%d %H:%M:%S')} with {what} running\n".encode(),
                )
                self._unwatched_maybe = True
        return self._release(rec.agent_lease(self.ctx.node))

    def settle_unwatched(self) -> None:
        """LRM, before each iteration while this node's unwatched mark may exist.

        SAFETY: a service the master put in ``fence`` while this node ran it
        without a watchdog is stopped here (it may already run elsewhere only
        after the mark is gone, so this is the "confirmed stopped" the master
        waits for). Once no service of this node runs, the mark is removed and
        fencing works again. Services that run on purpose (frozen over an LRM
        restart) keep the mark until the watchdog is armed again
        (:meth:`watchdog_update`). While nothing of this node is in ``fence``
        there is nothing to confirm, and no agent is asked (this runs every tick).
        """
        if not self._unwatched_maybe:
            return
        store, node = self.ctx.store, self.ctx.node
        try:
            if store.read(rec.unwatched_name(node)) is None:
                self._unwatched_maybe = False
                return
            ms, _ = rec.read_manager_status(store)
            fenced = [
                sid
                for sid, sd in sorted(ms.service_status.items())
                if sd.node == node and sd.state == "fence"
            ]
            if not fenced:
                return  # nothing to confirm yet: the mark stays until a fence or the watchdog clears it
            conf = self.read_service_config()
            for sid in fenced:
                cd = conf.services.get(sid)
                plugin = self.resource_plugin(cd.type) if cd is not None else None
                if cd is not None and plugin is not None and plugin.check_running(self, sid, cd):
                    self.log("warning", f"stopping {sid}: it was fenced while it ran here without a watchdog")
                    plugin.shutdown(self, sid, cd, None)
            if not self._local_services_running():
                store.delete(rec.unwatched_name(node))
                self._unwatched_maybe = False
                self.log("info", "no service runs here any more: unwatched mark removed, fencing works again")
        except HaError as e:
            self.log("warning", f"checking the unwatched mark failed: {e}")

    def _local_services_running(self) -> list[str]:
        """Services located on this node whose agent says (or cannot rule out) that they run."""
        node = self.ctx.node
        out: list[str] = []
        for sid, cd in sorted(self.read_service_config().services.items()):
            if cd.node != node:
                continue
            plugin = self.resource_plugin(cd.type)
            if plugin is None:
                continue
            try:
                if plugin.check_running(self, sid, cd):
                    out.append(sid)
            except Exception:  # SAFETY: unknown counts as running
                out.append(sid)
        return out

    def _counts_until(self) -> float | None:
        """The latest time a watchdog open/update may count from: the start of this daemon's
        last counted renewal of its own lease plus ``renew_latency_cap`` (the core opens and
        updates only right after one; docs/RUNTIME.md, the argument's step 1)."""
        t0 = self._renewed.get(rec.MANAGER_LEASE if self.daemon == "crm" else rec.agent_lease(self.ctx.node))
        return None if t0 is None else t0 + self.ctx.renew_latency_cap

    def watchdog_open(self) -> str:
        handle = self.ctx.watchdog.open(self.daemon, self._counts_until())
        if self.daemon == "crm":
            self._crm_watchdog = handle
        return handle

    def keep_master_alive(self) -> None:
        """Inside a long master round: renew the manager lease and update the watchdog, as
        the CRM does between rounds, once ``lease_ttl / 10`` passed since the last renewal.

        A round's store calls (a recovery's location moves: two etcd requests each; every
        node's lrm_status) can outlast the watchdog (3 s) on a loaded etcd: at 20 nodes a
        master that recovered the services of three fenced nodes in one round was reset by
        its own watchdog, and so was each master after it. Called from those calls.
        SAFETY: the same renewal as between rounds (``_acquire``: quorate, not fenced, fast
        enough) gates the same watchdog update. A renewal that fails updates nothing, as
        between rounds: the watchdog fires 3 s after the last update, before the lease
        (5 s after the last renewal) can go to another master; a lease another master took
        meanwhile refuses this one's ``manager_status`` write (and its moves are
        compare-and-swap).
        """
        if self.daemon != "crm" or not self._manager_lease_held or self._crm_watchdog is None:
            return
        last = self._renewed.get(rec.MANAGER_LEASE)
        if last is not None and boottime() - last < self.ctx.lease_ttl / 10:
            return
        if self._acquire(rec.MANAGER_LEASE):
            self.watchdog_update(self._crm_watchdog)

    def watchdog_update(self, handle: str) -> None:
        self.ctx.watchdog.update(handle, self._counts_until())
        if self._unwatched_maybe and self.ctx.watchdog_confirmed():
            # the lease is ours again and ha-watchdog confirmed it is armed: every
            # service of this node is covered by the watchdog from here on
            try:
                self.ctx.store.delete(rec.unwatched_name(self.ctx.node))
            except StoreError:
                return
            self._unwatched_maybe = False

    def watchdog_close(self, handle: str) -> None:
        if handle == self._crm_watchdog:
            self._crm_watchdog = None
        self.ctx.watchdog.close(handle)

    # -- resources -------------------------------------------------------------------
    def get_max_workers(self) -> int:
        dc = self.get_datacenter_settings()
        return dc.max_workers if dc.max_workers else self.ctx.max_workers

    def resource_plugin(self, rtype: str) -> ResourcePlugin | None:
        return self.ctx.plugins.get(rtype)


class MovingPlugin:
    """Wraps an agent: a successful migrate/relocate also moves the service's location.

    (The reference's plugins move the guest config themselves; our agents only
    act on the local node, so the location record is moved here, by the
    source node, with compare-and-swap.) An agent with ``migrate_live`` (the
    vm agent) gets the move as its commit step for an online migrate and runs
    it at the safe moment of its hand-over (docs/AGENTS.md "Live migration").
    """

    def __init__(self, agent: ResourcePlugin) -> None:
        self.agent = agent

    @property
    def quick_check(self) -> bool:
        """The agent's check_running is cheap and never blocks (it may run on the LRM's thread)."""
        return bool(getattr(self.agent, "quick_check", False))

    def check_running(self, env: object, sid: str, conf: ResourceConfig) -> bool:
        return self.agent.check_running(env, sid, conf)  # type: ignore[arg-type]

    def start(self, env: object, sid: str, conf: ResourceConfig) -> None:
        assert isinstance(env, LiveEnv)
        if env.ctx.fenced.is_set():
            # SAFETY: the node is killing its services: nothing may start now
            raise HaError(f"not starting {sid}: this node is fencing itself")
        self.agent.start(env, sid, conf)

    def shutdown(self, env: object, sid: str, conf: ResourceConfig, timeout: int | None) -> None:
        self.agent.shutdown(env, sid, conf, timeout)  # type: ignore[arg-type]

    def migrate(self, env: object, sid: str, conf: ResourceConfig, target: str, online: bool) -> bool:
        assert isinstance(env, LiveEnv)
        moved: list[bool] = []

        def commit() -> None:
            here = env.nodename()
            try:
                env.steal_service(sid, here, target)
            except HaError:
                # SAFETY (review): a move whose outcome is unknown may still land later, after the
                # caller resumed the guest here. Settle it: write the location here again with
                # compare-and-swap, so that a late move cannot land any more; if the location
                # names the target already, the move did happen.
                try:
                    env.steal_service(sid, here, here)
                except HaError:
                    if env.service_location(sid) != target:
                        raise
                else:
                    raise
            env.log("info", f"service {sid} - moved to node '{target}'")
            moved.append(True)

        live = getattr(self.agent, "migrate_live", None)
        if online and callable(live):
            # a live migration moves the location itself, at the one safe moment of its hand-over
            # (agents/vmsource.py VmPlugin.migrate_live: both copies paused, before the target's runs)
            if not live(env, sid, conf, target, commit):
                return False
        elif not self.agent.migrate(env, sid, conf, target, online):
            return False
        if not moved:
            commit()
        return True

    def remove_locks(self, env: object, sid: str, locks: list[str]) -> str | None:
        return self.agent.remove_locks(env, sid, locks)  # type: ignore[arg-type]


_NONE = rec.NodeUsage(0.0, 0.0)


def _without_timestamp(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k != "timestamp"}


def _version(record: Record | None) -> str | None:
    return None if record is None else record.version
