"""Executing one resource command on the local node (BEHAVIOUR.md §3.3.3).

The checks and log lines are the reference's; the actual work is done by the
resource type's plugin (simulated in ``sim/``, real processes in ``agents/``).
"""

from __future__ import annotations

from typing import Any

from ha.config.resources import ResourceConfig
from ha.constants import ExitCode
from ha.env import Env
from ha.errors import HaError


class AgentDied(HaError):
    """The command could not run at all (the reference's ``die`` in a worker)."""


def exec_resource_agent(
    env: Env, sid: str, conf: ResourceConfig | None, cmd: str, params: dict[str, Any]
) -> int:
    """Run ``cmd`` for ``sid``; returns an :class:`ExitCode` value."""
    node = env.nodename()
    rtype = sid.split(":", 1)[0]
    plugin = env.resource_plugin(rtype)
    if plugin is None:
        env.log("err", f"service type '{rtype}' not implemented")
        return ExitCode.EUNKNOWN_SERVICE_TYPE
    if conf is None:
        env.log("err", f"missing resource configuration for '{sid}'")
        return ExitCode.EUNKNOWN_SERVICE
    if cmd == "error":
        env.log(
            "err",
            f"service {sid} is in an error state and needs manual intervention. "
            "Look up 'ERROR RECOVERY' in the documentation.",
        )
        return ExitCode.SUCCESS
    if conf.node != node:
        env.log("err", f"service '{sid}' not on this node")
        return ExitCode.EWRONG_NODE

    running = plugin.check_running(env, sid, conf)
    if cmd == "started":
        if running:
            return ExitCode.SUCCESS
        env.log("info", f"starting service {sid}")
        plugin.start(env, sid, conf)
        if plugin.check_running(env, sid, conf):
            env.log("info", f"service status {sid} started")
            return ExitCode.SUCCESS
        env.log("warning", f"unable to start service {sid}")
        return ExitCode.ERROR

    if cmd in ("request_stop", "stopped"):
        if not running:
            return ExitCode.SUCCESS
        timeout = params.get("timeout")
        if timeout is not None:
            env.log("info", f"stopping service {sid} (timeout={timeout})")
        else:
            env.log("info", f"stopping service {sid}")
        plugin.shutdown(env, sid, conf, timeout)
        if not plugin.check_running(env, sid, conf):
            env.log("info", f"service status {sid} stopped")
            return ExitCode.SUCCESS
        env.log("info", f"unable to stop service {sid} (still running)")
        return ExitCode.ERROR

    if cmd in ("migrate", "relocate", "request_start_balance"):
        target = params.get("target")
        if target is None:
            raise AgentDied(f"{cmd} '{sid}' failed - missing target")
        if conf.node == target:
            return ExitCode.SUCCESS
        if cmd == "request_start_balance" and running:
            env.log("info", f"ignoring rebalance-on-start for service {sid} - already running")
            return ExitCode.IGNORED
        online = cmd == "migrate"
        if not plugin.migrate(env, sid, conf, str(target), online):
            env.log("err", f"service {sid} not moved (migration error)")
            return ExitCode.ERROR
        return ExitCode.SUCCESS

    env.log("err", f"implement me (cmd '{cmd}')")
    return ExitCode.EUNKNOWN_COMMAND
