"""One schema per config type: every property of resources.cfg, groups.cfg, rules.cfg, datacenter.cfg.

A :class:`Prop` says what a property is (kind, default, range, format,
which section types it applies to, its help text and command-line flags);
a :class:`ConfigSchema` lists the properties of one file. Everything else
is derived from here (issue #16): the parsers and writers in ``ha/config``,
the value checks of the admin layer and of the API's option maps
(``admin/``), the ``ha-manager`` options and their completion
(``cli/ha_manager.py``) and the option tables of docs/CONFIG.md
(``python -m admin.configdocs`` regenerates them). Adding a resource option
is one :class:`Prop` here plus the code that gives it a meaning (an agent).

Edge rule (issue #10): a section-config value is one line of printable
text. :func:`check_text` refuses any character of Unicode category ``Cc``
(U+0000-U+001F, tab included, U+007F-U+009F, NEL U+0085 included) and the
line and paragraph separators U+2028/U+2029, in every value, whether it
comes from the API, ``ha-manager --offline`` or a file being read; leading
and trailing blanks are dropped (the file format cannot hold them).
"""

from __future__ import annotations

import math
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ha.constants import DEFAULT_MAX_RELOCATE, DEFAULT_MAX_RESTART, DEFAULT_SHUTDOWN_POLICY
from ha.errors import ConfigError
from ha.states import RequestedState, ShutdownPolicy

UINT_MAX = 2**31 - 1  # the largest integer a config value may hold (a signed 32-bit int)
MAX_VALUE_LEN = 4096  # characters, for every text value
FORBIDDEN_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")

NODE_NAME = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?$")
CONFIG_ID = re.compile(r"^[a-zA-Z][a-zA-Z0-9_\-]+$")
_SID = re.compile(r"^([a-z]+):(\S+)$")


class Kind(StrEnum):
    """What a property's value is; each kind has one parser and one rendering."""

    STR = "string"
    TEXT = "text"  # free text (comments)
    BOOL = "boolean"  # 0|1 (also yes/no, on/off, true/false when read)
    UINT = "integer"  # 0..max
    SECONDS = "seconds"  # a non-negative number, fractions allowed
    NUMBER = "number"  # a non-negative number, fractions allowed (not a duration)
    ENUM = "enum"
    NODE = "node"
    NODE_LIST = "node-list"  # node[:priority],...
    SID_LIST = "sid-list"  # TYPE:NAME,...
    GROUP = "group"  # a group id


