"""The three config files an administrator edits: strict reads and compare-and-swap edits.

Every edit is validated before it is written, written atomically with a
compare-and-swap on the version that was read (so two concurrent edits
cannot silently overwrite each other), and refused with an
:class:`~admin.errors.AdminError` carrying a one-line message and an exit
code otherwise. Nothing is written when an edit is refused.

Digests: the ``digest`` of a config file is its store version, which
changes whenever its bytes change. ``set``-style edits accept the digest a
caller read and refuse (exit 5) when the file changed since.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from admin.errors import AdminError, ExitCode
from ha.config.groups import GroupConfig, parse_groups_cfg
from ha.config.resources import ServiceConfig, parse_resources_cfg, parse_sid
from ha.config.rules import RulesConfig, parse_rules_cfg
from ha.errors import ConfigError
from store import records as rec
from store.base import Store, VersionConflict


def read_config(store: Store) -> tuple[ServiceConfig, str | None]:
    text, version = rec.read_text(store, rec.RESOURCES_CFG)
    conf, errors = parse_resources_cfg(text, rec.RESOURCES_CFG, nodes=rec.read_locations(store))
    if errors:
        # a broken section is reported, never silently dropped by an admin tool
        raise AdminError(f"resources.cfg is invalid: {errors[0]}", ExitCode.CONFLICT)
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


def groups_migrated(store: Store) -> bool:
    """The reference's test: groups count as migrated to rules once groups.cfg holds none (§5.14)."""
    return not read_groups(store)[0].groups


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
        conf, errors = parse(text, name)
        if errors:
            raise AdminError(f"{name} is invalid: {errors[0]}", ExitCode.CONFLICT)
        edit(conf)
        try:
            return store.write(name, fmt(conf).encode(), version or "")
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
