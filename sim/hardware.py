"""The simulated cluster: nodes, power/network, locks, watchdogs, records (BEHAVIOUR.md §9.3-§9.5).

Everything the reference keeps in files under ``status/`` is held in memory
here and written out at the end of a run (``Hardware.dump``).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ha.config.datacenter import DatacenterConfig
from ha.config.groups import GroupConfig, parse_groups_cfg
from ha.config.resources import ResourceConfig, ServiceConfig, format_resources_cfg
from ha.config.rules import RulesConfig, format_rules_cfg, parse_rules_cfg
from ha.config.sectionconfig import parse_bool, parse_uint
from ha.constants import LOCK_TIMEOUT, WATCHDOG_TIMEOUT
from ha.crm import CRM
from ha.crs.stats import GuestInfo, NodeStats, ServiceStats
from ha.env import NodeInfo
from ha.errors import ConfigError, SimulationError
from ha.lrm import LRM, StartupWrite
from ha.records import LrmStatus, ManagerStatus
from sim.logfmt import format_line
from sim.resources import SimResource, make_plugins
from sim.scenario import SIM_SID, Scenario
from sim.stats import SimStats, guests

RESOURCES_FILE = "resources.cfg"

DEFAULT_NODE_VERSION = "9.0.0~2"


@dataclass
class SimNode:
    name: str
    power: str = "off"
    network: str = "off"
    shutdown: str | None = None
    cfs_rw: bool = True
    cfs_update: bool = True
    version: str | None = None
    crm: CRM | None = None
    lrm: LRM | None = None
    crm_stop: bool = False
    lrm_restart: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Watchdog:
    node: str
    update_time: int


class Hardware:
    """The virtual world one scenario runs in."""

    def __init__(self, scenario: Scenario, out: Callable[[str], object] | None = None) -> None:
        self.time = 0
        self.out = out
        self.lines: list[str] = []
        self.nodes: dict[str, SimNode] = {}
        for name in sorted(scenario.hardware):
            st = scenario.hardware[name]
            node = SimNode(name, power=st.get("power", "off"), network=st.get("network", "off"))
            node.version = st.get("pve-manager-version", DEFAULT_NODE_VERSION)
            node.extra = {k: v for k, v in st.items() if k not in ("power", "network", "pve-manager-version")}
            self.nodes[name] = node
        self.startup_write = StartupWrite()
        self._node_info_cache: tuple[tuple[bool, ...], tuple[dict[str, NodeInfo], bool]] | None = None
        self.locks: dict[str, tuple[str, int]] = {}
        self.watchdogs: dict[str, Watchdog] = {}
        self.wd_counter = 0
        self.running: dict[str, dict[str, int]] = {
            n: dict(scenario.service_status.get(n, {})) for n in self.nodes
        }
        self.fa_tries: dict[str, dict[str, int]] = {"start": {}, "migrate": {}}
        self.manager_status = ManagerStatus.from_dict(scenario.manager_status)
        self.lrm_status: dict[str, LrmStatus] = {}
        self.crm_commands = ""
        self.service_raw: dict[str, dict[str, Any]] = {
            sid: dict(cd) for sid, cd in scenario.service_config.items()
        }
        self._service_cache: ServiceConfig | None = None
        # config files whose bytes are corrupt right now (file -> seed), see corrupt_config
        self.corrupt: dict[str, int] = {}
        self._corrupt_cache: tuple[int, ServiceConfig, bytes] | None = None
        self.groups_text = scenario.groups_text
        self.rules_text = scenario.rules_text
        self.groups = self._parse_groups(scenario.groups_text)
        self.rules = self._parse_rules(scenario.rules_text)
        self.datacenter: DatacenterConfig = scenario.datacenter
        self.datacenter_raw = scenario.datacenter_raw
        self.plugins: dict[str, SimResource] = make_plugins(self)
        self.stats = SimStats(
            list(self.service_raw), scenario.static_service_stats, scenario.dynamic_service_stats
        )
        self._guests: dict[str, GuestInfo] | None = None
        self._overcommitted: dict[str, set[str]] = {"nodes": set(), "services": set()}

    # -- log --------------------------------------------------------------------

    def emit(self, line: str) -> None:
        self.lines.append(line)
        if self.out is not None:
            self.out(line)

    def log(self, level: str, msg: str, ident: str = "hardware") -> None:
        self.emit(format_line(level, self.time, ident, msg, full_level=True))

    # -- configuration records ----------------------------------------------------

    @staticmethod
    def _parse_groups(text: str | None) -> GroupConfig:
        if text is None:
            return GroupConfig(digest=None)
        conf, errors = parse_groups_cfg(text, "groups")
        if errors:
            raise SimulationError(str(errors[0]))
        return conf

    @staticmethod
    def _parse_rules(text: str | None) -> RulesConfig:
        if text is None:
            return RulesConfig(digest=None)
        conf, errors = parse_rules_cfg(text, "rules_config")
        if errors:
            raise SimulationError(str(errors[0]))
        return conf

    # -- config corruption (ours, issue #10; the fuzzer's ``config`` command) -----------------
    def corrupt_config(self, name: str, seed: int) -> None:
        """``name`` holds random bytes (always one that is not UTF-8) from now on, until restored.

        Edits keep landing in the readable parts, as the live Env's edits keep the bytes
        they do not touch (``preserve_edit``): the file is the current text with the same
        junk at the same relative place (:meth:`corrupt_bytes`).
        """
        if name != RESOURCES_FILE:
            raise SimulationError(f"sim_hardware_cmd: cannot corrupt '{name}' (only {RESOURCES_FILE})")
        self.corrupt[name] = seed

    def restore_config(self, name: str) -> None:
        self.corrupt.pop(name, None)

    def corrupt_bytes(self, name: str) -> bytes | None:
        """The bytes of a corrupt file right now; None when it is not corrupt."""
        seed = self.corrupt.get(name)
        if seed is None:
            return None
        conf = self.service_config()
        cached = self._corrupt_cache
        if cached is not None and cached[0] == seed and cached[1] is conf:
            return cached[2]  # every daemon reads it every round: render once per config change
        rng = random.Random(seed)
        junk = bytes([0xFF]) + rng.randbytes(rng.randint(0, 32))
        text = format_resources_cfg(conf).encode()
        at = int(rng.random() * (len(text) + 1))
        raw = text[:at] + junk + text[at:]
        self._corrupt_cache = (seed, conf, raw)
        return raw

    def service_config(self) -> ServiceConfig:
        """Parsed service_config with the simulator's defaults (§9.2); cached until changed.

        The simulator's config has no digest, like the reference's (so rules are
        not recompiled when resources change).
        """
        if self._service_cache is None:
            conf = ServiceConfig(digest=None)
            for sid in self.service_raw:
                conf.services[sid] = self._to_resource(sid, self.service_raw[sid])
            self._service_cache = conf
        return self._service_cache

    @staticmethod
    def _to_resource(sid: str, raw: dict[str, Any]) -> ResourceConfig:
        m = SIM_SID.match(sid)
        if not m:
            raise SimulationError(f"invalid service id '{sid}'")
        if not raw.get("node"):
            raise SimulationError(f"service '{sid}' without assigned node!")
        where = "service_config"
        try:
            state = str(raw.get("state") or "disabled")
            if state == "enabled":
                state = "started"
            failback = raw.get("failback", 1)
            return ResourceConfig(
                sid=sid,
                type=m.group(1),
                name=m.group(2),
                node=str(raw["node"]),
                state=state,
                group=str(raw["group"]) if raw.get("group") is not None else None,
                failback=bool(failback)
                if isinstance(failback, int)
                else parse_bool(str(failback), "failback", where, None),
                max_restart=parse_uint(raw.get("max_restart", 1), "max_restart", where, None),
                max_relocate=parse_uint(raw.get("max_relocate", 1), "max_relocate", where, None),
                comment=str(raw["comment"]) if raw.get("comment") is not None else None,
                lock=str(raw["lock"]) if raw.get("lock") else None,
            )
        except ConfigError as e:
            raise SimulationError(f"service '{sid}': {e.message}") from None

    def _changed_services(self) -> None:
        self._service_cache = None
        self._guests = None

    # -- scheduler stats (§9.3) -------------------------------------------------------------

    def _overcommit_warnings(self, kind: str) -> Callable[[list[str]], None]:
        """Warn when a node or service becomes overcommitted (once, not on every read)."""

        def report(msgs: list[str]) -> None:
            now = set(msgs)
            for msg in msgs:
                if msg not in self._overcommitted[kind]:
                    self.log("warning", msg)
            self._overcommitted[kind] = now

        return report

    def node_stats(self, mode: str) -> dict[str, NodeStats]:
        service_nodes = {sid: str(raw["node"]) for sid, raw in self.service_raw.items()}
        extra = {n: d.extra for n, d in self.nodes.items()}
        warn = self._overcommit_warnings("nodes")
        return self.stats.node_stats(mode, extra, self.running, service_nodes, warn)

    def service_stats(self, mode: str) -> dict[str, ServiceStats]:
        return self.stats.service_stats(mode, self._overcommit_warnings("services"))

    def guests(self) -> dict[str, GuestInfo]:
        if self._guests is None:
            conf = self.service_config()
            self._guests = guests({sid: (cd.node, cd.state) for sid, cd in conf.services.items()})
        return self._guests

    def set_service_state(self, sid: str, state: str) -> None:
        if sid not in self.service_raw:
            raise SimulationError(f"no such service '{sid}'")
        self.service_raw[sid]["state"] = state
        self._changed_services()

    def add_service(self, sid: str, node: str, state: str, running: bool) -> None:
        if sid in self.service_raw:
            raise SimulationError(f"resource ID '{sid}' already defined")
        self.service_raw[sid] = {"state": state, "node": node}
        self.stats.service_added(sid)
        self._changed_services()
        if running:
            self.running[node][sid] = 1

    def delete_service(self, sid: str) -> None:
        if sid not in self.service_raw:
            raise SimulationError(f"no such service '{sid}'")
        del self.service_raw[sid]
        self.stats.service_deleted(sid)
        self._changed_services()

    def update_service_config(self, sid: str, changes: dict[str, object], delete: list[str]) -> None:
        raw = self.service_raw.get(sid)
        if raw is None:
            raise SimulationError(f"no such service '{sid}'")
        raw.update(changes)
        for key in delete:
            raw.pop(key, None)
        self._changed_services()

    def write_service_config(self, conf: ServiceConfig) -> None:
        self.service_raw = {}
        for sid, cd in conf.services.items():
            raw: dict[str, Any] = {"node": cd.node, "state": cd.state}
            if cd.group is not None:
                raw["group"] = cd.group
            if not cd.failback:
                raw["failback"] = 0
            raw["max_restart"] = cd.max_restart
            raw["max_relocate"] = cd.max_relocate
            if cd.comment is not None:
                raw["comment"] = cd.comment
            if cd.lock is not None:
                raw["lock"] = cd.lock
            self.service_raw[sid] = raw
        self._changed_services()

    def change_service_location(self, sid: str, current: str, new: str) -> None:
        raw = self.service_raw.get(sid)
        if raw is None:
            raise SimulationError(f"no such service '{sid}'")
        if raw["node"] != current:
            raise SimulationError(f"location of service '{sid}' is not on node '{current}'")
        raw["node"] = new
        self._changed_services()

    def service_lock(self, sid: str) -> str | None:
        raw = self.service_raw.get(sid)
        lock = raw.get("lock") if raw else None
        return str(lock) if lock else None

    def set_service_lock(self, sid: str, lock: str | None) -> None:
        raw = self.service_raw.get(sid)
        if raw is None:
            raise SimulationError(f"no such service '{sid}'")
        if lock is None:
            raw.pop("lock", None)
        else:
            raw["lock"] = lock
        self._changed_services()

    def write_rules(self, rules: RulesConfig) -> None:
        self.rules_text = format_rules_cfg(rules)
        self.rules = self._parse_rules(self.rules_text)

    def delete_groups(self) -> None:
        self.groups_text = None
        self.groups = GroupConfig(digest=None)

    # -- running table ----------------------------------------------------------------

    def is_running(self, node: str, sid: str) -> bool:
        return bool(self.running[node].get(sid))

    def set_running(self, node: str, sid: str, running: bool) -> None:
        self.running[node][sid] = 1 if running else 0

    def remove_running_entry(self, node: str, sid: str) -> None:
        self.running[node].pop(sid, None)

    # -- membership ------------------------------------------------------------------

    def get_node_info(self) -> tuple[dict[str, NodeInfo], bool]:
        """Membership as the reference computes it (§9.3); callers must not modify the result.

        Cached per power/network state: it is asked on every quorum check and lock attempt.
        """
        key = tuple(d.power == "on" and d.network == "on" for d in self.nodes.values())
        cached = self._node_info_cache
        if cached is not None and cached[0] == key:
            return cached[1]
        online = dict(zip(self.nodes, key, strict=True))
        quorate = sum(key) > len(self.nodes) // 2
        if not quorate:
            result = {n: NodeInfo(False) for n in self.nodes}, False
        else:
            result = {n: NodeInfo(o) for n, o in online.items()}, True
        self._node_info_cache = (key, result)
        return result

    # -- locks (§9.3) -------------------------------------------------------------------

    def get_lock(self, env_log: Callable[[str, str], None], name: str, node: str, now: int) -> bool:
        held = self.locks.get(name)
        if held is None:
            self.locks[name] = (node, now)
            env_log("info", f"got lock '{name}'")
            return True
        owner, when = held
        if now - when <= LOCK_TIMEOUT:
            if owner == node:
                self.locks[name] = (node, now)
                return True
            return False
        env_log("info", f"got lock '{name}'")
        self.locks[name] = (node, now)
        return True

    def release_lock(self, name: str, node: str, now: int) -> bool:
        held = self.locks.get(name)
        if held is None:
            return False
        owner, when = held
        if now - when > LOCK_TIMEOUT:
            return True
        if owner == node:
            del self.locks[name]
            return True
        return False

    # -- watchdogs (§9.3), on hardware time --------------------------------------------------

    def watchdog_open(self, node: str) -> str:
        self.wd_counter += 1
        handle = f"WD:{node}:1:{self.wd_counter}"
        self.watchdogs[handle] = Watchdog(node, self.time)
        return handle

    def _watchdog(self, handle: str) -> Watchdog:
        wd = self.watchdogs.get(handle)
        if wd is None:
            raise SimulationError(f"no such watchdog handle '{handle}'")
        if self.time - wd.update_time > WATCHDOG_TIMEOUT:
            raise SimulationError("watchdog expired")
        return wd

    def watchdog_update(self, handle: str) -> None:
        self._watchdog(handle).update_time = self.time

    def watchdog_close(self, handle: str) -> None:
        self._watchdog(handle)
        del self.watchdogs[handle]

    def watchdog_check(self, node: str) -> bool:
        """False when a watchdog of ``node`` expired (it is removed)."""
        ok = True
        for handle, wd in list(self.watchdogs.items()):
            if wd.node == node and self.time - wd.update_time > WATCHDOG_TIMEOUT:
                ok = False
                del self.watchdogs[handle]
        return ok

    def watchdog_reset(self, node: str) -> None:
        for handle in [h for h, wd in self.watchdogs.items() if wd.node == node]:
            del self.watchdogs[handle]

    # -- status records --------------------------------------------------------------------

    def write_manager_status(self, ms: ManagerStatus) -> None:
        # store a snapshot: readers must see what was written, not the master's live objects
        self.manager_status = ms.copy()

    def write_lrm_status(self, node: str, status: LrmStatus) -> None:
        self.lrm_status[node] = LrmStatus(status.state, status.mode, status.timestamp, dict(status.results))

    def read_lrm_status(self, node: str) -> LrmStatus:
        return self.lrm_status.get(node) or LrmStatus()

    def queue_crm_command(self, line: str) -> None:
        self.crm_commands += line + "\n"

    def take_crm_commands(self) -> str:
        text, self.crm_commands = self.crm_commands, ""
        return text

    # -- output ----------------------------------------------------------------------------

    def dump(self, out_dir: Path) -> None:
        """Write the log and the final status records (the reference's ``status/`` folder)."""
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "log").write_text("".join(self.lines))

        def dump_json(name: str, data: object) -> None:
            (out_dir / name).write_text(json.dumps(data, indent=4, sort_keys=True) + "\n")

        dump_json("manager_status", self.manager_status.to_dict())
        for node in self.nodes:
            dump_json(f"lrm_status_{node}", self.read_lrm_status(node).to_dict())
            dump_json(f"service_status_{node}", self.running[node])
        dump_json("service_config", self.service_raw)
        dump_json(
            "hardware_status",
            {
                n: {
                    "power": d.power,
                    "network": d.network,
                    **({"shutdown": d.shutdown} if d.shutdown else {}),
                }
                for n, d in self.nodes.items()
            },
        )
        dump_json("cluster_locks", {k: {"node": v[0], "time": v[1]} for k, v in self.locks.items()})
        dump_json(
            "watchdog_status",
            {h: {"node": w.node, "update_time": w.update_time} for h, w in self.watchdogs.items()},
        )
        (out_dir / "crm_commands").write_text(self.crm_commands)
        if self.rules_text is not None:
            (out_dir / "rules_config").write_text(self.rules_text)
        if self.groups_text is not None:
            (out_dir / "groups").write_text(self.groups_text)