@dataclass(frozen=True, slots=True)
class Prop:
    """One property of a config section."""

    name: str
    kind: Kind
    help: str
    default: Any = None  # the value when absent (None: absent)
    required: bool = False  # required where it applies
    types: tuple[str, ...] = ()  # the section types it applies to; () = all
    extra: bool = False  # resources: kept as a string in ``cd.extra`` (the agent's business)
    choices: tuple[str, ...] = ()  # ENUM: allowed values
    aliases: Mapping[str, str] = field(default_factory=dict)  # ENUM: legacy value -> value
    min: int = 0  # UINT
    max: int = UINT_MAX  # UINT
    max_len: int = MAX_VALUE_LEN
    pattern: str | None = None  # STR: the whole value must match
    pattern_help: str = ""  # what ``pattern`` means, for messages and docs
    example: str = "x"  # a valid value (docs, tests)
    settable: bool = True  # ``set`` may change it (``node``: no, that is migrate/relocate)
    api: bool = True  # an option of the API and the CLI (``lock``: no, internal)
    presence: bool = False  # read from a file: any value, even "0", means true (rules ``disable``, §5.13.1)
    quoted: bool = False  # URI-escaped in the file (rules ``comment``)
    metavar: str | None = None

    @property
    def flags(self) -> tuple[str, ...]:
        """Command-line spellings: ``--max-restart``, plus the reference's ``--max_restart``."""
        dashed = "--" + self.name.replace("_", "-")
        return (dashed, f"--{self.name}") if "_" in self.name else (dashed,)

    @property
    def deletable(self) -> bool:
        return self.api and self.settable and not self.required

    def applies(self, stype: str) -> bool:
        return not self.types or stype in self.types

    # -- values ------------------------------------------------------------------------------
    def parse(self, value: object, path: str = "command line", line: int | None = None) -> Any:
        """Check one value given at the edge (API, CLI, JSON) and return it typed."""
        if isinstance(value, bool):
            if self.kind != Kind.BOOL:
                raise self._error(f"expected {self.kind}, got '{value}'", path, line)
            return value
        if isinstance(value, int) and self.kind in (Kind.BOOL, Kind.UINT, Kind.SECONDS, Kind.NUMBER):
            if self.kind == Kind.BOOL:
                return bool(value)
            return self._number(value, path, line)
        if isinstance(value, float) and self.kind in (Kind.SECONDS, Kind.NUMBER):
            value = repr(value)
        if not isinstance(value, str):
            raise self._error(f"expected {self.kind}, got '{value}'", path, line)
        text = check_text(self.name, value, path, line, self.max_len)
        return self._convert(text, path, line)

    def read(self, value: str, path: str, line: int | None) -> Any:
        """One value as a config file holds it."""
        if self.presence:
            return True
        if self.quoted:
            value = urllib.parse.unquote(value)
        return self.parse(value, path, line)

    def render(self, value: Any) -> str:
        """One typed value as the config file writes it."""
        if self.kind == Kind.BOOL:
            return "1" if value else "0"
        if self.kind == Kind.NODE_LIST:
            return format_node_list(value)
        if self.kind == Kind.SID_LIST:
            return ",".join(sorted(value))
        text = str(value)
        if FORBIDDEN_CHARS.search(text):  # a writer never emits a line break into a value
            raise self._error("contains a control character or line break", "", None)
        return urllib.parse.quote(text, safe=" ") if self.quoted else text

    def _error(self, msg: str, path: str, line: int | None) -> ConfigError:
        return ConfigError(f"property '{self.name}': {msg}", path or None, line)

    def _number(self, n: int, path: str, line: int | None) -> Any:
        if self.kind in (Kind.SECONDS, Kind.NUMBER):
            if n < 0:
                raise self._error("must be >= 0", path, line)
            return str(n)
        if n < self.min:
            raise self._error(f"must be >= {self.min}, got {n}", path, line)
        if n > self.max:
            raise self._error(f"must be <= {self.max}, got {n}", path, line)
        return n

    def _convert(self, v: str, path: str, line: int | None) -> Any:
        k = self.kind
        if k == Kind.BOOL:
            return parse_bool(v, self.name, path, line)
        if k == Kind.UINT:
            if not re.fullmatch(r"\d+", v):
                raise self._error(f"expected a non-negative integer, got '{v}'", path, line)
            return self._number(int(v), path, line)
        if k in (Kind.SECONDS, Kind.NUMBER):
            what = "a number of seconds" if k == Kind.SECONDS else "a number"
            try:
                f = float(v)
            except ValueError:
                raise self._error(f"'{v}' is not {what}", path, line) from None
            if not math.isfinite(f) or f < 0:
                raise self._error("must be a number >= 0", path, line)
            return v
        if k == Kind.ENUM:
            if v in self.aliases:
                return self.aliases[v]
            if v not in self.choices:
                known = ", ".join((*self.choices, *self.aliases))
                raise self._error(f"invalid value '{v}' (one of {known})", path, line)
            return v
        if k == Kind.NODE:
            if not NODE_NAME.match(v):
                raise self._error(f"invalid node name '{v}'", path, line)
            return v
        if k == Kind.GROUP:
            if not CONFIG_ID.match(v):
                raise self._error(f"invalid group id '{v}'", path, line)
            return v
        if k == Kind.NODE_LIST:
            return parse_node_list(v, self.name, path, line)
        if k == Kind.SID_LIST:
            return parse_sid_list(v, self.name, path, line)
        if self.pattern is not None and not re.fullmatch(self.pattern, v):
            raise self._error(f"'{v}' is not {self.pattern_help or self.pattern}", path, line)
        return v


