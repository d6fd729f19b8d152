"""The ``ha``/``crs``/``max_workers`` keys of datacenter.cfg (BEHAVIOUR.md §5.3, §7.4, §9.2).

The properties and their checks are ``schema.DATACENTER`` (docs/CONFIG.md).
Every ``crs`` key is checked: an unknown key or scheduler mode is a config
error with file and line, never silently taken as ``basic``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ha.config import schema
from ha.constants import DEFAULT_SHUTDOWN_POLICY
from ha.errors import ConfigError


@dataclass(slots=True, frozen=True)
class DatacenterConfig:
    # Kept as given: an unknown value is reported by the LRM at shutdown time
    # ("unknown shutdown policy ..., fall back to conditional", §3.2.5).
    shutdown_policy: str = DEFAULT_SHUTDOWN_POLICY
    crs_mode: str = "basic"
    rebalance_on_start: bool = False
    # §5.3, §5.12; threshold and margin are fractions (this release, §5.12 note)
    auto_rebalance: bool = False
    auto_rebalance_threshold: float = 0.3
    auto_rebalance_method: str = "bruteforce"
    auto_rebalance_hold_duration: int = 3
    auto_rebalance_margin: float = 0.1
    max_workers: int | None = None


CRS_KEYS = (
    "ha",
    "ha-rebalance-on-start",
    "ha-auto-rebalance",
    "ha-auto-rebalance-threshold",
    "ha-auto-rebalance-method",
    "ha-auto-rebalance-hold-duration",
    "ha-auto-rebalance-margin",
)


def _prop(name: str) -> schema.Prop:
    prop = schema.DATACENTER.prop(name)
    assert prop is not None
    return prop


LineOf = Callable[[str], "int | None"]


def _crs_values(crs: dict[str, Any], path: str, line_of: LineOf) -> dict[str, Any]:
    """Check every ``crs`` key; returns the DatacenterConfig fields it sets."""
    out: dict[str, Any] = {}
    for key, raw in crs.items():
        line = line_of(key)
        if key not in CRS_KEYS:
            known = ", ".join(CRS_KEYS)
            raise ConfigError(f"crs: unknown key '{key}' (one of {known})", path, line)
        value = _prop(key).parse(raw, path, line)
        if key == "ha":
            out["crs_mode"] = value
        elif key == "ha-rebalance-on-start":
            out["rebalance_on_start"] = bool(value)
        elif key == "ha-auto-rebalance":
            out["auto_rebalance"] = bool(value)
        elif key == "ha-auto-rebalance-threshold":
            out["auto_rebalance_threshold"] = float(value)
        elif key == "ha-auto-rebalance-method":
            out["auto_rebalance_method"] = value
        elif key == "ha-auto-rebalance-hold-duration":
            out["auto_rebalance_hold_duration"] = int(value)
        else:
            out["auto_rebalance_margin"] = float(value)
    return out


def _from_mapping(data: Any, path: str, *, strict: bool, line_of: LineOf) -> DatacenterConfig:
    if not isinstance(data, dict):
        raise ConfigError("expected a JSON object", path)
    ha = data.get("ha") or {}
    crs = data.get("crs") or {}
    if not isinstance(ha, dict) or not isinstance(crs, dict):
        raise ConfigError("'ha' and 'crs' must be objects", path)
    policy = str(ha.get("shutdown_policy", DEFAULT_SHUTDOWN_POLICY))
    if strict:
        _prop("shutdown_policy").parse(policy, path)
    max_workers = data.get("max_workers")
    if max_workers is not None:
        if not isinstance(max_workers, int) or isinstance(max_workers, bool):
            raise ConfigError("max_workers must be a non-negative integer", path)
        _prop("max_workers").parse(max_workers, path)
    return DatacenterConfig(
        shutdown_policy=policy, max_workers=max_workers, **_crs_values(crs, path, line_of)
    )


def _json_line_of(text: str) -> LineOf:
    """The first line that holds ``"key"`` (JSON keeps no positions; good enough for a message)."""

    def line_of(key: str) -> int | None:
        needle = json.dumps(key)
        for lineno, line in enumerate(text.split("\n"), start=1):
            if needle in line:
                return lineno
        return None

    return line_of


def parse_datacenter_json(text: str, path: str = "datacenter.cfg") -> DatacenterConfig:
    """The simulator's JSON form: ``{"ha": {"shutdown_policy": ...}, "crs": {...}}``."""
    try:
        data = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as e:
        raise ConfigError(f"invalid JSON: {e.msg} (line {e.lineno})", path, e.lineno) from None
    return _from_mapping(data, path, strict=False, line_of=_json_line_of(text))


def parse_datacenter_cfg(text: str, path: str = "datacenter.cfg") -> DatacenterConfig:
    """The cluster's text form: ``ha: shutdown_policy=migrate``, ``crs: ha=basic``, ``max_workers: 4``."""
    data: dict[str, Any] = {}
    crs_line: int | None = None
    for lineno, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise ConfigError(f"expected 'key: value', got '{line}'", path, lineno)
        key, value = key.strip(), value.strip()
        schema.check_text(key, value, path, lineno)
        if key in ("ha", "crs"):
            sub: dict[str, str] = {}
            for item in value.split(","):
                k, eq, v = item.partition("=")
                if not eq:
                    raise ConfigError(f"{key}: expected 'name=value', got '{item}'", path, lineno)
                sub[k.strip()] = v.strip()
            data[key] = sub
            if key == "crs":
                crs_line = lineno
        elif key == "max_workers":
            if not value.isdigit():
                raise ConfigError(f"max_workers: expected a number, got '{value}'", path, lineno)
            data[key] = int(value)
        # other datacenter.cfg keys are not ours: ignored
    return _from_mapping(data, path, strict=True, line_of=lambda _key: crs_line)
