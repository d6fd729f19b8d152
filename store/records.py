"""Typed access to the named records of ARCHITECTURE.md on any :class:`Store`.

The Env implementations of the live runtime read and write through these so
every backend stores the same shapes: JSON for status records (the reference's
format, §7.5, §7.6), text for the config files and the command queue, and the
bare node name for ``locations/<sid>``.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from ha.config.encoding import decode_config
from ha.errors import ProtocolError
from ha.records import LrmStatus, ManagerStatus
from store.base import ABSENT, Record, Store, VersionConflict

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


_msgspec_decode = msgspec.json.decode


def decode_json(name: str, data: bytes) -> Any:
    if not data.strip():
        return None
    try:
        # msgspec first (issue #15: every LRM decodes the whole manager_status of thousands of
        # services on each new version; about 2.5 times faster), the standard library for
        # whatever it refuses (NaN, for one), so both accept exactly the same records
        return _msgspec_decode(data)
    except ValueError:
        pass
    try:
        return json.loads(data)
    except ValueError as e:
        raise ProtocolError(f"record '{name}' is not valid JSON: {e}") from e


def read_manager_status(store: Store, only_node: str | None = None) -> tuple[ManagerStatus, str | None]:
    """The manager status and its version (None when it does not exist yet).

    ``only_node``: only the services on or moving to that node (``ManagerStatus.from_dict``)."""
    rec = store.read(MANAGER_STATUS)
    if rec is None:
        return ManagerStatus(), None
    return ManagerStatus.from_dict(decode_json(MANAGER_STATUS, rec.data), only_node), rec.version


def write_manager_status(
    store: Store, ms: ManagerStatus, expect_version: str | None = None, as_dict: dict[str, Any] | None = None
) -> str:
    """Write ``ms`` (``as_dict``: its ``to_dict()`` when the caller already made it: at
    thousands of services that is a large part of a master's round)."""
    data = ms.to_dict() if as_dict is None else as_dict
    return store.write(MANAGER_STATUS, encode_json(data), expect_version)


@dataclass(frozen=True, slots=True)
class NodeUsage:
    """The ``usage`` entry of ``lrm_status``: what the node's LRM measured (agents/usage.py).

    ``cpu`` in cores, ``mem`` in bytes, for the node and per service (sid -> (cpu, mem)).
    The ``dynamic`` scheduler's measured stats on live nodes (BEHAVIOUR.md §5.10; the
    core's own reading of lrm_status ignores the entry).
    """

    cpu: float
    mem: float
    services: dict[str, tuple[float, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "cpu": round(self.cpu, 2),
            "mem": int(self.mem),
            "services": {sid: [round(c, 2), int(m)] for sid, (c, m) in sorted(self.services.items())},
        }

    @classmethod
    def from_dict(cls, d: Any) -> NodeUsage | None:
        """None when absent or malformed (a service entry that is malformed is left out)."""
        if not isinstance(d, dict):
            return None
        cpu, mem = d.get("cpu"), d.get("mem")
        if not _number(cpu) or not _number(mem):
            return None
        assert isinstance(cpu, int | float) and isinstance(mem, int | float)
        services: dict[str, tuple[float, float]] = {}
        raw = d.get("services")
        for sid, v in (raw if isinstance(raw, dict) else {}).items():
            if isinstance(v, list) and len(v) == 2 and _number(v[0]) and _number(v[1]):
                services[str(sid)] = (float(v[0]), float(v[1]))
        return cls(float(cpu), float(mem), services)


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v >= 0


def read_lrm_status(store: Store, node: str) -> LrmStatus:
    return read_lrm_status_and_usage(store, node)[0]


def read_lrm_status_and_usage(store: Store, node: str) -> tuple[LrmStatus, NodeUsage | None]:
    """The node's lrm_status and the usage its LRM measured (None when it carries none)."""
    name = lrm_status_name(node)
    rec = store.read(name)
    if rec is None:
        return LrmStatus(), None
    d = decode_json(name, rec.data)
    return LrmStatus.from_dict(d), NodeUsage.from_dict(d.get("usage") if isinstance(d, dict) else None)


def write_lrm_status(store: Store, node: str, status: LrmStatus, usage: NodeUsage | None = None) -> str:
    d = status.to_dict()
    if usage is not None:
        d["usage"] = usage.to_dict()
    return store.write(lrm_status_name(node), encode_json(d))


def capacity_name(node: str) -> str:
    """``nodes/<node>/capacity``: the node's CPUs and memory, written by its ha-node at start.

    The ``static`` scheduler's node stats on live nodes (BEHAVIOUR.md §5.10).
    """
    return f"nodes/{node}/capacity"


def write_capacity(store: Store, node: str, maxcpu: float, maxmem: float) -> None:
    store.write(capacity_name(node), encode_json({"maxcpu": maxcpu, "maxmem": maxmem}))


def read_capacity(store: Store, node: str) -> tuple[float, float] | None:
    """(maxcpu, maxmem in bytes) as the node published them; None when it has not (yet)."""
    rec = store.read(capacity_name(node))
    if rec is None:
        return None
    try:
        value = decode_json(capacity_name(node), rec.data)
        return float(value["maxcpu"]), float(value["maxmem"])
    except (ProtocolError, KeyError, TypeError, ValueError):
        return None


def unwatched_name(node: str) -> str:
    """``nodes/<node>/unwatched``: the node gave up its lease and watchdog while services ran.

    SAFETY: while this record exists the node cannot be fenced by taking its lease
    (docs/RUNTIME.md, "Disarm, restart and the unwatched mark").
    """
    return f"nodes/{node}/unwatched"


def parse_location(data: bytes) -> tuple[str | None, int]:
    """``<node> [<fencing token>]`` (records written before tokens existed have none: 0)."""
    parts = data.decode(errors="replace").split()
    node = parts[0] if parts else None
    token = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    return node, token


def read_location(store: Store, sid: str) -> tuple[str | None, str | None]:
    """(node, version) of ``locations/<sid>``; (None, None) when unknown."""
    rec = store.read(location_name(sid))
    if rec is None:
        return None, None
    return parse_location(rec.data)[0], rec.version


def read_fencing_token(store: Store, sid: str) -> int:
    """The service's fencing token: grows with every move of ``locations/<sid>`` (0 before the first)."""
    rec = store.read(location_name(sid))
    return 0 if rec is None else parse_location(rec.data)[1]


def write_location(
    store: Store, sid: str, node: str, expect_version: str | None = None, *, current: Record | None = None
) -> str:
    """Move a service: CAS on the version read, so two movers cannot both win.

    Every move gives the service a larger fencing token (docs/AGENTS.md,
    ``HA_FENCING_TOKEN``): the previous token plus one, or the wall clock in
    milliseconds if that is larger, so a service removed and added again still
    gets tokens above its earlier ones (unless the clock went back meanwhile).
    The CAS makes the read of the previous token and the write one step. ``current``: the
    record as the caller read it for ``expect_version`` (not read again; with a CAS on its
    version a stale one fails the write).
    """
    cur = current if current is not None and expect_version is not None else store.read(location_name(sid))
    return store.write(location_name(sid), location_value(cur, node), expect_version)


def location_value(current: Record | None, node: str) -> bytes:
    """The record that moves a service to NODE from CURRENT (its record now, None: none yet),
    with the next fencing token (see :func:`write_location`)."""
    prev = 0 if current is None else parse_location(current.data)[1]
    token = max(prev + 1, int(time.time() * 1000))
    return f"{node} {token}\n".encode()


def read_locations(store: Store) -> dict[str, str]:
    """sid -> node of every ``locations/<sid>`` record (one request where the store can)."""
    bulk = getattr(store, "read_prefix", None)
    if bulk is not None:  # etcd: one range request instead of a list and a read per record
        records: dict[str, Record] = bulk(LOCATIONS)
        found = {name[len(LOCATIONS) :]: parse_location(r.data)[0] for name, r in records.items()}
        return {sid: node for sid, node in found.items() if node}
    out: dict[str, str] = {}
    for name in store.list(LOCATIONS):
        sid = name[len(LOCATIONS) :]
        node = read_location(store, sid)[0]
        if node:
            out[sid] = node
    return out


class LocationsCache:
    """``read_locations`` for a reader that asks every iteration: only the records that changed.

    A full read lists ``locations/`` and reads every record (thousands at scale, every
    iteration of every daemon: issue #15). This one asks the store's change log what
    changed since its last look and reads those; it reads everything again when the
    store cannot tell (first call, compacted or rotated log) and at least every
    ``full_every`` s, in case a change note was lost (the dir store's journal is a hint).
    A change is seen at the latest on the call after its note, as a full read would.
    """

    def __init__(self, full_every: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.full_every = full_every
        self.clock = clock
        self._token: str | None = None
        self._epoch: int | None = None
        self._next_full = 0.0
        self._locations: dict[str, str] = {}

    def read(self, store: Store, epoch: int | None = None) -> dict[str, str]:
        """The locations. ``epoch``: a counter that someone watching the store (the node's
        watcher) moves whenever ``locations/`` may have changed; while it stands still the
        store is not asked at all (on etcd each question is a request)."""
        now = self.clock()
        if epoch is not None and epoch == self._epoch and self._token is not None and now < self._next_full:
            return dict(self._locations)
        self._epoch = epoch
        changes = store.changed_since(self._token)
        if self._token is None or changes.names is None or now >= self._next_full:
            self._locations = read_locations(store)
            self._next_full = now + self.full_every
        else:
            moved = sorted(name for name in changes.names if name.startswith(LOCATIONS))
            many = getattr(store, "read_many", None)
            if many is not None and len(moved) > 1:
                # etcd: a recovery round moved 100 locations, and each reader on every node
                # read them one request after the other (issue #15): now one per 128
                records: dict[str, Record | None] = many(moved)
            else:
                records = {name: store.read(name) for name in moved}
            for name, record in records.items():
                sid = name[len(LOCATIONS) :]
                node = None if record is None else parse_location(record.data)[0]
                if node:
                    self._locations[sid] = node
                else:
                    self._locations.pop(sid, None)
        self._token = changes.token
        return dict(self._locations)


def read_text(store: Store, name: str) -> tuple[str, str | None]:
    """A text record (config file) and its version; ("", None) when missing.

    Bytes that are not UTF-8 raise :class:`ConfigError` naming the first bad
    line (the tools refuse to edit such a file; the runtime reads it section by
    section instead, ``actors/env.py``).
    """
    return text_of(store.read(name), name)


def text_of(record: Record | None, name: str) -> tuple[str, str | None]:
    """:func:`read_text` of a record already read."""
    if record is None:
        return "", None
    text, errors = decode_config(record.data, name)
    if errors:
        raise errors[0]
    return text, record.version


CONFIG_ERRORS: Final = "config_errors"


def read_config_errors(store: Store) -> dict[str, dict[str, Any]]:
    """``config_errors``: file -> {"since": epoch seconds, "errors": [...]} (files with errors only)."""
    rec = store.read(CONFIG_ERRORS)
    if rec is None:
        return {}
    try:
        value = decode_json(CONFIG_ERRORS, rec.data)
    except ProtocolError:
        return {}
    return value if isinstance(value, dict) else {}


def update_config_errors(store: Store, name: str, errors: list[str], now: float) -> None:
    """Record (or clear) the errors of config file ``name``; "since" stays while the file has errors.

    Written by the master's Env (``actors/env.py``), read by ``ha-manager status``;
    a report only, never an input to a decision.
    """
    for _ in range(5):
        rec = store.read(CONFIG_ERRORS)
        current: dict[str, Any] = {}
        if rec is not None:
            with contextlib.suppress(ProtocolError):
                loaded = decode_json(CONFIG_ERRORS, rec.data)
                current = loaded if isinstance(loaded, dict) else {}
        before = current.get(name)
        if errors:
            since = before.get("since", now) if isinstance(before, dict) else now
            current[name] = {"since": since, "errors": errors}
        elif before is None:
            return
        else:
            del current[name]
        try:
            store.write(CONFIG_ERRORS, encode_json(current), ABSENT if rec is None else rec.version)
            return
        except VersionConflict:
            continue


def queue_crm_command(store: Store, line: str) -> None:
    store.append(CRM_COMMANDS, line.strip())


def take_crm_commands(store: Store) -> str:
    return store.take(CRM_COMMANDS).decode()


def any_pending_crm_command(store: Store) -> bool:
    rec = store.read(CRM_COMMANDS)
    return rec is not None and bool(rec.data.strip())
