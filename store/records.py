"""Typed access to the named records of ARCHITECTURE.md on any :class:`Store`.

The Env implementations of the live runtime read and write through these so
every backend stores the same shapes: JSON for status records (the reference's
format, §7.5, §7.6), text for the config files and the command queue, and the
bare node name for ``locations/<sid>``.
"""

from __future__ import annotations

import json
from typing import Any, Final

from ha.errors import ProtocolError
from ha.records import LrmStatus, ManagerStatus
from store.base import Store

RESOURCES_CFG: Final = "resources.cfg"
GROUPS_CFG: Final = "groups.cfg"
RULES_CFG: Final = "rules.cfg"
DATACENTER_CFG: Final = "datacenter.cfg"
NODES_CFG: Final = "nodes.cfg"
MANAGER_STATUS: Final = "manager_status"
CRM_COMMANDS: Final = "crm_commands"
LOCATIONS: Final = "locations/"

MANAGER_LEASE: Final = "ha_manager_lock"


def agent_lease(node: str) -> str:
    """Lease name of a node's LRM (the reference's ``ha_agent_{node}_lock``)."""
    return f"ha_agent_{node}_lock"


def lrm_status_name(node: str) -> str:
    return f"nodes/{node}/lrm_status"


def location_name(sid: str) -> str:
    return LOCATIONS + sid


def encode_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def decode_json(name: str, data: bytes) -> Any:
    if not data.strip():
        return None
    try:
        return json.loads(data)
    except ValueError as e:
        raise ProtocolError(f"record '{name}' is not valid JSON: {e}") from e


def read_manager_status(store: Store) -> tuple[ManagerStatus, str | None]:
    """The manager status and its version (None when it does not exist yet)."""
    rec = store.read(MANAGER_STATUS)
    if rec is None:
        return ManagerStatus(), None
    return ManagerStatus.from_dict(decode_json(MANAGER_STATUS, rec.data)), rec.version


def write_manager_status(store: Store, ms: ManagerStatus, expect_version: str | None = None) -> str:
    return store.write(MANAGER_STATUS, encode_json(ms.to_dict()), expect_version)


def read_lrm_status(store: Store, node: str) -> LrmStatus:
    name = lrm_status_name(node)
    rec = store.read(name)
    return LrmStatus() if rec is None else LrmStatus.from_dict(decode_json(name, rec.data))


def write_lrm_status(store: Store, node: str, status: LrmStatus) -> str:
    return store.write(lrm_status_name(node), encode_json(status.to_dict()))


def read_location(store: Store, sid: str) -> tuple[str | None, str | None]:
    """(node, version) of ``locations/<sid>``; (None, None) when unknown."""
    rec = store.read(location_name(sid))
    if rec is None:
        return None, None
    node = rec.data.decode().strip()
    return (node or None), rec.version


def write_location(store: Store, sid: str, node: str, expect_version: str | None = None) -> str:
    """Move a service: CAS on the version read, so two movers cannot both win."""
    return store.write(location_name(sid), node.encode() + b"\n", expect_version)


def read_locations(store: Store) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in store.list(LOCATIONS):
        rec = store.read(name)
        if rec is not None and rec.data.strip():
            out[name[len(LOCATIONS) :]] = rec.data.decode().strip()
    return out


def read_text(store: Store, name: str) -> tuple[str, str | None]:
    """A text record (config file) and its version; ("", None) when missing."""
    rec = store.read(name)
    return ("", None) if rec is None else (rec.data.decode(), rec.version)


def queue_crm_command(store: Store, line: str) -> None:
    store.append(CRM_COMMANDS, line.strip())


def take_crm_commands(store: Store) -> str:
    return store.take(CRM_COMMANDS).decode()


def any_pending_crm_command(store: Store) -> bool:
    rec = store.read(CRM_COMMANDS)
    return rec is not None and bool(rec.data.strip())
