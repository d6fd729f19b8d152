"""The ``ha-manager status`` view (BEHAVIOUR.md §8), as a pure function of the records.

The caller supplies the current time and a time formatter (the reference
prints C ``ctime`` style, ``Thu Jan  1 00:00:00 2026``), so this module stays
free of clocks.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ha.config.resources import ServiceConfig
from ha.records import LrmStatus, ManagerStatus
from ha.states import LrmMode, LrmState, NodeState, RequestedState, ServiceState
from ha.tools import count_active_services

FRESH_SECONDS = 30
DRIFT_SECONDS = 2


@dataclass(frozen=True, slots=True)
class StatusLine:
    """One line of the status: ``{type} {status}`` (the API returns these as objects)."""

    id: str
    type: str
    status: str
    node: str | None = None
    sid: str | None = None
    state: str | None = None
    crm_state: str | None = None
    request_state: str | None = None
    crs: str | None = None  # master line: the scheduler mode in use
    crs_configured: str | None = None  # master line: the mode datacenter.cfg configures

    def text(self) -> str:
        return f"{self.type} {self.status}"

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in {
            "id": self.id, "type": self.type, "status": self.status, "node": self.node, "sid": self.sid,
            "state": self.state, "crm_state": self.crm_state, "request_state": self.request_state,
            "crs": self.crs, "crs_configured": self.crs_configured,
        }.items() if v is not None}  # fmt: skip


def _freshness(now: float, ts: float | None) -> str:
    if ts is None:
        return "old timestamp - dead?"
    diff = now - ts
    if diff > FRESH_SECONDS:
        return "old timestamp - dead?"
    if diff < -DRIFT_SECONDS:
        return "detected time drift!"
    return "active"


def crs_in_use(ms: ManagerStatus) -> tuple[str, str]:
    """(mode used, mode configured) in the master's last round; ``basic`` when it recorded none."""
    crs = ms.crs or {}
    return crs.get("mode", "basic"), crs.get("configured", "basic")


def crs_suffix(ms: ManagerStatus, configured: str | None) -> str:
    """The master line's CRS part: the mode the master's last round placed with (§8 rule 2, ours).

    The reference prints `` - {mode} load CRS`` for the configured mode when it
    is not ``basic``. Ours names the mode in use, and says why when that is not
    the configured one: the master fell back to ``basic`` (§5.10: its stats were
    missing; ``instead of dynamic: <why>``), or it has not read the new mode yet
    (``configured static: not applied yet``). Same text as the reference's when
    the two agree.
    """
    used, master_configured = crs_in_use(ms)
    text = f" - {used} load CRS" if used != "basic" else ""
    if configured is not None and configured != master_configured:
        return f" - {used} load CRS, configured {configured}: not applied yet"
    if used != master_configured:
        why = (ms.crs or {}).get("error")
        return f" - {used} load CRS instead of {master_configured}" + (f": {why}" if why else "")
    return text


def service_verbose_state(sid: str, ms: ManagerStatus, conf: ServiceConfig) -> tuple[str | None, str]:
    """(node, verbose state) of a service, per §8 rule 5."""
    cd = conf.get(sid)
    sd = ms.service_status.get(sid)
    node = sd.node if sd is not None and sd.node else (cd.node if cd is not None else None)
    if cd is None:
        return node, "deleting"
    req = cd.state
    disarm = ms.disarm or {}
    if disarm.get("mode") == "ignore" and sd is not None:
        return node, "ignore"
    if req == RequestedState.IGNORED:
        return node, "ignored"
    if not node:
        return node, "not found"
    if sd is None:
        return node, "queued"
    state = sd.state
    if state == ServiceState.STOPPED:
        if req == RequestedState.STARTED:
            return node, "starting"
        if req == RequestedState.DISABLED:
            return node, "disabled"
    if state == ServiceState.STARTED:
        if req in (RequestedState.STOPPED, RequestedState.DISABLED):
            return node, "stopping"
        if not sd.running:
            return node, "starting"
    if state == ServiceState.ERROR and req == RequestedState.DISABLED:
        return node, "clearing error flag"
    return node, state


