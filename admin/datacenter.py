"""datacenter.cfg's HA options for the tools: read them, change them one by one (issue #14).

The file holds ``key: value`` lines (BEHAVIOUR.md §7.4): ``ha:`` and ``crs:``
are lists of ``name=value`` properties, ``max_workers:`` a number; every
other line (the rest of a Proxmox datacenter.cfg, comments) is not ours.
A property is named ``LINE.NAME`` (``crs.ha``, ``ha.shutdown_policy``) or
``max_workers`` (``schema.DATACENTER_KEYS``); a whole ``ha``/``crs`` line is
named by its key and replaced whole (as the reference's ``--crs ha=static``).

Every name and value is checked against ``schema.DATACENTER`` before the
file is read: an unknown key, a bad value or an unknown scheduler mode is
refused (exit 2), never written and never taken as ``basic``. An edit
rewrites only the lines it changes: comments, lines that are not ours and,
in an ``ha``/``crs`` line, the properties it does not name are kept as they
are. The file after the edit must read (``parse_datacenter_cfg``, as the
master reads it): an edit that would leave it invalid because of a line it
did not replace is refused (exit 5: fix that line, or replace it whole).
Written with a compare-and-swap on the version read, as the other config
edits (``admin.configfiles.edit_file``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from admin.errors import AdminError, ExitCode
from ha.config.datacenter import parse_datacenter_cfg
from ha.config.schema import DATACENTER, DATACENTER_KEYS, DATACENTER_LINES, Prop, check_text
from ha.errors import ConfigError
from store import records as rec
from store.base import Store, VersionConflict

NAME = rec.DATACENTER_CFG
TOP_KEYS = tuple(k for k in DATACENTER_KEYS if "." not in k)  # max_workers
LINE_KEYS = (*DATACENTER_LINES, *TOP_KEYS)  # the lines that are ours


def known_keys() -> str:
    return ", ".join((*DATACENTER_LINES, *DATACENTER_KEYS))


def _unknown(key: str) -> AdminError:
    return AdminError(f"unknown datacenter option '{key}' (one of {known_keys()})", ExitCode.USAGE)


def check_key(key: str) -> str:
    """``key`` if it names a property or a whole ``ha``/``crs`` line; else refused (exit 2)."""
    if key not in DATACENTER_KEYS and key not in DATACENTER_LINES:
        raise _unknown(key)
    return key


def _value(key: str, raw: object) -> str:
    """One property's value, checked, as the file writes it (``yes`` -> ``1``)."""
    prop = DATACENTER_KEYS[key]
    try:
        return prop.render(prop.parse(raw))
    except ConfigError as e:
        msg = e.message.removeprefix(f"property '{prop.name}': ")
        raise AdminError(f"{key}: {msg}", ExitCode.USAGE) from None


def _items(line: str, value: str, path: str | None, lineno: int | None) -> list[tuple[str, str]]:
    """``a=1,b=2`` as [(name, value)]; a malformed item is a ConfigError."""
    out: list[tuple[str, str]] = []
    for item in value.split(","):
        k, eq, v = item.partition("=")
        if not eq:
            raise ConfigError(f"{line}: expected 'name=value', got '{item.strip()}'", path, lineno)
        out.append((k.strip(), v.strip()))
    return out


def _whole_line(line: str, raw: object) -> str:
    """A whole ``ha``/``crs`` value (``ha=static,ha-rebalance-on-start=1``), every property checked."""
    if not isinstance(raw, str | int) or isinstance(raw, bool):
        raise AdminError(f"{line}: expected a string 'name=value,...'", ExitCode.USAGE)
    try:
        text = check_text(line, str(raw), None, None)
        items = _items(line, text, None, None) if text else []
    except ConfigError as e:
        raise AdminError(e.message, ExitCode.USAGE) from None
    if not items:
        raise AdminError(f"{line}: empty value (use --delete {line} to remove the line)", ExitCode.USAGE)
    seen: set[str] = set()
    out: list[str] = []
    for name, v in items:
        key = f"{line}.{name}"
        if key not in DATACENTER_KEYS:
            known = ", ".join(k.partition(".")[2] for k in DATACENTER_KEYS if k.startswith(line + "."))
            raise AdminError(f"{line}: unknown property '{name}' (one of {known})", ExitCode.USAGE)
        if name in seen:
            raise AdminError(f"{line}: property '{name}' given twice", ExitCode.USAGE)
        seen.add(name)
        out.append(f"{name}={_value(key, v)}")
    return ",".join(out)


