"""The Env port: everything the core needs from the world (BEHAVIOUR.md §1.5).

``ha/`` never reads a clock, sleeps, does I/O or logs by itself; the CRM,
LRM and Manager receive an ``Env`` and call it. The simulator (``sim/``) and
the live runtime (``actors/``) each implement it. Methods that read or write
shared records raise :class:`ha.errors.HaError` subclasses on failure (the
reference's ``die``), which the core catches where the reference does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ha.config.datacenter import DatacenterConfig
from ha.config.groups import GroupConfig
from ha.config.resources import ResourceConfig, ServiceConfig
from ha.config.rules import RulesConfig
from ha.crs.stats import GuestInfo, NodeStats, ServiceStats
from ha.records import LrmStatus, ManagerStatus


@dataclass(slots=True, frozen=True)
class NodeInfo:
    """Membership view of one node: is it in the quorate partition."""

    online: bool


class ResourcePlugin(Protocol):
    """Operations of one resource type (§3.3.3). Run by the LRM or its workers."""

    def check_running(self, env: Env, sid: str, conf: ResourceConfig) -> bool: ...

    def start(self, env: Env, sid: str, conf: ResourceConfig) -> None: ...

    def shutdown(self, env: Env, sid: str, conf: ResourceConfig, timeout: int | None) -> None: ...

    def migrate(self, env: Env, sid: str, conf: ResourceConfig, target: str, online: bool) -> bool: ...

    def remove_locks(self, env: Env, sid: str, locks: list[str]) -> str | None: ...


class Env(Protocol):
    """What a CRM/LRM/Manager instance may ask of its world."""

    # identity, time, log -------------------------------------------------
    def nodename(self) -> str: ...

    def get_time(self) -> float: ...

    def log(self, level: str, msg: str) -> None: ...

    def send_notification(self, prefix: str, text: str, node: str) -> None: ...

    def sleep(self, seconds: float) -> None: ...

    def sleep_until(self, when: float) -> None: ...

    def loop_start_hook(self) -> None: ...

    def loop_end_hook(self) -> None: ...

    # membership ------------------------------------------------------------
    def cluster_state_update(self) -> bool: ...

    def quorate(self) -> bool: ...

    def get_node_info(self) -> tuple[dict[str, NodeInfo], bool]: ...

    def is_node_shutdown(self) -> tuple[bool, bool]: ...

    def get_node_last_seen(self, node: str) -> float | None:
        """When this node last heard from ``node`` (Env time), if it knows; else None.

        Seeds a new master's "last online" times, so its fence delay counts from
        when the node went silent rather than from the takeover. The simulator
        answers None (the reference's behaviour, §6.2).
        """
        ...

    def get_node_version(self, node: str) -> str | None: ...

    # §5.14: the master migrates HA groups to rules and deletes groups.cfg (the reference, the
    # simulator: True), or keeps the groups, applied as node-affinity rules in memory every round
    # (live clusters: False, so groups and rules work side by side, issue #13)
    migrate_groups: bool

    # records -----------------------------------------------------------------
    def read_manager_status(self) -> ManagerStatus: ...

    def write_manager_status(self, ms: ManagerStatus) -> None: ...

    def read_lrm_status(self, node: str) -> LrmStatus: ...

    def write_lrm_status(self, status: LrmStatus) -> None: ...

    def read_crm_commands(self) -> str: ...

    def any_pending_crm_command(self) -> bool: ...

    def read_service_config(self) -> ServiceConfig:
        """The configured resources. Callers must not modify the result (it may be shared)."""
        ...

    def update_service_config(self, sid: str, changes: dict[str, object], delete: list[str]) -> None: ...

    def read_group_config(self) -> GroupConfig: ...

    def delete_group_config(self) -> None: ...

    def read_rules_config(self) -> RulesConfig: ...

    def write_rules_config(self, rules: RulesConfig) -> None: ...

    def write_service_config(self, conf: ServiceConfig) -> None: ...

    def steal_service(self, sid: str, current_node: str, new_node: str) -> None: ...

    def service_location(self, sid: str) -> str | None:
        """The node the service's location names now (None: unknown).

        Ours: the master reads it before a recovery (ha/manager.py
        ``next_state_recovery``), because a master that moved it may have died
        before its manager_status write.
        """
        ...

    def prefetch_locations(self, sids: list[str]) -> None:
        """The master is about to look at these services' locations (a recovery of several):
        an env whose store answers many reads in one request reads them here (ours, issue #15;
        a hint only: the looks and moves that follow are the same with or without it)."""
        ...

    def get_datacenter_settings(self) -> DatacenterConfig: ...

    # scheduler stats (§5.10) ----------------------------------------------------
    def get_node_stats(self, mode: str) -> dict[str, NodeStats]:
        """Per node: capacity (``static``) or capacity and measured use (``dynamic``).

        Raises :class:`ha.errors.HaError` when the stats are not available; the
        manager then falls back to the ``basic`` scheduler for the round.
        """
        ...

    def get_service_stats(self, mode: str) -> dict[str, ServiceStats]:
        """Per guest: configured maxcpu/maxmem, plus measured cpu/mem for ``dynamic``."""
        ...

    def get_guests(self) -> dict[str, GuestInfo]:
        """Every guest the stats source knows (HA-managed or not): node, requested state, running."""
        ...

    # locks and watchdog ------------------------------------------------------
    def get_ha_manager_lock(self) -> bool: ...

    def release_ha_manager_lock(self) -> bool: ...

    def get_ha_agent_lock(self, node: str | None = None) -> bool: ...

    def release_ha_agent_lock(self) -> bool: ...

    def watchdog_open(self) -> str: ...

    def watchdog_update(self, handle: str) -> None: ...

    def watchdog_close(self, handle: str) -> None: ...

    # resources ---------------------------------------------------------------
    def get_max_workers(self) -> int: ...

    def resource_plugin(self, rtype: str) -> ResourcePlugin | None: ...
