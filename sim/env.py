"""The simulator's implementation of the core's Env port (BEHAVIOUR.md §9.3, §9.4, §9.7)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ha.announce import Announcement, Announcer, Reporter, ResultReport, route_results
from ha.config.datacenter import DatacenterConfig
from ha.config.groups import GroupConfig
from ha.config.inforce import InForce
from ha.config.resources import ServiceConfig, parse_resources_cfg
from ha.config.rules import RulesConfig
from ha.crs.stats import GuestInfo, NodeStats, ServiceStats
from ha.env import NodeInfo, ResourcePlugin
from ha.errors import CfsError, ConfigError, SimulationError
from ha.records import LrmResult, LrmStatus, ManagerStatus
from sim.hardware import RESOURCES_FILE
from sim.logfmt import format_line

if TYPE_CHECKING:
    from sim.hardware import Hardware

# The reference dies when one daemon iteration "sleeps" longer than this.
MAX_LOOP_DELAY = 300

AnnounceHook = Callable[[Announcer, ManagerStatus, Announcement], None]
ReportHook = Callable[[str, list[tuple[str, LrmResult]], ManagerStatus, ResultReport], None]


def _services(conf: ServiceConfig) -> dict[str, Any]:
    return conf.services


def new_resources_view() -> InForce[ServiceConfig]:
    return InForce(RESOURCES_FILE, _services)


class SimEnv:
    """One daemon's view of the simulated world, with its own clock."""

    migrate_groups = True  # the reference's group-to-rules migration (§5.14)

    def __init__(self, hardware: Hardware, node: str, daemon: str) -> None:
        self.hardware = hardware
        self.node = node
        self.daemon = daemon
        self.ident = f"{node}/{daemon}"
        self.time = 0
        self.loop_delay = 0
        # set by the runner for big-cluster runs: keep going past the reference's limit
        self.loop_delay_limit: int | None = MAX_LOOP_DELAY
        # The node's bus announcements (ha/announce.py), decided as in the runtime after every
        # write when a hook is set (the fuzzer); nothing is delivered (the daemons read the
        # records), the hooks only check them.
        # One per node process: the runner replaces them when the node is powered off.
        self.announcer = Announcer(node)
        self.reporter = Reporter(node)
        # this process's reading of resources.cfg (used once the fuzzer corrupts it): the
        # runner replaces it with the daemon, like the announcer
        self.resources_view: InForce[ServiceConfig] = new_resources_view()
        self.config_errors_logged: set[str] = set()
        self.on_announce: AnnounceHook | None = None
        self.on_report: ReportHook | None = None

    # -- identity, time, log ------------------------------------------------

    def nodename(self) -> str:
        return self.node

    def get_time(self) -> float:
        return self.time

    def log(self, level: str, msg: str) -> None:
        if level == "debug":
            return
        self.hardware.emit(format_line(level, self.time, self.ident, msg))

    def send_notification(self, prefix: str, text: str, node: str) -> None:
        self.log("email", f"{prefix}: {text}")

    def sleep(self, seconds: float) -> None:
        self.loop_delay += int(seconds)

    def sleep_until(self, when: float) -> None:
        if self.time < when:
            self.loop_delay += int(when - self.time)

    def loop_start_hook(self) -> None:
        self.force_time(self.hardware.time)

    def force_time(self, t: int) -> None:
        if t < self.time:
            raise SimulationError("strange start time")
        self.time = t
        self.loop_delay = 0

    def loop_end_hook(self) -> None:
        delay, self.loop_delay = self.loop_delay, 0
        if self.loop_delay_limit is not None and delay > self.loop_delay_limit:
            raise SimulationError(f"loop take too long ({delay} seconds)")
        self.time += 1

    # -- membership ---------------------------------------------------------------

    def _assert_cfs_rw(self) -> None:
        if not self.hardware.nodes[self.node].cfs_rw:
            raise CfsError("cfs connection refused - not mounted?")

    def cluster_state_update(self) -> bool:
        return self.hardware.nodes[self.node].cfs_update

    def quorate(self) -> bool:
        info, quorate = self.hardware.get_node_info()
        return quorate and info[self.node].online

    def get_node_info(self) -> tuple[dict[str, NodeInfo], bool]:
        return self.hardware.get_node_info()

    def get_node_last_seen(self, node: str) -> float | None:
        return None

    def is_node_shutdown(self) -> tuple[bool, bool]:
        flag = self.hardware.nodes[self.node].shutdown
        if flag == "shutdown":
            return True, False
        if flag == "reboot":
            return True, True
        return False, False

    def get_node_version(self, node: str) -> str | None:
        n = self.hardware.nodes.get(node)
        return n.version if n is not None else None

    # -- records ------------------------------------------------------------------------

    def read_manager_status(self) -> ManagerStatus:
        self._assert_cfs_rw()
        return self.hardware.manager_status

    def write_manager_status(self, ms: ManagerStatus) -> None:
        self._assert_cfs_rw()
        self.hardware.write_manager_status(ms)
        if self.on_announce is None:
            return  # nobody checks the announcements: skip deciding them (a scan of every service)
        announcement = self.announcer.after_write(ms)
        self.on_announce(self.announcer, self.hardware.manager_status, announcement)

    def read_lrm_status(self, node: str) -> LrmStatus:
        self._assert_cfs_rw()
        return self.hardware.read_lrm_status(node)

    def write_lrm_status(self, status: LrmStatus) -> None:
        self._assert_cfs_rw()
        self.hardware.write_lrm_status(self.node, status)
        if self.on_report is None:
            return  # nobody checks the reports (as above)
        new = self.reporter.take_new(status.results)
        if new:
            ms = self.hardware.manager_status
            self.on_report(self.node, new, ms, route_results(self.node, new, ms))

    def read_crm_commands(self) -> str:
        self._assert_cfs_rw()
        return self.hardware.take_crm_commands()

    def any_pending_crm_command(self) -> bool:
        return bool(self.hardware.crm_commands)

    def read_service_config(self) -> ServiceConfig:
        self._assert_cfs_rw()
        conf = self.hardware.service_config()
        raw = self.hardware.corrupt_bytes(RESOURCES_FILE)
        if raw is None:
            self.resources_view.accept(conf)  # the last good reading, should the file break
            return conf
        # ours (issue #10): the file's bytes are corrupt; read them as the live Env does
        # (ha/config/inforce.py): broken sections carried over from the last good reading
        # where each service is comes from the simulated guests, not from the file (as the live
        # Env takes it from locations/<sid>): the corrupt bytes hold the nodes of their moment
        nodes = {sid: cd.node for sid, cd in conf.services.items()}

        def parse(text: str, version: str | None) -> tuple[ServiceConfig, list[ConfigError]]:
            return parse_resources_cfg(text, RESOURCES_FILE, nodes=nodes)

        reading = self.resources_view.read(raw, f"corrupt:{hash(raw)}", parse, repr(sorted(nodes.items())))
        value = reading.value
        for sid in self.resources_view.kept:  # carried over: where it is now
            if sid in nodes:
                value.services[sid].node = nodes[sid]
        if reading.fresh:
            value.digest = None  # the simulator's config has no digest (see Hardware.service_config)
            value.incomplete = bool(reading.errors)
            for e in reading.errors:
                if str(e) not in self.config_errors_logged:  # once per error, as the live Env
                    self.config_errors_logged.add(str(e))
                    self.log("err", f"configuration error, section skipped: {e}")
        return value

    def update_service_config(self, sid: str, changes: dict[str, object], delete: list[str]) -> None:
        self._assert_cfs_rw()
        self.hardware.update_service_config(sid, changes, delete)

    def write_service_config(self, conf: ServiceConfig) -> None:
        self._assert_cfs_rw()
        self.hardware.write_service_config(conf)

    def read_group_config(self) -> GroupConfig:
        self._assert_cfs_rw()
        return self.hardware.groups

    def delete_group_config(self) -> None:
        self.hardware.delete_groups()

    def read_rules_config(self) -> RulesConfig:
        self._assert_cfs_rw()
        return self.hardware.rules

    def write_rules_config(self, rules: RulesConfig) -> None:
        self._assert_cfs_rw()
        self.hardware.write_rules(rules)

    def steal_service(self, sid: str, current_node: str, new_node: str) -> None:
        self.hardware.change_service_location(sid, current_node, new_node)

    def service_location(self, sid: str) -> str | None:
        raw = self.hardware.service_raw.get(sid)
        return None if raw is None else str(raw["node"])

    def prefetch_locations(self, sids: list[str]) -> None:
        pass  # the simulated locations are in memory

    def get_datacenter_settings(self) -> DatacenterConfig:
        return self.hardware.datacenter

    def get_node_stats(self, mode: str) -> dict[str, NodeStats]:
        return self.hardware.node_stats(mode)

    def get_service_stats(self, mode: str) -> dict[str, ServiceStats]:
        return self.hardware.service_stats(mode)

    def get_guests(self) -> dict[str, GuestInfo]:
        return self.hardware.guests()

    # -- locks and watchdog ------------------------------------------------------------------

    def _get_lock(self, name: str) -> bool:
        self.loop_delay += 1
        if not self.quorate():
            return False
        return self.hardware.get_lock(self.log, name, self.node, self.time)

    def _release_lock(self, name: str) -> bool:
        if not self.quorate():
            return False
        return self.hardware.release_lock(name, self.node, self.time)

    def get_ha_manager_lock(self) -> bool:
        return self._get_lock("ha_manager_lock")

    def release_ha_manager_lock(self) -> bool:
        return self._release_lock("ha_manager_lock")

    def get_ha_agent_lock(self, node: str | None = None) -> bool:
        return self._get_lock(f"ha_agent_{node or self.node}_lock")

    def release_ha_agent_lock(self) -> bool:
        return self._release_lock(f"ha_agent_{self.node}_lock")

    def watchdog_open(self) -> str:
        return self.hardware.watchdog_open(self.node)

    def watchdog_update(self, handle: str) -> None:
        self.hardware.watchdog_update(handle)

    def watchdog_close(self, handle: str) -> None:
        self.hardware.watchdog_close(handle)

    # -- resources -------------------------------------------------------------------------

    def get_max_workers(self) -> int:
        return 0  # execute inline, like the reference's test environment

    def resource_plugin(self, rtype: str) -> ResourcePlugin | None:
        return self.hardware.plugins.get(rtype)
