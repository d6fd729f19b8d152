"""``ha-manager status --watch``: a live view of nodes, master, services and recent events.

The status is re-read over the API every ``interval`` seconds and at once
when an event arrives on the node's PUB socket (docs/API.md "Events"); the
last events are listed above the tables (a long services table is cropped at
the bottom of the screen, never the events). Ctrl-C (or ``--duration``) ends it.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from typing import Any

import zmq
from rich.console import Console, Group, RenderableType  # type: ignore[import-not-found, unused-ignore]
from rich.live import Live  # type: ignore[import-not-found, unused-ignore]
from rich.panel import Panel  # type: ignore[import-not-found, unused-ignore]
from rich.table import Table  # type: ignore[import-not-found, unused-ignore]
from rich.text import Text  # type: ignore[import-not-found, unused-ignore]

from cli.api_client import ApiClient, ApiError, decode_event, format_event

_STATE_STYLE = {
    "started": "green", "online": "green", "active": "green", "stopped": "dim", "disabled": "dim",
    "fence": "bold red", "error": "bold red", "recovery": "red", "unknown": "yellow", "freeze": "cyan",
    "maintenance": "cyan", "migrate": "yellow", "relocate": "yellow", "starting": "yellow",
    "stopping": "yellow", "request_start": "yellow", "request_stop": "yellow",
}  # fmt: skip


def _styled(value: str | None) -> Text:
    v = value or "-"
    return Text(v, style=_STATE_STYLE.get(v.split(" ")[0], ""))


def render(
    cluster: str, via: str | None, status: dict[str, Any] | None, error: str | None, events: list[str]
) -> RenderableType:
    head = Text(f"cluster {cluster}", style="bold")
    head.append(f"  via {via or '-'}  ")
    head.append(time.strftime("%H:%M:%S"), style="dim")
    parts: list[RenderableType] = [head]
    if error:
        parts.append(Text(f"error: {error}", style="bold red"))
    if status is not None:
        lines = status.get("lines", [])
        for ln in lines:
            if ln["type"] in ("quorum", "master", "fencing"):
                style = "red" if "No quorum" in ln["status"] or "dead" in ln["status"] else ""
                parts.append(Text(ln["text"], style=style))
    # the events above the tables: a long services table is cropped at the bottom of the
    # screen, and the events must stay in view (they were cropped with it)
    parts.append(Panel("\n".join(events) or "(no events yet)", title="recent events", title_align="left"))
    if status is not None:
        lines = status.get("lines", [])
        ms = (status.get("full") or {}).get("manager_status", {})
        node_status = ms.get("node_status", {})
        nodes = Table(title="nodes", title_justify="left", expand=True)
        for col in ("node", "state", "lrm"):
            nodes.add_column(col)
        for ln in lines:
            if ln["type"] == "lrm":
                n = ln.get("node")
                lrm = ln["status"][len(n) + 1 :].strip("()") if n else ln["status"]
                master = " (master)" if n == status.get("master") else ""
                nodes.add_row(f"{n}{master}", _styled(node_status.get(n)), lrm)
        services = Table(title="services", title_justify="left", expand=True)
        for col in ("sid", "node", "state", "requested", "crm state"):
            services.add_column(col)
        for ln in lines:
            if ln["type"] == "service":
                services.add_row(
                    ln.get("sid"), ln.get("node") or "---", _styled(ln.get("state")),
                    ln.get("request_state") or "-", ln.get("crm_state") or "-",
                )  # fmt: skip
        parts += [nodes, services]
    return Group(*parts)


def run_watch(
    client: ApiClient, *, interval: float = 1.0, duration: float | None = None, console: Console | None = None
) -> int:
    console = console or Console()
    events: collections.deque[str] = collections.deque(maxlen=10)
    sub: zmq.Socket[bytes] | None = None
    status: dict[str, Any] | None = None
    error: str | None = None
    end = None if duration is None else time.monotonic() + duration

    def connect_events() -> zmq.Socket[bytes] | None:
        try:
            s, node = client.subscribe()
        except ApiError as e:
            events.append(f"(no event stream: {e.message})")
            return None
        # ZeroMQ's slow joiner: a subscription takes effect only once it reached the
        # publisher; the first message (a heartbeat comes every second) proves it did,
        # so nothing published after this line is missed
        if s.poll(3000):
            events.append(f"{time.strftime('%H:%M:%S')} subscribed to the events of {node}")
        else:
            events.append(f"{time.strftime('%H:%M:%S')} subscribed to {node}, no event seen yet")
        return s

    def refresh() -> None:
        nonlocal status, error
        try:
            status = client.call("status", {"verbose": True})
            error = None
        except ApiError as e:
            error = e.message

    sub = connect_events()
    refresh()
    last_beat = time.monotonic()
    tty = console.is_terminal
    printed: list[str] = []  # no terminal: the last block written, a new one only on a change
    printed_events: set[str] = set()

    def show_lines() -> None:
        """No terminal (a pipe, a log): plain lines, one block per change (issue #13)."""
        nonlocal printed
        block = [ln["text"] for ln in (status or {}).get("lines", [])]
        if error:
            block.insert(0, f"error: {error}")
        fresh = [e for e in events if e not in printed_events]
        if block == printed and not fresh:
            return
        head = f"-- {time.strftime('%H:%M:%S')} cluster {client.cluster.cluster} via {client.node or '-'}"
        for line in [head, *block, *(f"event {e}" for e in fresh)]:
            console.print(line, markup=False, highlight=False, soft_wrap=True)
        printed = block
        printed_events.update(fresh)

    def loop(update: Callable[[], None]) -> None:
        nonlocal sub, last_beat
        next_refresh = time.monotonic() + interval
        while end is None or time.monotonic() < end:
            now = time.monotonic()
            timeout = max(0.0, min(next_refresh, end or next_refresh) - now)
            changed = False
            if sub is not None and sub.poll(int(timeout * 1000)):
                while sub.poll(0):
                    ev = decode_event(sub.recv_multipart())
                    if ev is None:
                        continue
                    last_beat = time.monotonic()
                    if ev.get("type") != "heartbeat":
                        events.append(format_event(ev))
                        changed = True
            elif sub is None:
                time.sleep(timeout)
            if sub is not None and time.monotonic() - last_beat > 3.0:
                # the publishing node went silent: follow another node
                sub.close(linger=0)
                events.append(f"{time.strftime('%H:%M:%S')} event stream silent, reconnecting")
                sub = connect_events()
                last_beat = time.monotonic()
            if changed or time.monotonic() >= next_refresh:
                refresh()
                next_refresh = time.monotonic() + interval
                update()

    try:
        if tty:
            with Live(
                render(client.cluster.cluster, client.node, status, error, list(events)),
                console=console, refresh_per_second=8, transient=False,
            ) as live:  # fmt: skip
                loop(
                    lambda: live.update(
                        render(client.cluster.cluster, client.node, status, error, list(events))
                    )
                )
        else:
            show_lines()
            loop(show_lines)
    except KeyboardInterrupt:
        pass
    finally:
        if sub is not None:
            sub.close(linger=0)
    return 0