@dataclass(frozen=True, slots=True)
class SectionType:
    """A section type of a file (``proc`` in resources.cfg, ``node-affinity`` in rules.cfg)."""

    name: str
    id_pattern: re.Pattern[str]
    help: str
    live_migration: bool = False  # resources: migration keeps the service running


@dataclass(frozen=True, slots=True)
class ConfigSchema:
    """The properties of one config file."""

    file: str
    section_types: tuple[SectionType, ...]
    props: tuple[Prop, ...]
    comment_first: bool = True  # the writer puts ``comment`` before the sorted other keys

    def section_type(self, name: str) -> SectionType | None:
        return next((t for t in self.section_types if t.name == name), None)

    def prop(self, name: str, stype: str | None = None) -> Prop | None:
        """The property ``name`` (of section type ``stype`` when given)."""
        for p in self.props:
            if p.name == name and (stype is None or p.applies(stype)):
                return p
        return None

    def props_for(self, stype: str) -> list[Prop]:
        return [p for p in self.props if p.applies(stype)]

    def api_props(self) -> list[Prop]:
        """The properties the API and the CLI take (any section type)."""
        return [p for p in self.props if p.api]

    # -- records <-> values ------------------------------------------------------------------
    @staticmethod
    def get(obj: Any, prop: Prop) -> Any:
        if prop.extra:
            return obj.extra.get(prop.name)
        return getattr(obj, prop.name)

    @staticmethod
    def assign(obj: Any, prop: Prop, value: Any) -> None:
        if prop.extra:
            obj.extra[prop.name] = str(value)
        else:
            setattr(obj, prop.name, value)

    @staticmethod
    def reset(obj: Any, prop: Prop) -> None:
        if prop.extra:
            obj.extra.pop(prop.name, None)
        else:
            setattr(obj, prop.name, prop.default)

    def render_props(self, obj: Any, stype: str, extra: Mapping[str, str] = {}) -> list[str]:
        """The property lines of one section (tab indent): comment first if so, then by key."""
        values: dict[str, str] = {}
        for p in self.props_for(stype):
            if p.extra:
                continue
            v = getattr(obj, p.name)
            if v is None or (not p.required and v == p.default):
                continue
            values[p.name] = p.render(v)
        for k, v in extra.items():
            known = self.prop(k, stype)
            values[k] = (known or Prop(k, Kind.STR, "")).render(v)
        lines: list[str] = []
        if self.comment_first and "comment" in values:
            lines.append(f"\tcomment {values.pop('comment')}")
        lines.extend(f"\t{k} {v}" for k, v in sorted(values.items()))
        return lines


# -- value helpers (also used by the simulator's JSON config) ----------------------------------


def check_text(
    name: str, value: str, path: str | None, line: int | None, max_len: int = MAX_VALUE_LEN
) -> str:
    """The edge rule for every value: one line of printable text, at most ``max_len`` characters."""
    m = FORBIDDEN_CHARS.search(value)
    if m:
        raise ConfigError(
            f"property '{name}': control character or line break U+{ord(m.group()):04X} not allowed",
            path,
            line,
        )
    value = value.strip()
    if len(value) > max_len:
        raise ConfigError(f"property '{name}': longer than {max_len} characters", path, line)
    return value


def parse_bool(value: str, key: str, path: str | None, line: int | None) -> bool:
    v = value.strip().lower()
    if v in ("1", "yes", "on", "true"):
        return True
    if v in ("0", "no", "off", "false"):
        return False
    raise ConfigError(f"property '{key}': invalid boolean value '{value}'", path, line)


def parse_uint(value: object, key: str, path: str | None, line: int | None, maximum: int = UINT_MAX) -> int:
    """A non-negative integer up to ``maximum``, given as int or numeric string (sim JSON allows both)."""
    if isinstance(value, bool):
        raise ConfigError(f"property '{key}': expected a non-negative integer, got '{value}'", path, line)
    if isinstance(value, int):
        n = value
    elif (isinstance(value, float) and value.is_integer()) or (
        isinstance(value, str) and re.fullmatch(r"\s*\d+\s*", value)
    ):
        n = int(value)
    else:
        raise ConfigError(f"property '{key}': expected a non-negative integer, got '{value}'", path, line)
    if n < 0:
        raise ConfigError(f"property '{key}': must be >= 0, got {n}", path, line)
    if n > maximum:
        raise ConfigError(f"property '{key}': must be <= {maximum}, got {n}", path, line)
    return n