def status_lines(
    *,
    node: str,
    quorate: bool,
    ms: ManagerStatus,
    lrm: Mapping[str, LrmStatus | None],
    conf: ServiceConfig,
    now: float,
    fmt_time: Callable[[float], str],
    crs_mode: str | None = "basic",
    config_errors: Mapping[str, tuple[float | None, list[str]]] | None = None,
    node_states: bool = False,
) -> list[StatusLine]:
    """The status lines in the reference's order (§8).

    ``config_errors`` (file -> (since, errors)) adds one ``config`` line per
    config file with errors after the quorum line (ours, issue #10: the
    reference has no such line; without errors the output is the reference's).

    ``node_states`` (ours, issue #13; the live API sets it): while an active
    master counts a node as not online (``unknown``, ``fence``, ``gone``), its
    LRM line says so at once (``node2 (node unknown - dead?, ...)``) instead of
    showing its last status as current until the reference's 30 s mark it old.

    ``crs_mode`` is the scheduler mode datacenter.cfg configures now (None: the
    file does not read). The master line names the mode the master's last round
    used (``manager_status.crs``, ours, issue #14), which may differ: see
    :func:`crs_suffix`.
    """
    out: list[StatusLine] = []
    if quorate:
        out.append(StatusLine("quorum", "quorum", "OK", node=node))
    else:
        out.append(StatusLine("quorum", "quorum", f"No quorum on node '{node}'!", node=node))
    for name, (since, errors) in sorted((config_errors or {}).items()):
        if not errors:
            continue
        when = f" since {fmt_time(since)}" if since is not None else ""
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        text = f"{name} invalid{when}: {errors[0]}{more}; the last good configuration stays in force"
        out.append(StatusLine(f"config:{name}", "config", text))

    master_active = False
    disarm = ms.disarm
    if ms.master_node is not None:
        st = _freshness(now, ms.timestamp)
        master_active = st == "active"
        if quorate and not master_active and not len(conf):
            st = "idle"
        when = fmt_time(ms.timestamp) if ms.timestamp is not None else "-"
        extra = ""
        if disarm is not None:
            extra += f" - {disarm.get('state')}, resource mode: {disarm.get('mode')}"
        extra += crs_suffix(ms, crs_mode)
        used, _ = crs_in_use(ms)
        text = f"{ms.master_node} ({st}, {when}){extra}"
        out.append(
            StatusLine("master", "master", text, node=ms.master_node, crs=used, crs_configured=crs_mode)
        )

    if disarm is not None:
        released = "released" if disarm.get("state") == "disarmed" else "active"
        text = f"{disarm.get('state')}, resource mode: {disarm.get('mode')} (CRM watchdog {released})"
    elif master_active:
        text = "armed (CRM watchdog active)"
    else:
        text = "standby (CRM watchdog standby)"
    out.append(StatusLine("fencing", "fencing", text))

    nodes = sorted(set(ms.node_status) | set(lrm))
    for n in nodes:
        ls = lrm.get(n)
        if ls is None or ls.state is None:
            out.append(StatusLine(f"lrm:{n}", "lrm", f"{n} (unable to read lrm status)", node=n))
            continue
        mode = ls.mode or LrmMode.ACTIVE
        fresh = _freshness(now, ls.timestamp)
        node_state = ms.node_status.get(n)
        if (
            node_states
            and master_active
            and fresh == "active"
            and node_state not in (None, NodeState.ONLINE, NodeState.MAINTENANCE)
        ):
            fresh = f"node {node_state} - dead?"
        if fresh == "active":
            if mode != LrmMode.ACTIVE:
                st = f"{mode} mode"
            elif (
                ls.state == LrmState.WAIT_FOR_AGENT_LOCK and count_active_services(ms.service_status, n) == 0
            ):
                st = "idle"
            else:
                st = ls.state
        elif mode in (LrmMode.MAINTENANCE, LrmMode.DISARM):
            st = f"{mode} mode"
        else:
            st = fresh
        if mode == LrmMode.DISARM:
            wd = "watchdog released"
        elif fresh == "active" and ls.state in (LrmState.ACTIVE, LrmState.MAINTENANCE):
            wd = "watchdog active"
        else:
            wd = "watchdog standby"
        when = fmt_time(ls.timestamp) if ls.timestamp is not None else "-"
        out.append(StatusLine(f"lrm:{n}", "lrm", f"{n} ({st}, {wd}, {when})", node=n, state=ls.state))

    sids = sorted(ms.service_status) + sorted(s for s in conf if s not in ms.service_status)
    for sid in sids:
        snode, verbose = service_verbose_state(sid, ms, conf)
        sd = ms.service_status.get(sid)
        cd = conf.get(sid)
        out.append(
            StatusLine(
                f"service:{sid}",
                "service",
                f"{sid} ({snode or '---'}, {verbose})",
                node=snode,
                sid=sid,
                state=verbose,
                crm_state=sd.state if sd is not None else None,
                request_state=cd.state if cd is not None else None,
            )
        )
    return out


def perl_pretty_json(value: Any, indent: int = 0) -> str:
    """JSON like Perl's ``JSON->pretty->canonical``: 3-space indent, ``"key" : value``, sorted keys."""
    pad = " " * (indent + 3)
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [
            f"{pad}{json.dumps(str(k))} : {perl_pretty_json(value[k], indent + 3)}" for k in sorted(value)
        ]
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    if isinstance(value, list | tuple):
        if not value:
            return "[]"
        items = [f"{pad}{perl_pretty_json(v, indent + 3)}" for v in value]
        return "[\n" + ",\n".join(items) + "\n" + " " * indent + "]"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return json.dumps(value)
