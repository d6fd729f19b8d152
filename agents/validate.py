"""Agent-specific checks of a resource's properties, run by ``ha-manager add/set`` (issue #10).

The agents themselves refuse a malformed property only when the service
starts, and then the reason ends up in a node log while the service goes to
``error``. These are the same checks (the agents' own parsers), run before
anything is written, so the user gets the agent's message at once.

``cwd``, an OCF ``agent``, a VM's ``kernel``/``initrd``/``disk`` and a
container's ``rootfs`` are looked up on the node that takes the request:
every node of a cluster is expected to have the same directories, agents and
images (as the reference expects the same storage on every node).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from agents.ct import CtConfigError, check_rootfs, parse_spec
from agents.ocf import DEFAULT_OCF_ROOT, OcfConfigError, parse_agent, parse_params
from agents.proc import ProcConfigError, parse_env, parse_seconds, parse_tcp
from agents.vm import VmConfigError, VmSpec, check_files, vm_uint


def _proc(props: Mapping[str, str]) -> None:
    if "cmd" in props and not props["cmd"].strip():
        raise ProcConfigError("property 'cmd' is empty")
    if props.get("check_tcp"):
        parse_tcp(props["check_tcp"])
    for key in ("stop_timeout",):
        if key in props:
            parse_seconds(props[key], key)
    if "env" in props:
        parse_env(props["env"])
    cwd = props.get("cwd")
    if cwd:
        if not os.path.isabs(cwd):
            raise ProcConfigError(f"property 'cwd': '{cwd}' is not an absolute path")
        if not Path(cwd).is_dir():
            raise ProcConfigError(f"property 'cwd': no directory '{cwd}' (on this node)")


def _ocf(props: Mapping[str, str], ocf_root: Path) -> None:
    if "agent" in props:
        provider, rtype = parse_agent(props["agent"])
        path = ocf_root / "resource.d" / provider / rtype
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise OcfConfigError(f"property 'agent': no OCF agent {provider}:{rtype} (looked for {path})")
    if "params" in props:
        parse_params(props["params"])
    if "monitor_timeout" in props:
        try:
            parse_seconds(props["monitor_timeout"], "monitor_timeout")
        except ProcConfigError as e:
            raise OcfConfigError(str(e)) from None


def _vm(props: Mapping[str, str]) -> None:
    """Each property on its own (a ``set`` names only some; the agent checks the whole at start)."""
    files = {k: props[k].strip() for k in ("kernel", "initrd", "disk") if props.get(k, "").strip()}
    for key, path in files.items():
        if not os.path.isabs(path):
            raise VmConfigError(f"property '{key}': '{path}' is not an absolute path")
    check_files(VmSpec(kernel=files.get("kernel"), initrd=files.get("initrd"), disk=files.get("disk")))
    for key, (low, high) in (("memory", (16, 1 << 20)), ("cores", (1, 256))):
        if key in props:
            vm_uint(props, key, low, high)
    if "stop_timeout" in props:
        parse_seconds(props["stop_timeout"], "stop_timeout")


def _ct(props: Mapping[str, str]) -> None:
    """The container's properties (``parse_spec``'s checks) and its ``rootfs`` on this node."""
    spec = parse_spec(props)
    if spec.rootfs is not None:
        check_rootfs(spec.rootfs)
    if "init" in props and not props["init"].strip():
        raise CtConfigError("property 'init' is empty")
    if "stop_timeout" in props:
        parse_seconds(props["stop_timeout"], "stop_timeout")


def check_agent_properties(rtype: str, props: Mapping[str, str], *, ocf_root: Path | None = None) -> None:
    """Raise ``ValueError`` (the agent's message) when the agent of ``rtype`` would refuse ``props``.

    ``props`` are the properties being set (all of them for an add); types
    without an agent here (``fa``) pass.
    """
    if rtype == "proc":
        _proc(props)
    elif rtype == "ocf":
        _ocf(props, ocf_root or DEFAULT_OCF_ROOT)
    elif rtype == "vm":
        _vm(props)
    elif rtype == "ct":
        _ct(props)