def parse_node_list(value: str, key: str, path: str | None, line: int | None) -> dict[str, int]:
    """Parse ``node[:prio],node[:prio]`` into {node: priority} (priority default 0)."""
    nodes: dict[str, int] = {}
    for raw in value.split(","):
        item = raw.strip()
        if not item:
            continue
        name, _, prio = item.partition(":")
        if not NODE_NAME.match(name):
            raise ConfigError(f"property '{key}': invalid node name '{name}'", path, line)
        if prio:
            if not re.fullmatch(r"\d+", prio) or int(prio) > UINT_MAX:
                raise ConfigError(
                    f"property '{key}': invalid priority '{prio}' for node '{name}'", path, line
                )
            nodes[name] = int(prio)
        else:
            nodes[name] = 0
    if not nodes:
        raise ConfigError(f"property '{key}': empty node list", path, line)
    return nodes


def format_node_list(nodes: Mapping[str, int]) -> str:
    """Sorted, with ``:prio`` only when non-zero (§7.3)."""
    return ",".join(f"{n}:{p}" if p else n for n, p in sorted(nodes.items()))


def parse_sid(sid: str) -> tuple[str, str]:
    """Split ``type:name`` and check it against the resource types of :data:`RESOURCES`."""
    m = _SID.match(sid)
    if not m:
        raise ConfigError(f"invalid resource id '{sid}' (expected TYPE:NAME)")
    rtype, name = m.group(1), m.group(2)
    spec = RESOURCES.section_type(rtype)
    if spec is None:
        known = ", ".join(sorted(t.name for t in RESOURCES.section_types))
        raise ConfigError(f"unknown resource type '{rtype}' in '{sid}' (known: {known})")
    if not spec.id_pattern.match(name):
        raise ConfigError(f"invalid name '{name}' for resource type '{rtype}'")
    return rtype, name


def parse_sid_list(value: str, key: str, path: str | None, line: int | None) -> set[str]:
    """``a,b,...`` of resource ids; a bare number is a VM (the reference resolves the type)."""
    out: set[str] = set()
    for raw in value.split(","):
        item = raw.strip()
        if not item:
            continue
        if item.isdigit():
            item = f"vm:{item}"
        try:
            parse_sid(item)
        except ConfigError as e:
            raise ConfigError(f"property '{key}': {e.message}", path, line) from None
        out.add(item)
    if not out:
        raise ConfigError(f"property '{key}': empty resource list", path, line)
    return out


# -- the schemas -------------------------------------------------------------------------------

_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")
_VMID = re.compile(r"^[1-9][0-9]+$")
_PORT = r"([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
_HOST_PORT = r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]+):" + _PORT

