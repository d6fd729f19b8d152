"""Real resource agents for the live runtime (see docs/AGENTS.md).

``make_registry(state_dir)`` returns the plugins by resource type, ready for
an Env's ``resource_plugin(rtype)``::

    plugins = make_registry("/var/lib/pyha")
    plugin = plugins.get("proc")
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from agents.ct import CtPlugin
from agents.ocf import DEFAULT_OCF_ROOT, OcfPlugin
from agents.proc import ProcPlugin
from agents.vm import VmPlugin
from ha.env import ResourcePlugin

AGENT_TYPES: tuple[str, ...] = ("proc", "ocf", "vm", "ct")


def make_registry(
    state_dir: str | Path,
    *,
    cgroup_base: str | Path | Literal["auto"] | None = "auto",
    ocf_root: str | Path = DEFAULT_OCF_ROOT,
) -> dict[str, ResourcePlugin]:
    """Type name -> plugin instance for the live runtime; state under ``state_dir``."""
    return {
        "proc": ProcPlugin(state_dir, cgroup_base=cgroup_base),
        "ocf": OcfPlugin(state_dir, ocf_root=ocf_root, cgroup_base=cgroup_base),
        "vm": VmPlugin(state_dir, cgroup_base=cgroup_base),
        "ct": CtPlugin(state_dir, cgroup_base=cgroup_base),
    }


__all__ = ["AGENT_TYPES", "CtPlugin", "OcfPlugin", "ProcPlugin", "VmPlugin", "make_registry"]
