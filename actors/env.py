"""The live runtime's implementation of the core's Env port.

One ``LiveEnv`` per daemon (CRM, LRM, each worker) of a node. Records and
leases go to the store; quorum and membership come from the bus; watchdog
calls go to the node's WatchdogActor; logs go to loguru. Nothing here
sleeps: the core's sleeps are the actors' timers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from loguru import logger

from ha.config.datacenter import DatacenterConfig, parse_datacenter_cfg
from ha.config.groups import GroupConfig, format_groups_cfg, parse_groups_cfg
from ha.config.resources import ResourceConfig, ServiceConfig, format_resources_cfg, parse_resources_cfg
from ha.config.rules import RulesConfig, format_rules_cfg, parse_rules_cfg
from ha.env import NodeInfo, ResourcePlugin
from ha.errors import ConfigError, HaError, LockLost
from ha.records import LrmStatus, ManagerStatus
from store import records as rec
from store.base import Store, VersionConflict

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

    def open(self, client: str) -> str: ...

    def update(self, handle: str) -> None: ...

    def close(self, handle: str) -> None: ...


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
    _parse_lock: threading.Lock = field(default_factory=threading.Lock)


class _Cached:
    """A parsed record, re-parsed only when its version changes."""

    def __init__(self) -> None:
        self.version: str | None = "\0never"
        self.value: object = None


class LiveEnv:
    def __init__(self, ctx: NodeContext, daemon: str) -> None:
        self.ctx = ctx
        self.daemon = daemon
        self.ident = f"{ctx.node}/{daemon}"
        self.log_ = logger.bind(ident=self.ident)
        self._cache: dict[str, _Cached] = {}
        self._bad_config_logged: set[str] = set()

    # -- identity, time, log ------------------------------------------------
    def nodename(self) -> str:
        return self.ctx.node

    def get_time(self) -> float:
        return time.time()

    def log(self, level: str, msg: str) -> None:
        lvl = _LEVELS.get(level.strip(), "INFO")
        self.log_.log(lvl, msg.rstrip("\n"))

    def send_notification(self, prefix: str, text: str, node: str) -> None:
        self.log_.warning(f"{prefix}: {text}")

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
    def _parsed(self, name: str, parse: Callable[[str, str], object]) -> object:
        text, version = rec.read_text(self.ctx.store, name)
        c = self._cache.setdefault(name, _Cached())
        if c.version != version:
            c.value = parse(text, version or "")
            c.version = version
        return c.value

    def _report(self, errors: list[ConfigError], version: str | None) -> None:
        for e in errors:
            key = f"{version}:{e}"
            if key not in self._bad_config_logged:
                self._bad_config_logged.add(key)
                self.log("err", f"configuration error, section skipped: {e}")

    def read_manager_status(self) -> ManagerStatus:
        ms, _ = rec.read_manager_status(self.ctx.store)
        return ms

    def write_manager_status(self, ms: ManagerStatus) -> None:
        # SAFETY: only the holder of the manager lease writes manager_status
        # (§11.1 item 1). A master whose thread stalled past its lease must not
        # overwrite what a new master wrote meanwhile.
        info = self.ctx.store.lease_info(rec.MANAGER_LEASE)
        if info is None or info.holder != self.ctx.node:
            raise LockLost("manager lease no longer held, not writing manager_status")
        rec.write_manager_status(self.ctx.store, ms)
        if self.ctx.on_manager_status is not None:
            self.ctx.on_manager_status(ms)

    def read_lrm_status(self, node: str) -> LrmStatus:
        st = rec.read_lrm_status(self.ctx.store, node)
        if st.mode is None and st.state is None:
            st.mode = "unknown"  # the real environment's answer for a missing file (§6.1)
        return st

    def write_lrm_status(self, status: LrmStatus) -> None:
        rec.write_lrm_status(self.ctx.store, self.ctx.node, status)
        if self.ctx.on_lrm_status is not None:
            self.ctx.on_lrm_status(status)

    def read_crm_commands(self) -> str:
        return rec.take_crm_commands(self.ctx.store)

    def any_pending_crm_command(self) -> bool:
        return rec.any_pending_crm_command(self.ctx.store)

    def read_service_config(self) -> ServiceConfig:
        store = self.ctx.store
        text, version = rec.read_text(store, rec.RESOURCES_CFG)
        locations = rec.read_locations(store)
        key = f"{version}|{sorted(locations.items())}"
        c = self._cache.setdefault(rec.RESOURCES_CFG, _Cached())
        if c.version != key:
            conf, errors = parse_resources_cfg(text, rec.RESOURCES_CFG, nodes=locations)
            conf.digest = version
            self._report(errors, version)
            c.value, c.version = conf, key
        assert isinstance(c.value, ServiceConfig)
        return c.value

    def _edit_resources(self, edit: Callable[[ServiceConfig], None]) -> None:
        """Read-modify-write resources.cfg with compare-and-swap, retrying on conflicts."""
        store = self.ctx.store
        for _ in range(20):
            text, version = rec.read_text(store, rec.RESOURCES_CFG)
            conf, _errors = parse_resources_cfg(text, rec.RESOURCES_CFG)
            edit(conf)
            try:
                store.write(rec.RESOURCES_CFG, format_resources_cfg(conf).encode(), version or "")
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
        def parse(text: str, version: str) -> GroupConfig:
            conf, errors = parse_groups_cfg(text, rec.GROUPS_CFG)
            conf.digest = version or None
            self._report(errors, version)
            return conf

        value = self._parsed(rec.GROUPS_CFG, parse)
        assert isinstance(value, GroupConfig)
        return value

    def delete_group_config(self) -> None:
        self.ctx.store.delete(rec.GROUPS_CFG)

    def read_rules_config(self) -> RulesConfig:
        def parse(text: str, version: str) -> RulesConfig:
            conf, errors = parse_rules_cfg(text, rec.RULES_CFG)
            conf.digest = version or None
            self._report(errors, version)
            return conf

        value = self._parsed(rec.RULES_CFG, parse)
        assert isinstance(value, RulesConfig)
        return value

    def write_rules_config(self, rules: RulesConfig) -> None:
        self.ctx.store.write(rec.RULES_CFG, format_rules_cfg(rules).encode())

    def write_groups_config(self, groups: GroupConfig) -> None:
        self.ctx.store.write(rec.GROUPS_CFG, format_groups_cfg(groups).encode())

    def steal_service(self, sid: str, current_node: str, new_node: str) -> None:
        """Move a service's location (recovery by the master, or after a migration)."""
        store = self.ctx.store
        node, version = rec.read_location(store, sid)
        if node is None:
            cd = self.read_service_config().get(sid)
            node = cd.node if cd is not None else None
        if node != current_node:
            raise HaError(f"service '{sid}' is on node '{node}', not on '{current_node}'")
        rec.write_location(store, sid, new_node, version if version is not None else "")

    def get_datacenter_settings(self) -> DatacenterConfig:
        def parse(text: str, version: str) -> DatacenterConfig:
            try:
                return parse_datacenter_cfg(text, rec.DATACENTER_CFG)
            except ConfigError as e:
                self._report([e], version)
                return DatacenterConfig()

        value = self._parsed(rec.DATACENTER_CFG, parse)
        assert isinstance(value, DatacenterConfig)
        return value

    # -- locks and watchdog ------------------------------------------------------------
    def get_ha_manager_lock(self) -> bool:
        # SAFETY: locks are acquired and renewed only while quorate (§1.4)
        if not self.quorate():
            return False
        return self.ctx.store.acquire_lease(rec.MANAGER_LEASE, self.ctx.node, self.ctx.lease_ttl)

    def release_ha_manager_lock(self) -> bool:
        return self.ctx.store.release_lease(rec.MANAGER_LEASE, self.ctx.node)

    def get_ha_agent_lock(self, node: str | None = None) -> bool:
        if not self.quorate():
            return False
        return self.ctx.store.acquire_lease(
            rec.agent_lease(node or self.ctx.node), self.ctx.node, self.ctx.lease_ttl
        )

    def release_ha_agent_lock(self) -> bool:
        return self.ctx.store.release_lease(rec.agent_lease(self.ctx.node), self.ctx.node)

    def watchdog_open(self) -> str:
        return self.ctx.watchdog.open(self.daemon)

    def watchdog_update(self, handle: str) -> None:
        self.ctx.watchdog.update(handle)

    def watchdog_close(self, handle: str) -> None:
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
    source node, with compare-and-swap.)
    """

    def __init__(self, agent: ResourcePlugin) -> None:
        self.agent = agent

    def check_running(self, env: object, sid: str, conf: ResourceConfig) -> bool:
        return self.agent.check_running(env, sid, conf)  # type: ignore[arg-type]

    def start(self, env: object, sid: str, conf: ResourceConfig) -> None:
        self.agent.start(env, sid, conf)  # type: ignore[arg-type]

    def shutdown(self, env: object, sid: str, conf: ResourceConfig, timeout: int | None) -> None:
        self.agent.shutdown(env, sid, conf, timeout)  # type: ignore[arg-type]

    def migrate(self, env: object, sid: str, conf: ResourceConfig, target: str, online: bool) -> bool:
        assert isinstance(env, LiveEnv)
        if not self.agent.migrate(env, sid, conf, target, online):
            return False
        env.steal_service(sid, env.nodename(), target)
        env.log("info", f"service {sid} - moved to node '{target}'")
        return True

    def remove_locks(self, env: object, sid: str, locks: list[str]) -> str | None:
        return self.agent.remove_locks(env, sid, locks)  # type: ignore[arg-type]