# fmt: off
RESOURCES = ConfigSchema(
    "resources.cfg",
    (
        SectionType("vm", _VMID, "a QEMU virtual machine (agents/vm.py; simulator)", live_migration=True),
        SectionType("ct", _VMID, "a Linux container run by crun (agents/ct.py; simulator)"),
        SectionType("fa", re.compile(r"^[0-9]+$"), "the simulator's failing resource (§9.6)"),
        SectionType("proc", _NAME, "a supervised process (agents/proc.py)"),
        SectionType("ocf", _NAME, "an OCF resource agent (agents/ocf.py)"),
    ),
    (
        Prop("node", Kind.NODE, "Node the resource starts on (default: where the manager would place it).",
             settable=False, example="node1"),
        Prop("state", Kind.ENUM, "Requested state (`enabled` = `started`).",
             default=RequestedState.STARTED, choices=tuple(s.value for s in RequestedState),
             aliases={"enabled": "started"}, example="stopped"),
        Prop("group", Kind.GROUP, "HA group (legacy).", example="g1"),
        Prop("failback", Kind.BOOL, "Move back to the preferred node.", default=True, example="0"),
        Prop("max_restart", Kind.UINT, "Restarts on the same node before relocating.",
             default=DEFAULT_MAX_RESTART, example="2"),
        Prop("max_relocate", Kind.UINT, "Relocations before giving up.", default=DEFAULT_MAX_RELOCATE,
             example="3"),
        Prop("comment", Kind.TEXT, "Free text.", example="web front"),
        Prop("lock", Kind.STR, "Set by the CRM (internal).", api=False, example="migrate"),
        # the static scheduler's service stats on live nodes (actors/env.py get_service_stats)
        Prop("maxcpu", Kind.NUMBER, "CPUs the service may use, for the static scheduler (0: a whole node; "
             "a vm: its cores).", extra=True, example="2"),
        Prop("maxmem", Kind.NUMBER, "Memory the service may use, in MiB, for the static scheduler (a vm: "
             "its memory).", extra=True, example="512"),
        # proc (agents/proc.py)
        Prop("cmd", Kind.STR, "The command line of the service.", required=True, types=("proc",),
             extra=True, example="sleep 600"),
        Prop("check_tcp", Kind.STR, "HOST:PORT that must accept connections.", types=("proc",), extra=True,
             pattern=_HOST_PORT, pattern_help="HOST:PORT", example="127.0.0.1:8080"),
        Prop("check_cmd", Kind.STR, "Health check command (exit 0 = healthy).", types=("proc",),
             extra=True, example="true"),
        Prop("stop_timeout", Kind.SECONDS, "Seconds a stop waits before killing: proc, from SIGTERM "
             "(default 10); vm, from the ACPI power-down request (default 45; 0 = hard stop); ct, from "
             "SIGTERM of the container's init (default 45; 0 = hard stop).",
             types=("proc", "vm", "ct"), extra=True, example="10"),
        Prop("cwd", Kind.STR, "Working directory (absolute).", types=("proc",), extra=True,
             pattern=r"/.*", pattern_help="an absolute path", example="/srv"),
        Prop("env", Kind.STR, "Environment: KEY=VALUE pairs separated by spaces.", types=("proc",),
             extra=True, example="PORT=8080"),
        # ocf (agents/ocf.py)
        Prop("agent", Kind.STR, "The OCF agent: provider:type, e.g. heartbeat:Dummy.", required=True,
             types=("ocf",), extra=True, example="heartbeat:Dummy"),
        Prop("params", Kind.STR, "The agent's parameters: name=value pairs separated by spaces.",
             types=("ocf",), extra=True, example="state=/run/x"),
        Prop("monitor_timeout", Kind.SECONDS, "Seconds a monitor call may take.", types=("ocf",),
             extra=True, example="20"),
        # vm (agents/vm.py): a QEMU guest; without kernel and disk, the project's default guest. The
        # path examples are files every host has: `ha-manager add` checks that images exist (validate.py)
        Prop("memory", Kind.STR, "Guest memory in MiB, 16..1048576 (default 256).", types=("vm",),
             extra=True, pattern=r"[1-9][0-9]*", pattern_help="a positive integer", example="512"),
        Prop("cores", Kind.STR, "Guest CPUs, 1..256 (default 1).", types=("vm",), extra=True,
             pattern=r"[1-9][0-9]*", pattern_help="a positive integer", example="2"),
        Prop("kernel", Kind.STR, "Kernel image to boot directly (default: the built-in guest's).",
             types=("vm",), extra=True, pattern=r"/.*", pattern_help="an absolute path",
             example="/etc/os-release"),
        Prop("initrd", Kind.STR, "Initramfs of `kernel`.", types=("vm",), extra=True, pattern=r"/.*",
             pattern_help="an absolute path", example="/etc/os-release"),
        Prop("append", Kind.STR, "Kernel command line of `kernel` (default: serial console, quiet).",
             types=("vm",), extra=True, example="console=ttyS0 root=/dev/vda"),
        Prop("disk", Kind.STR, "Disk image (virtio; .qcow2 or raw); without `kernel` the guest boots "
             "from it.", types=("vm",), extra=True, pattern=r"/.*", pattern_help="an absolute path",
             example="/etc/os-release"),
        Prop("health", Kind.ENUM, "Health check: `guest` (vm: the guest answers on the virtio-serial port "
             "org.pyha.health, as the built-in guest does; ct: the init answers on /run/pyha/ping, as the "
             "built-in init does) or `none` (QMP status, `crun state`, only). Default: `guest` for the "
             "built-in guest or init, else `none`.", types=("vm", "ct"), extra=True,
             choices=("guest", "none"), example="none"),
        # ct (agents/ct.py): a crun container; without rootfs, the project's busybox tree
        Prop("rootfs", Kind.STR, "Root filesystem directory, mounted read-only (default: the built-in "
             "busybox tree).", types=("ct",), extra=True, pattern=r"/.*", pattern_help="an absolute path",
             example="/"),
        Prop("init", Kind.STR, "The container's first process, a /bin/sh -c command line run inside it "
             "(default: the built-in health responder; /sbin/init with your own rootfs).", types=("ct",),
             extra=True, example="sleep 600"),
        Prop("hostname", Kind.STR, "The container's host name (default ct<vmid>).", types=("ct",),
             extra=True, pattern=r"[A-Za-z0-9]([A-Za-z0-9\-]{0,61}[A-Za-z0-9])?", pattern_help="a host name",
             example="web1"),
    ),
)

