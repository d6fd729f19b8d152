"""The three config files an administrator edits: strict reads and compare-and-swap edits.

Every edit is validated before it is written, and rewrites only the
sections it changes: comments, unknown lines, sections that do not parse
(a typo'd property, say) and sections the edit left alone are kept byte for
byte (``ha.config.sectionconfig.preserve_edit``, issue #10); an edit that
would replace a section that does not parse is refused (exit 5). It is
written atomically with a compare-and-swap on the version that was read
(so two concurrent edits cannot silently overwrite each other), and refused with an
:class:`~admin.errors.AdminError` carrying a one-line message and an exit
code otherwise. Nothing is written when an edit is refused.

Digests: the ``digest`` of a config file is its store version, which
changes whenever its bytes change. ``set``-style edits accept the digest a
caller read and refuse (exit 5) when the file changed since.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from admin.errors import AdminError, ExitCode
from ha.config.groups import GroupConfig, parse_groups_cfg
from ha.config.resources import ServiceConfig, parse_resources_cfg
from ha.config.rules import RulesConfig, parse_rules_cfg
from ha.config.schema import ConfigSchema, Prop, parse_sid
from ha.config.sectionconfig import BrokenSectionError, edit_config
from ha.errors import ConfigError
from store import records as rec
from store.base import Store, VersionConflict


class _ConfigReads:
    """What :func:`read_config` keeps between two calls on one store object (the API's)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.locations = rec.LocationsCache()
        # (resources.cfg version, the locations it was parsed with, the parsed config)
        self.parsed: tuple[str | None, dict[str, str], ServiceConfig] | None = None


_READS: weakref.WeakKeyDictionary[Store, _ConfigReads] = weakref.WeakKeyDictionary()
_READS_LOCK = threading.Lock()


def _reads(store: Store) -> _ConfigReads:
    with _READS_LOCK:
        r = _READS.get(store)
        if r is None:
            r = _READS[store] = _ConfigReads()
        return r


def read_config(store: Store) -> tuple[ServiceConfig, str | None]:
    """resources.cfg with every service's node from its location record; strict (exit 5 on errors).

    A long-lived store object (a node's API) keeps the last parse and the locations
    (issue #15: at 2,000 services each ``migrate`` read 2,000 location records and parsed
    the whole file, twice; 100 migrations took 100 s): parsed again only for a new version
    of the file, the locations followed through the store's change log
    (``store.records.LocationsCache``). Each caller gets a copy of its own.
    """
    reads = _reads(store)
    with reads.lock:
        locations = reads.locations.read(store)
        record = store.read(rec.RESOURCES_CFG)
        version = None if record is None else record.version
        hit = reads.parsed
        if hit is not None and hit[0] == version:
            conf = hit[2].copy()
            if hit[1] == locations or conf.relocate(hit[1], locations):
                return conf, version
        text, version = rec.text_of(record, rec.RESOURCES_CFG)
        conf, errors = parse_resources_cfg(text, rec.RESOURCES_CFG, nodes=locations)
        if errors:
            # a broken section is reported, never silently dropped by an admin tool
            raise AdminError(f"resources.cfg is invalid: {errors[0]}", ExitCode.CONFLICT)
        reads.parsed = (version, locations, conf.copy())
        return conf, version


def read_groups(store: Store) -> tuple[GroupConfig, str | None]:
    text, version = rec.read_text(store, rec.GROUPS_CFG)
    conf, errors = parse_groups_cfg(text, rec.GROUPS_CFG)
    if errors:
        raise AdminError(f"groups.cfg is invalid: {errors[0]}", ExitCode.CONFLICT)
    return conf, version


def read_rules(store: Store) -> tuple[RulesConfig, str | None]:
    text, version = rec.read_text(store, rec.RULES_CFG)
    conf, errors = parse_rules_cfg(text, rec.RULES_CFG)
    if errors:
        raise AdminError(f"rules.cfg is invalid: {errors[0]}", ExitCode.CONFLICT)
    return conf, version


C = TypeVar("C")


def edit_file(
    store: Store,
    name: str,
    parse: Callable[[str, str], tuple[C, list[ConfigError]]],
    fmt: Callable[[C], str],
    edit: Callable[[C], None],
    digest: str | None = None,
    retries: int = 5,
) -> str:
    """Read, edit, validate and CAS-write one config file; return its new version (digest)."""
    for _ in range(retries):
        text, version = rec.read_text(store, name)
        if digest is not None and digest != (version or ""):
            raise AdminError(
                f"{name} was changed by someone else (digest mismatch), re-read it", ExitCode.CONFLICT
            )
        try:  # what did not parse is kept as it is (edit_config)
            data = edit_config(text.encode(), name, parse, fmt, edit)
        except BrokenSectionError as e:
            raise AdminError(str(e), ExitCode.CONFLICT) from None
        except ConfigError as e:  # a value the file cannot hold: refused, nothing written
            raise AdminError(e.message, ExitCode.USAGE) from None
        try:
            return store.write(name, data, version or "")
        except VersionConflict:
            if digest is not None:
                raise AdminError(f"{name} was changed concurrently, re-read it", ExitCode.CONFLICT) from None
    raise AdminError(f"{name} keeps changing, try again", ExitCode.CONFLICT)


def normalize_sid(sid: str) -> str:
    """A service id as the config writes it (a bare number is a VM: ``100`` -> ``vm:100``)."""
    if sid.isdigit():
        sid = f"vm:{sid}"
    try:
        parse_sid(sid)
    except ConfigError as e:
        raise AdminError(e.message, ExitCode.USAGE) from None
    return sid


def check_node(node: str, nodes: list[str]) -> None:
    """Refuse (exit 3) a node that is not a cluster member."""
    if node not in nodes:
        raise AdminError(f"unknown node '{node}' (nodes: {', '.join(nodes)})", ExitCode.NOT_FOUND)


def check_options(
    schema: ConfigSchema,
    stype: str,
    options: Mapping[str, object],
    unknown: str,
    *,
    adding: bool = False,
) -> list[tuple[Prop, Any]]:
    """Check every option of an add/set against the schema (issue #10: before anything is read or written).

    ``unknown`` formats the refusal of an option that does not apply to
    section type ``stype`` (``{key}``, ``{type}``). Returns (property, typed
    value) pairs; a bad value is refused with exit 2 and the schema's message.
    """
    out: list[tuple[Prop, Any]] = []
    for key, raw in options.items():
        prop = schema.prop(key, stype)
        if prop is None or not prop.api or not (adding or prop.settable):
            raise AdminError(unknown.format(key=key, type=stype), ExitCode.USAGE)
        try:
            out.append((prop, prop.parse(raw)))
        except ConfigError as e:
            raise AdminError(e.message, ExitCode.USAGE) from None
    return out


def check_delete(schema: ConfigSchema, stype: str, delete: list[str], what: str) -> list[Prop]:
    """The options a ``--delete`` resets: only optional ones that apply to ``stype``."""
    out: list[Prop] = []
    for key in delete:
        prop = schema.prop(key, stype)
        if prop is None or not prop.deletable:
            raise AdminError(f"cannot delete {what}option '{key}'", ExitCode.USAGE)
        out.append(prop)
    return out
