"""The ``ha``/``crs``/``max_workers`` keys of datacenter.cfg (BEHAVIOUR.md §7.4, §9.2).

The properties and their checks are ``schema.DATACENTER`` (docs/CONFIG.md).
"""

from __future__ import annotations

import json
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
    max_workers: int | None = None


def _prop(name: str) -> schema.Prop:
    prop = schema.DATACENTER.prop(name)
    assert prop is not None
    return prop


def _from_mapping(data: Any, path: str, *, strict: bool) -> DatacenterConfig:
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
        shutdown_policy=policy,
        crs_mode=str(crs.get("ha") or "basic"),
        rebalance_on_start=bool(crs.get("ha-rebalance-on-start")),
        max_workers=max_workers,
    )


def parse_datacenter_json(text: str, path: str = "datacenter.cfg") -> DatacenterConfig:
    """The simulator's JSON form: ``{"ha": {"shutdown_policy": ...}, "crs": {...}}``."""
    try:
        data = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as e:
        raise ConfigError(f"invalid JSON: {e.msg} (line {e.lineno})", path, e.lineno) from None
    return _from_mapping(data, path, strict=False)


def parse_datacenter_cfg(text: str, path: str = "datacenter.cfg") -> DatacenterConfig:
    """The cluster's text form: ``ha: shutdown_policy=migrate``, ``crs: ha=basic``, ``max_workers: 4``."""
    data: dict[str, Any] = {}
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
        elif key == "max_workers":
            if not value.isdigit():
                raise ConfigError(f"max_workers: expected a number, got '{value}'", path, lineno)
            data[key] = int(value)
        # other datacenter.cfg keys are not ours: ignored
    crs = data.get("crs")
    if isinstance(crs, dict) and "ha-rebalance-on-start" in crs:
        crs["ha-rebalance-on-start"] = crs["ha-rebalance-on-start"] in ("1", "true", "yes")
    return _from_mapping(data, path, strict=True)