GROUPS = ConfigSchema(
    "groups.cfg",
    (SectionType("group", CONFIG_ID, "a legacy HA group (§5.14)"),),
    (
        Prop("nodes", Kind.NODE_LIST, "node[:priority],... list.", required=True, example="node1:2,node2"),
        Prop("restricted", Kind.BOOL, "Only run on the group's nodes.", default=False, example="1"),
        Prop("nofailback", Kind.BOOL, "Do not move back to higher priority.", default=False, example="1"),
        Prop("comment", Kind.TEXT, "Free text.", example="a group"),
    ),
)

NODE_AFFINITY = "node-affinity"
RESOURCE_AFFINITY = "resource-affinity"

RULES = ConfigSchema(
    "rules.cfg",
    (
        SectionType(NODE_AFFINITY, CONFIG_ID, "resources prefer (or, strict, only run on) nodes"),
        SectionType(RESOURCE_AFFINITY, CONFIG_ID, "resources run together (positive) or apart (negative)"),
    ),
    (
        Prop("resources", Kind.SID_LIST, "Comma-separated resource ids.", required=True, example="vm:100"),
        Prop("nodes", Kind.NODE_LIST, "node[:priority],... list.", required=True, types=(NODE_AFFINITY,),
             default={}, example="node1:2,node2"),
        Prop("strict", Kind.BOOL, "Only these nodes.", types=(NODE_AFFINITY,), default=False, example="1"),
        Prop("affinity", Kind.ENUM, "positive (together) or negative (apart).", required=True,
             types=(RESOURCE_AFFINITY,), choices=("positive", "negative"), example="negative"),
        Prop("comment", Kind.TEXT, "Free text (URI-escaped in the file).", quoted=True, example="a rule"),
        Prop("disable", Kind.BOOL, "Keep the rule but do not apply it.", default=False, presence=True,
             example="1"),
    ),
    comment_first=False,
)