# -- the file -----------------------------------------------------------------------------------


@dataclass(slots=True)
class Line:
    """One of our lines of the file: its index in the file's lines, its key and raw value."""

    index: int
    key: str
    value: str


@dataclass(slots=True)
class DcFile:
    """datacenter.cfg as lines, with where our keys are (each key's lines, in file order)."""

    lines: list[str]
    ours: dict[str, list[Line]] = field(default_factory=dict)

    @classmethod
    def read(cls, text: str) -> DcFile:
        f = cls(text.split("\n"))
        for i, raw in enumerate(f.lines):
            s = raw.strip()
            if not s or s.startswith("#"):
                continue
            key, sep, value = s.partition(":")
            if sep and key.strip() in LINE_KEYS:
                f.ours.setdefault(key.strip(), []).append(Line(i, key.strip(), value.strip()))
        return f

    def text(self) -> str:
        return "\n".join(self.lines)

    def one(self, key: str) -> Line | None:
        """The line of ``key`` an edit may rewrite; two or more are refused (which one would it be?)."""
        found = self.ours.get(key, [])
        if len(found) > 1:
            where = ", ".join(str(ln.index + 1) for ln in found)
            raise AdminError(
                f"{NAME} has {len(found)} '{key}' lines (lines {where}): remove all but one first",
                ExitCode.CONFLICT,
            )
        return found[0] if found else None

    def put(self, key: str, value: str | None) -> None:
        """Set the value of ``key``'s line (added at the end when missing); None removes the line."""
        line = self.one(key)
        if line is None:
            if value is None:
                return
            if self.lines[-1] != "":  # the file did not end with a line break
                self.lines.append("")
            self.lines[-1:] = [f"{key}: {value}", ""]
        elif value is None:
            del self.lines[line.index]
        else:
            self.lines[line.index] = f"{key}: {value}"
        self.ours = DcFile.read(self.text()).ours


@dataclass(frozen=True, slots=True)
class Edit:
    """A checked ``datacenter_set``: properties to set, whole lines to replace, keys to delete."""

    props: dict[str, str]  # LINE.NAME or max_workers -> value as written
    whole: dict[str, str]  # ha/crs -> the line's value
    delete: tuple[str, ...]


def check_edit(options: Mapping[str, object], delete: list[str]) -> Edit:
    """Check every key and value of a ``datacenter_set`` (before the file is read)."""
    props: dict[str, str] = {}
    whole: dict[str, str] = {}
    for key, raw in options.items():
        check_key(key)
        if key in DATACENTER_LINES:
            whole[key] = _whole_line(key, raw)
        else:
            props[key] = _value(key, raw)
    for key in delete:
        check_key(key)
        if key in options:
            raise AdminError(f"'{key}' is both set and deleted", ExitCode.USAGE)
    for line in DATACENTER_LINES:
        if line in whole or line in delete:
            part = [k for k in (*props, *delete) if k.startswith(line + ".")]
            if part:
                raise AdminError(
                    f"'{part[0]}' given with the whole '{line}' line: give one or the other", ExitCode.USAGE
                )
    if not props and not whole and not delete:
        raise AdminError("nothing to change (give KEY=VALUE, --crs, --ha or --delete)", ExitCode.USAGE)
    return Edit(props, whole, tuple(dict.fromkeys(delete)))


def apply_edit(text: str, edit: Edit) -> str:
    """``text`` after ``edit``: only the lines it changes are rewritten."""
    f = DcFile.read(text)
    for key in (*DATACENTER_LINES, *TOP_KEYS):
        if key in edit.whole:
            f.put(key, edit.whole[key])
        elif key in edit.delete and key in DATACENTER_LINES:
            f.put(key, None)
        elif key in TOP_KEYS:
            if key in edit.props:
                f.put(key, edit.props[key])
            elif key in edit.delete:
                f.put(key, None)
        else:
            _edit_line(f, key, edit)
    return f.text()


