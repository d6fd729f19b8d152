"""The properties of a ``vm:`` resource (agents/vm.py's module doc lists them), parsed and checked."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from agents.proc import ProcConfigError

DEFAULT_MEMORY_MB: Final = 256
DEFAULT_CORES: Final = 1
HEALTH_CHOICES: Final = ("guest", "none")


class VmConfigError(ProcConfigError):
    """A vm property is malformed; the start is refused with this message."""


@dataclass(frozen=True, slots=True)
class VmSpec:
    """What one VM is made of (its resources.cfg properties, checked)."""

    memory_mb: int = DEFAULT_MEMORY_MB
    cores: int = DEFAULT_CORES
    kernel: str | None = None
    initrd: str | None = None
    append: str | None = None
    disk: str | None = None
    health: str = "guest"

    @property
    def default_guest(self) -> bool:
        return self.kernel is None and self.disk is None


def vm_uint(props: Mapping[str, str], key: str, low: int, high: int, default: int = 0) -> int:
    """An integer property in low..high (``default`` when absent); VmConfigError when not."""
    raw = (props.get(key) or "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise VmConfigError(f"property '{key}': '{raw}' is not an integer in {low}..{high}")
    return int(raw)


def _path(props: Mapping[str, str], key: str) -> str | None:
    raw = (props.get(key) or "").strip()
    if not raw:
        return None
    if not os.path.isabs(raw):
        raise VmConfigError(f"property '{key}': '{raw}' is not an absolute path")
    return raw


def parse_spec(props: Mapping[str, str]) -> VmSpec:
    """The VM of a resource's extra properties; VmConfigError when malformed."""
    kernel, initrd, disk = _path(props, "kernel"), _path(props, "initrd"), _path(props, "disk")
    append = (props.get("append") or "").strip() or None
    if kernel is None and (initrd is not None or append is not None):
        raise VmConfigError("properties 'initrd' and 'append' need 'kernel'")
    health = (props.get("health") or "").strip() or ("guest" if kernel is None and disk is None else "none")
    if health not in HEALTH_CHOICES:
        raise VmConfigError(f"property 'health': '{health}' is not one of {', '.join(HEALTH_CHOICES)}")
    return VmSpec(
        memory_mb=vm_uint(props, "memory", 16, 1 << 20, DEFAULT_MEMORY_MB),
        cores=vm_uint(props, "cores", 1, 256, DEFAULT_CORES),
        kernel=kernel,
        initrd=initrd,
        append=append,
        disk=disk,
        health=health,
    )


def static_caps(props: Mapping[str, str]) -> tuple[float, float]:
    """(CPUs, MiB) a VM weighs for the static scheduler: its ``cores`` and ``memory`` (the
    defaults when unset), as the reference derives a guest's stats from its config
    (BEHAVIOUR.md, the static scheduler). A malformed value counts as its default: the start
    refuses it, and a guest nobody can start takes no more than one that boots."""
    memory = _vm_uint_or(props, "memory", 16, 1 << 20, DEFAULT_MEMORY_MB)
    cores = _vm_uint_or(props, "cores", 1, 256, DEFAULT_CORES)
    return float(cores), float(memory)


def _vm_uint_or(props: Mapping[str, str], key: str, low: int, high: int, default: int) -> int:
    """:func:`vm_uint`, ``default`` when malformed."""
    try:
        return vm_uint(props, key, low, high, default)
    except VmConfigError:
        return default


def check_files(spec: VmSpec) -> None:
    """VmConfigError unless the spec's kernel, initrd and disk are readable files here."""
    for key in ("kernel", "initrd", "disk"):
        path = getattr(spec, key)
        if path is not None and not (os.path.isfile(path) and os.access(path, os.R_OK)):
            raise VmConfigError(f"property '{key}': no readable file '{path}' (on this node)")
