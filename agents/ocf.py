"""The ``ocf`` resource type: runs OCF resource agents (Debian package ``resource-agents``).

resources.cfg properties:

``agent``            ``provider:type`` (``heartbeat:Dummy``; an ``ocf:`` prefix is allowed)
``params``           ``key=value key2='with space'`` -> ``OCF_RESKEY_key=value``
``monitor_timeout``  seconds for the monitor action (default 20)

The agent runs as ``<resource.d>/<provider>/<type> <action>`` with the OCF
environment (``OCF_ROOT``, ``OCF_RESOURCE_INSTANCE``, ``OCF_RESOURCE_TYPE``,
``OCF_RESOURCE_PROVIDER``, ``OCF_RA_VERSION_*``, ``OCF_RESKEY_*``,
``OCF_RESKEY_CRM_meta_timeout`` in ms) and ``HA_RSCTMP`` set to a per-node
folder, so several nodes on one host keep separate agent state. Each action
runs in its own process group and is SIGKILLed (whole group) after its
timeout; a timeout counts as a failure. The environment is built from scratch (PATH,
LANG, the OCF variables, and our own ``PYHA_*`` variables), not inherited.

Every action runs inside the service's cgroup ``<cgroup_base>/<node>/ocf:<name>``
(a child of the node's cgroup; proc names cannot contain ``:``): whatever the
agent starts (a daemon, a helper) stays there, so fencing the node (one
``cgroup.kill`` of the node's cgroup) reaches it. SAFETY: when the cgroup
cannot be joined the action is not run (it fails), so nothing the agent starts
can escape a fence. ``HA_VARRUN`` is per node as well (agents keep pid files
there), so several nodes on one host do not see each other's daemons.

Monitor exit codes map to three states (:class:`OcfStatus`): 0 and 8 running,
7 not running, 5 (not installed here) not running, anything else or a
timeout *failed*. Properties we cannot even turn into an agent call
(malformed ``agent``/``params``) mean not running, with an error logged.
``check_running`` is True for running AND for failed.
SAFETY: only a cleanly stopped resource counts as stopped, so a stop is never
skipped for a resource in an unknown state; it may still hold its data or
address. A start that fails is followed by a stop, so a failed start leaves
the resource stopped and is reported as "unable to start".
"""

from __future__ import annotations

import os
import re
import tempfile
from enum import IntEnum, StrEnum
from pathlib import Path
from typing import Final, Literal

from agents import procutil
from ha.config.resources import ResourceConfig
from ha.env import Env

DEFAULT_TIMEOUT: Final = 20.0
_AGENT_RE = re.compile(r"^(?:ocf:)?([A-Za-z0-9_.\-]+):([A-Za-z0-9_.\-]+)$")


class OcfRc(IntEnum):
    """OCF exit codes (resource-agents' ocf-returncodes)."""

    SUCCESS = 0
    ERR_GENERIC = 1
    ERR_ARGS = 2
    ERR_UNIMPLEMENTED = 3
    ERR_PERM = 4
    ERR_INSTALLED = 5
    ERR_CONFIGURED = 6
    NOT_RUNNING = 7
    RUNNING_MASTER = 8
    FAILED_MASTER = 9


class OcfStatus(StrEnum):
    RUNNING = "running"
    NOT_RUNNING = "not running"
    FAILED = "failed"


def rc_name(rc: int | None) -> str:
    if rc is None:
        return "timeout"
    try:
        return f"OCF_{OcfRc(rc).name}"
    except ValueError:
        return f"exit code {rc}"


def monitor_status(rc: int | None) -> OcfStatus:
    """Monitor (probe) exit code -> state."""
    if rc in (OcfRc.SUCCESS, OcfRc.RUNNING_MASTER):
        return OcfStatus.RUNNING
    # ERR_INSTALLED on a probe: the software is missing here, so it cannot run here.
    if rc in (OcfRc.NOT_RUNNING, OcfRc.ERR_INSTALLED):
        return OcfStatus.NOT_RUNNING
    return OcfStatus.FAILED


class OcfConfigError(ValueError):
    """The agent or params property is malformed."""


DEFAULT_OCF_ROOT = Path("/usr/lib/ocf")  # Debian's resource-agents