def _edit_line(f: DcFile, line: str, edit: Edit) -> None:
    """Set and delete properties of the ``ha``/``crs`` line; the others stay as they are."""
    sets = {k.partition(".")[2]: v for k, v in edit.props.items() if k.startswith(line + ".")}
    dels = {k.partition(".")[2] for k in edit.delete if k.startswith(line + ".")}
    if not sets and not dels:
        return
    current = f.one(line)
    items: list[tuple[str, str]] = []
    if current is not None and current.value:
        try:
            items = _items(line, current.value, NAME, current.index + 1)
        except ConfigError as e:
            raise AdminError(f"{e}; fix the line or replace it whole (--{line})", ExitCode.CONFLICT) from None
    names = [name for name, _ in items]
    # a property written twice: which one would the edit change? (the master reads the last)
    twice = next((n for n in (*sets, *dels) if names.count(n) > 1), None)
    if twice is not None and current is not None:
        raise AdminError(
            f"{NAME}:{current.index + 1}: {line}: property '{twice}' written twice;"
            f" fix the line or replace it whole (--{line})",
            ExitCode.CONFLICT,
        )
    out: list[tuple[str, str]] = []
    for name, v in items:
        if name in dels:
            continue
        out.append((name, sets.pop(name) if name in sets else v))
    out.extend(sets.items())
    f.put(line, ",".join(f"{k}={v}" for k, v in out) if out else None)


def set_datacenter(
    store: Store, options: Mapping[str, object], delete: list[str], digest: str | None, retries: int = 5
) -> str:
    """Check, apply and CAS-write one edit of datacenter.cfg; return its new digest."""
    edit = check_edit(options, delete)
    for _ in range(retries):
        try:
            text, version = rec.read_text(store, NAME)
        except ConfigError as e:  # bytes that are not UTF-8: the tools do not edit such a file
            raise AdminError(str(e), ExitCode.REFUSED) from None
        if digest is not None and digest != (version or ""):
            raise AdminError(
                f"{NAME} was changed by someone else (digest mismatch), re-read it", ExitCode.CONFLICT
            )
        new = apply_edit(text, edit)
        try:
            parse_datacenter_cfg(new, NAME)
        except ConfigError as e:  # our values are checked: a line the edit did not replace is bad
            raise AdminError(f"{NAME} is invalid: {e}; fix that line first", ExitCode.CONFLICT) from None
        if new == text:
            return version or ""
        try:
            return store.write(NAME, new.encode(), version or "")
        except VersionConflict:
            if digest is not None:
                raise AdminError(f"{NAME} was changed concurrently, re-read it", ExitCode.CONFLICT) from None
    raise AdminError(f"{NAME} keeps changing, try again", ExitCode.CONFLICT)


# -- the view -----------------------------------------------------------------------------------


def _default(prop: Prop) -> str | None:
    return None if prop.default is None else prop.render(prop.default)


def datacenter_view(store: Store) -> dict[str, Any]:
    """Every property as the file sets it (or its default), which are set, the whole lines, errors.

    Lenient, for reading: a property whose value does not read is reported in
    ``errors`` (with file and line) and shown with its default; ``errors`` also
    holds the master's reading of the file when that fails (the last good
    configuration then stays in force, docs/CONFIG.md).
    """
    record = store.read(NAME)
    version = None if record is None else record.version
    errors: list[str] = []
    try:
        text, _ = rec.read_text(store, NAME)
    except ConfigError as e:  # not UTF-8: said, and what reads is shown
        errors.append(str(e))
        text = "" if record is None else record.data.decode("utf-8", "replace")
    f = DcFile.read(text)
    values: dict[str, str | None] = {k: _default(p) for k, p in DATACENTER_KEYS.items()}
    set_keys: list[str] = []
    lines: dict[str, str | None] = dict.fromkeys(DATACENTER_LINES)
    for key, found in sorted(f.ours.items()):
        ln = found[-1]  # the master reads the last one
        lineno = ln.index + 1
        if key in TOP_KEYS:
            pairs = [(key, ln.value)]
        else:
            lines[key] = ln.value
            try:
                pairs = [(f"{key}.{n}", v) for n, v in _items(key, ln.value, NAME, lineno)]
            except ConfigError as e:
                errors.append(str(e))
                continue
        for qkey, raw in pairs:
            prop = DATACENTER_KEYS.get(qkey)
            if prop is None:
                errors.append(str(ConfigError(f"unknown property '{qkey}'", NAME, lineno)))
                continue
            try:
                values[qkey] = prop.render(prop.parse(raw, NAME, lineno))
            except ConfigError as e:
                errors.append(str(e))
                continue
            set_keys.append(qkey)
    if not errors:
        try:
            parse_datacenter_cfg(text, NAME)
        except ConfigError as e:
            errors.append(str(e))
    order = list(DATACENTER_KEYS)
    return {
        "digest": version or "",
        "options": values,
        "set": sorted(set(set_keys), key=order.index),
        "lines": lines,
        "errors": errors,
    }


__all__ = ["DATACENTER", "check_edit", "check_key", "datacenter_view", "set_datacenter"]