# datacenter.cfg: ``ha: shutdown_policy=...``, ``crs: ha=...,ha-rebalance-on-start=...``, ``max_workers: N``;
# the section type is the line's key. ``ha-manager datacenter get|set`` names a property ``LINE.NAME``
# (``crs.ha``, ``ha.shutdown_policy``) or ``max_workers`` (:func:`datacenter_key`, admin/datacenter.py).
DATACENTER = ConfigSchema(
    "datacenter.cfg",
    (
        SectionType("ha", re.compile(""), "the HA stack's options"),
        SectionType("crs", re.compile(""), "the cluster resource scheduler"),
        SectionType("max_workers", re.compile(""), "a top-level key"),
    ),
    (
        Prop("shutdown_policy", Kind.ENUM, "What a node's shutdown does to its services (§3.2.5).",
             types=("ha",), default=DEFAULT_SHUTDOWN_POLICY, choices=tuple(s.value for s in ShutdownPolicy),
             example="migrate"),
        Prop("ha", Kind.ENUM, "Placement mode (§5.10): count services (basic), configured CPU/memory of "
             "services against node capacity (static), measured use (dynamic).", types=("crs",),
             default="basic", choices=("basic", "static", "dynamic"), example="static"),
        Prop("ha-rebalance-on-start", Kind.BOOL, "Place a starting service on the best node (§5.11).",
             types=("crs",), default=False, example="1"),
        Prop("ha-auto-rebalance", Kind.BOOL, "Move services while the node imbalance stays above the "
             "threshold (static and dynamic modes, §5.12).", types=("crs",), default=False, example="1"),
        Prop("ha-auto-rebalance-threshold", Kind.NUMBER, "Imbalance (coefficient of variation of node loads, "
             "a fraction) above which rebalancing starts.", types=("crs",), default="0.3", example="0.3"),
        Prop("ha-auto-rebalance-method", Kind.ENUM, "How the best move is chosen: lowest resulting imbalance "
             "(bruteforce) or TOPSIS over CPU and memory loads (topsis).", types=("crs",),
             default="bruteforce", choices=("bruteforce", "topsis"), example="topsis"),
        Prop("ha-auto-rebalance-hold-duration", Kind.UINT, "Rounds the imbalance must stay above the "
             "threshold before a move (0: at once).", types=("crs",), default=3, max=1000, example="3"),
        Prop("ha-auto-rebalance-margin", Kind.NUMBER, "Least relative improvement of the imbalance "
             "(a fraction) for a move to be made.", types=("crs",), default="0.1", example="0.1"),
        Prop("max_workers", Kind.UINT, "Concurrent resource agent commands per node.",
             types=("max_workers",), example="4"),
    ),
)

# fmt: on

# the datacenter.cfg lines whose value is a list of ``name=value`` properties
DATACENTER_LINES = ("ha", "crs")


def datacenter_key(p: Prop) -> str:
    """The name ``ha-manager datacenter`` gives a datacenter.cfg property: ``crs.ha``, ``max_workers``."""
    line = p.types[0]
    return f"{line}.{p.name}" if line in DATACENTER_LINES else p.name


DATACENTER_KEYS: dict[str, Prop] = {datacenter_key(p): p for p in DATACENTER.props}

SCHEMAS: dict[str, ConfigSchema] = {s.file: s for s in (RESOURCES, GROUPS, RULES, DATACENTER)}


# -- docs ----------------------------------------------------------------------------------------


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown_table(schema: ConfigSchema) -> str:
    """The option table of docs/CONFIG.md for one file (checked against this module by a test)."""
    all_types = {t.name for t in schema.section_types}
    rows = [
        "| property | applies to | type | default | `ha-manager` option | meaning |",
        "|---|---|---|---|---|---|",
    ]
    for p in schema.props:
        types = "all" if not p.types or set(p.types) == all_types else ", ".join(p.types)
        if p.kind == Kind.ENUM:
            kind = " | ".join((*p.choices, *p.aliases))
        elif p.kind == Kind.UINT:
            kind = f"integer {p.min}..{p.max}"
        elif p.pattern_help:
            kind = p.pattern_help
        else:
            kind = str(p.kind)
        if p.required:
            default = "required"
        elif p.default is None or p.default == {}:
            default = ""
        else:
            default = f"`{p.render(p.default)}`"
        if schema is DATACENTER:
            flags = f"`{datacenter_key(p)}`"  # ha-manager datacenter get|set KEY
        else:
            flags = " ".join(f"`{f}`" for f in p.flags) if p.api else ""
        if p.api and not p.settable and flags:
            flags += " (add only)"
        rows.append(f"| `{p.name}` | {types} | {_cell(kind)} | {default} | {flags} | {_cell(p.help)} |")
    return "\n".join(rows) + "\n"