def parse_agent(value: str | None) -> tuple[str, str]:
    m = _AGENT_RE.match((value or "").strip())
    if not m:
        raise OcfConfigError(f"property 'agent': '{value}' is not provider:type (e.g. heartbeat:Dummy)")
    return m.group(1), m.group(2)


def parse_params(value: str | None) -> dict[str, str]:
    try:
        return procutil.parse_assignments(value, "params", "key=value")
    except ValueError as e:
        raise OcfConfigError(str(e)) from None


class OcfPlugin:
    """:class:`ha.env.ResourcePlugin` for ``ocf:<name>`` services."""

    type_name = "ocf"

    def __init__(
        self,
        state_dir: str | Path,
        *,
        ocf_root: str | Path = DEFAULT_OCF_ROOT,
        agent_dirs: list[str | Path] | None = None,
        start_timeout: float = DEFAULT_TIMEOUT,
        stop_timeout: float = DEFAULT_TIMEOUT,
        monitor_timeout: float = DEFAULT_TIMEOUT,
        cgroup_base: str | Path | Literal["auto"] | None = "auto",
    ) -> None:
        """``agent_dirs``: where ``<provider>/<type>`` is looked up (default ``<ocf_root>/resource.d``).

        ``cgroup_base``: "auto" = ``<cgroup2 mount>/pyha``; None = no cgroups (tests only).
        """
        self.state_dir = Path(state_dir).absolute()
        self.cgroup_base = procutil.resolve_cgroup_base(cgroup_base)
        self.ocf_root = Path(ocf_root)
        self.agent_dirs = [Path(d) for d in agent_dirs] if agent_dirs else [self.ocf_root / "resource.d"]
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.monitor_timeout = monitor_timeout

    def agent_path(self, provider: str, rtype: str) -> Path | None:
        for d in self.agent_dirs:
            p = d / provider / rtype
            if p.is_file() and os.access(p, os.X_OK):
                return p
        return None

    def rsctmp(self, node: str) -> Path:
        return self.state_dir / node / "ocf"

    def cgroup_path(self, node: str, name: str) -> Path | None:
        return None if self.cgroup_base is None else self.cgroup_base / node / f"ocf:{name}"

    def _argv(self, node: str, name: str, path: Path, action: str) -> list[str]:
        """The action's command line: joins the service's cgroup first, then execs the agent."""
        cg = self.cgroup_path(node, name)
        if cg is None:
            return [str(path), action]
        cg.mkdir(parents=True, exist_ok=True)
        # SAFETY: "&&": when the cgroup cannot be joined the agent does not run at all
        join = 'echo 0 > "$0" && exec "$@"'
        return ["/bin/sh", "-c", join, str(cg / "cgroup.procs"), str(path), action]

    def run_action(
        self, env: Env, sid: str, conf: ResourceConfig, action: str, timeout: float
    ) -> tuple[int | None, str]:
        """Run one action; (exit code or None on timeout, last output line).

        A missing agent answers ERR_INSTALLED; malformed properties raise
        :class:`OcfConfigError` (the agent cannot even be invoked).
        """
        provider, rtype = parse_agent(conf.extra.get("agent"))
        params = parse_params(conf.extra.get("params"))
        path = self.agent_path(provider, rtype)
        if path is None:
            where = ", ".join(str(d) for d in self.agent_dirs)
            return OcfRc.ERR_INSTALLED, f"agent {provider}:{rtype} not found in {where}"
        node = env.nodename()
        tmp = self.rsctmp(node)
        (tmp / "run").mkdir(parents=True, exist_ok=True)
        aenv = procutil.service_env(env, sid, node, {})  # PATH, HOME, PYHA_*, HA_FENCING_TOKEN
        aenv |= {
            "LANG": "C",
            "OCF_ROOT": str(self.ocf_root),
            "OCF_FUNCTIONS_DIR": str(self.ocf_root / "lib" / "heartbeat"),
            "OCF_RA_VERSION_MAJOR": "1",
            "OCF_RA_VERSION_MINOR": "0",
            "OCF_RESOURCE_INSTANCE": conf.name,
            "OCF_RESOURCE_TYPE": rtype,
            "OCF_RESOURCE_PROVIDER": provider,
            "OCF_RESKEY_CRM_meta_timeout": str(int(timeout * 1000)),
            "HA_RSCTMP": str(tmp),
            "HA_VARRUN": str(tmp / "run"),
            "HA_LOGFACILITY": "none",
            "HA_LOGFILE": "/dev/null",
            "HA_DEBUGLOG": "/dev/null",
        }
        if action == "monitor":
            aenv["OCF_RESKEY_CRM_meta_interval"] = "0"  # a probe: one-shot status query
        aenv.update({f"OCF_RESKEY_{k}": v for k, v in params.items()})
        with tempfile.TemporaryFile(dir=tmp) as out:
            argv = self._argv(node, conf.name, path, action)
            rc = procutil.run_bounded(argv, timeout, env=aenv, cwd="/", output=out)
            out.seek(0)
            text = out.read()[-2000:].decode(errors="replace").strip()
        last = text.splitlines()[-1] if text else ""
        return rc, last

    def _timeout(self, conf: ResourceConfig, default: float) -> float:
        raw = conf.extra.get("monitor_timeout")
        if raw:
            try:
                v = float(raw)
                if v > 0:
                    return v
            except ValueError:
                pass
        return default

    def _action(
        self, env: Env, sid: str, conf: ResourceConfig, action: str, timeout: float
    ) -> tuple[int | None, str]:
        try:
            return self.run_action(env, sid, conf, action, timeout)
        except OcfConfigError as e:
            return OcfRc.ERR_CONFIGURED, str(e)

    def monitor(self, env: Env, sid: str, conf: ResourceConfig) -> OcfStatus:
        try:
            rc, msg = self.run_action(env, sid, conf, "monitor", self._timeout(conf, self.monitor_timeout))
        except OcfConfigError as e:
            # We could never have invoked this agent, so it is not running through us.
            env.log("err", f"service {sid}: {e}")
            return OcfStatus.NOT_RUNNING
        status = monitor_status(rc)
        if status is OcfStatus.FAILED:
            env.log("err", f"service {sid}: monitor failed ({rc_name(rc)}){': ' + msg if msg else ''}")
        return status

    # -- the plugin protocol ---------------------------------------------------------------------

    def check_running(self, env: Env, sid: str, conf: ResourceConfig) -> bool:
        return self.monitor(env, sid, conf) is not OcfStatus.NOT_RUNNING

    def start(self, env: Env, sid: str, conf: ResourceConfig) -> None:
        rc, msg = self._action(env, sid, conf, "start", self.start_timeout)
        if rc == OcfRc.SUCCESS:
            return
        env.log("err", f"service {sid}: start failed ({rc_name(rc)}){': ' + msg if msg else ''}")
        # Leave nothing half-started behind (Pacemaker recovers a failed start with a stop).
        self._stop(env, sid, conf, self.stop_timeout)

    def _stop(self, env: Env, sid: str, conf: ResourceConfig, timeout: float) -> None:
        rc, msg = self._action(env, sid, conf, "stop", timeout)
        if rc != OcfRc.SUCCESS:
            env.log("err", f"service {sid}: stop failed ({rc_name(rc)}){': ' + msg if msg else ''}")

    def shutdown(self, env: Env, sid: str, conf: ResourceConfig, timeout: int | None) -> None:
        # OCF has no forced stop: timeout 0 (the VM's "hard stop") uses the normal stop budget.
        budget = float(timeout) if timeout else self.stop_timeout
        self._stop(env, sid, conf, budget)

    def migrate(self, env: Env, sid: str, conf: ResourceConfig, target: str, online: bool) -> bool:
        """Relocate: stop here; the caller moves the location, the target starts it."""
        if online:
            env.log("info", f"service {sid}: OCF resources are relocated, not migrated live")
        if self.check_running(env, sid, conf):
            env.log("info", f"stopping service {sid} (relocate to node '{target}')")
            self.shutdown(env, sid, conf, None)
        return not self.check_running(env, sid, conf)

    def remove_locks(self, env: Env, sid: str, locks: list[str]) -> str | None:
        return None
