"""Reading a reference-format scenario folder (BEHAVIOUR.md §9.2).

Every problem is reported as a :class:`ScenarioError` naming the file and
what is wrong; ``ha-sim`` prints it as one line and exits 2.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ha.config.datacenter import DatacenterConfig, parse_datacenter_json
from ha.errors import ConfigError, HaError

DEFAULT_NODES = ("node1", "node2", "node3")
DEFAULT_MAXCPU = 24
DEFAULT_MAXMEM = 131072 * 1024 * 1024
SIM_SID = re.compile(r"^(vm|ct|fa):(\d+)$")

# service_config keys the simulator understands (others are ignored, like the reference)
SERVICE_KEYS = ("node", "state", "group", "failback", "max_restart", "max_relocate", "lock", "comment")


class ScenarioError(HaError):
    """A scenario file is missing or malformed."""


@dataclass
class Scenario:
    path: Path
    cmdlist: list[list[str]]
    hardware: dict[str, dict[str, Any]]
    manager_status: dict[str, Any]
    service_config: dict[str, dict[str, Any]]
    groups_text: str | None
    rules_text: str | None
    datacenter: DatacenterConfig
    datacenter_raw: dict[str, Any]
    service_status: dict[str, dict[str, int]] = field(default_factory=dict)
    static_service_stats: dict[str, dict[str, Any]] | None = None  # None: the defaults (§9.2)
    dynamic_service_stats: dict[str, dict[str, Any]] | None = None


def _read_json(path: Path, what: str) -> Any:
    try:
        text = path.read_text()
    except OSError as e:
        raise ScenarioError(f"{path}: cannot read {what}: {e.strerror}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ScenarioError(
            f"{path}: invalid JSON in {what}: {e.msg} (line {e.lineno}, column {e.colno})"
        ) from None


def load_scenario(path: str | Path) -> Scenario:
    root = Path(path)
    if not root.is_dir():
        raise ScenarioError(f"{root}: not a scenario directory")

    cmd_path = root / "cmdlist"
    if not cmd_path.exists():
        raise ScenarioError(f"{cmd_path}: missing (a scenario needs a cmdlist)")
    cmdlist = _read_json(cmd_path, "cmdlist")
    if not isinstance(cmdlist, list) or not all(
        isinstance(b, list) and all(isinstance(c, str) for c in b) for b in cmdlist
    ):
        raise ScenarioError(f"{cmd_path}: expected a JSON list of lists of command strings")

    hw_path = root / "hardware_status"
    if hw_path.exists():
        hardware = _read_json(hw_path, "hardware_status")
        if not isinstance(hardware, dict) or not hardware:
            raise ScenarioError(f"{hw_path}: expected a non-empty JSON object node -> status")
        for node, st in hardware.items():
            if not isinstance(st, dict):
                raise ScenarioError(f"{hw_path}: node '{node}': expected an object")
            for key in ("power", "network"):
                if st.get(key, "off") not in ("on", "off"):
                    raise ScenarioError(f"{hw_path}: node '{node}': {key} must be 'on' or 'off'")
    else:
        hardware = {
            n: {"power": "off", "network": "off", "maxcpu": DEFAULT_MAXCPU, "maxmem": DEFAULT_MAXMEM}
            for n in DEFAULT_NODES
        }
    for st in hardware.values():
        st.setdefault("power", "off")
        st.setdefault("network", "off")

    ms_path = root / "manager_status"
    manager_status = _read_json(ms_path, "manager_status") if ms_path.exists() else {}
    if not isinstance(manager_status, dict):
        raise ScenarioError(f"{ms_path}: expected a JSON object")

    sc_path = root / "service_config"
    if sc_path.exists():
        service_config = _read_json(sc_path, "service_config")
        if not isinstance(service_config, dict):
            raise ScenarioError(f"{sc_path}: expected a JSON object sid -> config")
    else:
        nodes = ["node1", "node2", "node3", "node1", "node2", "node3"]
        service_config = {f"vm:{101 + i}": {"node": n} for i, n in enumerate(nodes)}
    for sid, cd in service_config.items():
        if not SIM_SID.match(sid):
            raise ScenarioError(f"{sc_path}: invalid service id '{sid}' (expected vm:N, ct:N or fa:N)")
        if not isinstance(cd, dict) or not cd.get("node"):
            raise ScenarioError(f"{sc_path}: service '{sid}' without assigned node")
        if cd["node"] not in hardware:
            raise ScenarioError(f"{sc_path}: service '{sid}' on unknown node '{cd['node']}'")

    groups_text = _read_text(root / "groups")
    rules_text = _read_text(root / "rules_config")

    dc_path = root / "datacenter.cfg"
    dc_text = _read_text(dc_path) or ""
    try:
        datacenter = parse_datacenter_json(dc_text, str(dc_path))
        datacenter_raw = json.loads(dc_text) if dc_text.strip() else {}
    except ConfigError as e:
        raise ScenarioError(str(e)) from None

    service_status: dict[str, dict[str, int]] = {}
    for node in hardware:
        p = root / f"service_status_{node}"
        if p.exists():
            data = _read_json(p, f"service_status_{node}")
            if not isinstance(data, dict):
                raise ScenarioError(f"{p}: expected a JSON object sid -> 0/1")
            service_status[node] = {str(k): int(bool(v)) for k, v in data.items()}

    stats: dict[str, dict[str, dict[str, Any]] | None] = {}
    for name in ("static_service_stats", "dynamic_service_stats"):
        p = root / name
        data = _read_json(p, name) if p.exists() else None
        if data is not None and not (
            isinstance(data, dict) and all(isinstance(v, dict) for v in data.values())
        ):
            raise ScenarioError(f"{p}: expected a JSON object sid -> {{stats}}")
        stats[name] = data

    return Scenario(
        path=root,
        cmdlist=cmdlist,
        hardware=hardware,
        manager_status=manager_status,
        service_config=service_config,
        groups_text=groups_text,
        rules_text=rules_text,
        datacenter=datacenter,
        datacenter_raw=datacenter_raw,
        service_status=service_status,
        static_service_stats=stats["static_service_stats"],
        dynamic_service_stats=stats["dynamic_service_stats"],
    )


def _read_text(path: Path) -> str | None:
    if not path.exists():
        return None
    try:
        return path.read_text()
    except OSError as e:
        raise ScenarioError(f"{path}: cannot read: {e.strerror}") from None
