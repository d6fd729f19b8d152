"""QMP and the guest's health port: the vm agent's drivers (agents/vm.py, vmsource.py,
vmincoming.py), live migration's included.

:func:`qmp` runs argument-less QMP commands, :func:`qmp_calls` any; :func:`ping_guest`
asks the default guest for its boot id and uptime (its virtio-serial health port).

Live migration of a ``vm:`` service (issue #12): the QMP driver of both ends.

A live migration has two QEMU processes of one guest, one per node:

* the TARGET node launches QEMU with the service's own command line plus
  ``-incoming defer -S`` (:data:`INCOMING_ARGS`), in its own service cgroup and
  state folder (a normal start in every other respect), and opens the
  migration port with QMP ``migrate-incoming tcp:<its bus host>:0``
  (:func:`listen`; QEMU picks the port, ``query-migrate`` tells it);
* the SOURCE node runs :func:`migrate`: QMP ``migrate-set-parameters``
  (``downtime-limit``, ``max-bandwidth``), ``migrate``, then ``query-migrate``
  at each of QEMU's MIGRATION events until ``completed``, ``failed`` or a
  timeout (then ``migrate_cancel``); after the hand-over it tells the source
  QEMU to ``quit`` in the same session. Its :class:`MigrationResult` carries QEMU's own total
  time and downtime.

SAFETY (never two running copies): ``-S`` keeps the target's guest paused
after the migration completed (QMP status ``inmigrate`` while it comes in,
``paused`` once complete); QEMU has paused the source (``postmigrate``)
before it completes. Only an explicit resume (QMP ``cont``), which the
source asks for after the service's location moved to the target, lets it
run: see :meth:`agents.vm.VmPlugin.migrate_live` for the whole order.

How nodes reach each other is not this module's business: the source gets a
:data:`Peer` (the live runtime's is a member-only API request ``vm_incoming``,
docs/API.md; the tests' calls a second plugin directly).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from qemu.qmp import EventListener, QMPClient, QMPError

# the target's QEMU waits for the stream, and its guest stays paused after it (see the module doc)
INCOMING_ARGS: Final = ("-incoming", "defer", "-S")
# QEMU stops the source when what is left to copy fits in this (its own default too)
DOWNTIME_LIMIT_MS: Final = 300
MAX_BANDWIDTH: Final = 10 << 30  # bytes/s: QEMU's default (32 MiB/s) would slow every migration
DEFAULT_MIGRATE_TIMEOUT: Final = 40.0  # below the node's 60 s command timeout
# an incoming QEMU not resumed by then is killed by its node (the source died or gave up)
INCOMING_DEADLINE: Final = DEFAULT_MIGRATE_TIMEOUT + 30.0
_INCOMING_POLL: Final = 0.002  # s: the target's look at an incoming migration still finishing
_FALLBACK_POLL: Final = 1.0  # s: query-migrate at least this often, should an event be missed

# qemu.qmp logs every refused connection at ERROR (each poll while QEMU starts); what matters is
# reported through env.log by the agent instead.
logging.getLogger("qemu.qmp").setLevel(logging.CRITICAL)
_DONE: Final = ("completed", "failed", "cancelled")


@dataclass(frozen=True, slots=True)
class GuestAnswer:
    """The default guest's answer to a health check."""

    boot_id: str
    uptime: float


# -- QMP and the health port ----------------------------------------------------------------------


async def _qmp_async(path: Path, commands: tuple[str, ...], timeout: float) -> list[object]:
    client = QMPClient("pyha-vm")
    try:
        await asyncio.wait_for(client.connect(str(path)), timeout)
        out = []
        for cmd in commands:
            out.append(await asyncio.wait_for(client.execute(cmd), timeout))
        return out
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.disconnect(), timeout)


def qmp(path: Path, *commands: str, timeout: float = 5.0) -> list[object]:
    """Run QMP ``commands`` (no arguments) one after the other; their return values.

    Raises OSError, QMPError or TimeoutError when QEMU does not answer (each step
    bounded by ``timeout``). Blocking: it runs its own event loop (agents run in
    worker threads without one).
    """
    return asyncio.run(_qmp_async(path, commands, timeout))


def ping_guest(path: Path, timeout: float = 3.0) -> GuestAnswer | None:
    """The default guest's answer on its health port (``ping NONCE`` -> ``pong NONCE BOOT_ID UPTIME``)."""
    nonce = secrets.token_hex(6)
    deadline = time.monotonic() + timeout
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(path))
            s.sendall(f"ping {nonce}\n".encode())
            buf = b""
            while True:
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    parts = line.decode(errors="replace").split()
                    # an answer meant for an earlier client that hung up comes first: skip it
                    if len(parts) == 4 and parts[0] == "pong" and parts[1] == nonce:
                        return GuestAnswer(parts[2], float(parts[3]))
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                s.settimeout(left)
                chunk = s.recv(4096)
                if not chunk:
                    return None
                buf += chunk
    except (OSError, ValueError):
        return None


# ``Peer(node, args, timeout)``: run ``vm_incoming`` with ``args`` on member ``node``; its result.
# Raises PeerError when the node refused or did not answer in time.
Peer = Callable[[str, Mapping[str, Any], float], Mapping[str, Any]]


class Phases:
    """Milliseconds between named marks: a live migration's breakdown (issue #12).

    The source's agent logs them (``live migration phases (ms): ...``, the target's
    with a ``target_`` prefix, from the ``listen`` reply); ``python -m bench
    vm-migrate`` reads that line, so the breakdown stays measurable."""

    def __init__(self) -> None:
        self.wall = time.time()  # when it began, comparable across the nodes of one host
        self._last = time.monotonic()
        self.ms: dict[str, float] = {}

    def mark(self, name: str) -> None:
        now = time.monotonic()
        self.ms[name] = self.ms.get(name, 0.0) + round((now - self._last) * 1000, 1)
        self._last = now

    def add(self, prefix: str, other: Mapping[str, Any]) -> None:
        for k, v in other.items():
            if isinstance(v, int | float):
                self.ms[f"{prefix}{k}"] = float(v)

    def span(self) -> list[float]:
        """``[began, now]`` in wall-clock seconds: what a target sends back with its marks."""
        return [self.wall, time.time()]

    def legs(self, name: str, sent: float, got: float, span: Any) -> None:
        """A request's way there (``<name>_to``) and back (``<name>_back``), in ms: from the wall
        clocks of the sender (``sent``, ``got``) and the other node's :meth:`span` (one host's clock
        in the benchmark; across hosts a clock offset moves time from one leg to the other)."""
        if (
            isinstance(span, list | tuple)
            and len(span) == 2
            and all(isinstance(t, float | int) for t in span)
        ):
            self.ms[f"{name}_to"] = round((float(span[0]) - sent) * 1000, 1)
            self.ms[f"{name}_back"] = round((got - float(span[1])) * 1000, 1)

    def text(self) -> str:
        return " ".join(f"{k}={v:.1f}" for k, v in self.ms.items())


class PeerError(Exception):
    """The other node refused a ``vm_incoming`` request or did not answer it."""


class MigrationError(Exception):
    """A QEMU of the migration did not do what was asked (QMP error, no answer, bad reply)."""


@dataclass(frozen=True, slots=True)
class MigrationResult:
    """The outcome of :func:`migrate`, with QEMU's own figures (``query-migrate``)."""

    status: str  # completed | failed | cancelled | timeout | error | refused (the target did not listen)
    total_ms: int | None = None
    downtime_ms: int | None = None
    setup_ms: int | None = None
    transferred: int | None = None  # bytes of RAM sent
    error: str | None = None
    quit_sent: bool = False  # the source QEMU was told to quit after the hand-over (see migrate)
    source_status: str | None = None  # the source's QMP status once completed (with a hand-over)

    @property
    def completed(self) -> bool:
        return self.status == "completed"


async def _session(path: Path, timeout: float) -> QMPClient:
    client = QMPClient("pyha-vm-migrate")
    await asyncio.wait_for(client.connect(str(path)), timeout)
    return client


async def _close(client: QMPClient) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(client.disconnect(), 2.0)


async def _listen(path: Path, host: str, timeout: float, phases: Phases | None) -> str:
    client = await _session(path, timeout)  # returns once QEMU's main loop greeted us
    if phases is not None:
        phases.mark("qmp")
    try:
        await asyncio.wait_for(client.execute("migrate-incoming", {"uri": f"tcp:{host}:0"}), timeout)
        info = await asyncio.wait_for(client.execute("query-migrate"), timeout)
        addrs = info.get("socket-address") if isinstance(info, dict) else None
        if not addrs or not isinstance(addrs, list) or "port" not in addrs[0]:
            raise MigrationError(f"QEMU did not say which port it listens on: {info!r}")
        port = int(addrs[0]["port"])
        if phases is not None:
            phases.mark("incoming")
        return f"tcp:{_uri_host(host)}:{port}"
    finally:
        await _close(client)


def _uri_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def listen(path: Path, host: str, timeout: float = 10.0, phases: Phases | None = None) -> str:
    """Target side: open the migration port of an ``-incoming defer`` QEMU on ``host``; its URI.

    Raises :class:`MigrationError` (also for OSError, QMPError and time-outs)."""
    try:
        return asyncio.run(_listen(path, host, timeout, phases))
    except (OSError, QMPError, TimeoutError, ValueError) as e:
        raise MigrationError(f"opening the migration port failed: {e!r}") from e


def _result(info: Mapping[str, Any], status: str | None = None, error: str | None = None) -> MigrationResult:
    ram = info.get("ram") if isinstance(info.get("ram"), dict) else {}
    assert isinstance(ram, dict)

    def num(v: object) -> int | None:
        return int(v) if isinstance(v, int | float) else None

    return MigrationResult(
        status=status or str(info.get("status")),
        total_ms=num(info.get("total-time")),
        downtime_ms=num(info.get("downtime")),
        setup_ms=num(info.get("setup-time")),
        transferred=num(ram.get("transferred")),
        error=error or (str(info["error-desc"]) if info.get("error-desc") else None),
    )


async def _wait_done(
    client: QMPClient, events: EventListener, deadline: float, step: float
) -> Mapping[str, Any]:
    """``query-migrate`` each time QEMU reports a MIGRATION event (and every second regardless)."""
    info: Mapping[str, Any] = {}
    while True:
        got = await asyncio.wait_for(client.execute("query-migrate"), step)
        info = got if isinstance(got, dict) else {}
        left = deadline - time.monotonic()
        if info.get("status") in _DONE or left <= 0:
            return info
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(events.get(), min(left, _FALLBACK_POLL))


class TargetRefused(Exception):
    """:func:`migrate`'s ``uri`` callable failed: the target did not listen (``__cause__`` says why)."""


async def _target_uri(uri: str | Callable[[], str]) -> str:
    if isinstance(uri, str):
        return uri
    try:
        return await asyncio.to_thread(uri)
    except Exception as e:
        raise TargetRefused(str(e)) from e


async def _migrate(
    path: Path,
    uri: str | Callable[[], str],
    timeout: float,
    downtime_ms: int,
    phases: Phases | None,
    handover: Callable[[MigrationResult], bool] | None,
    after_quit: Callable[[], None] | None = None,
) -> MigrationResult:
    # the target's listen (a QEMU start-up, tens of ms) runs while this session is set up
    target = asyncio.ensure_future(_target_uri(uri))
    try:
        client = await _session(path, min(timeout, 5.0))
    except BaseException:
        await asyncio.gather(target, return_exceptions=True)  # never leave the listen behind
        raise
    events = EventListener(("MIGRATION",))
    client.register_listener(events)
    try:
        step = min(timeout, 5.0)
        await asyncio.wait_for(
            client.execute(
                "migrate-set-capabilities", {"capabilities": [{"capability": "events", "state": True}]}
            ),
            step,
        )
        await asyncio.wait_for(
            client.execute(
                "migrate-set-parameters", {"downtime-limit": downtime_ms, "max-bandwidth": MAX_BANDWIDTH}
            ),
            step,
        )
        if phases is not None:
            phases.mark("setup")
        dest = await target
        if phases is not None and not isinstance(uri, str):
            phases.mark("listen")  # what the listen took beyond this session's set-up
        await asyncio.wait_for(client.execute("migrate", {"uri": dest}), step)
        info = await _wait_done(client, events, time.monotonic() + timeout, step)
        if info.get("status") not in _DONE:
            # out of time: cancel, and learn how it ended (it may still have completed meanwhile)
            with contextlib.suppress(QMPError):
                await asyncio.wait_for(client.execute("migrate_cancel"), step)
            info = await _wait_done(client, events, time.monotonic() + step, step)
            if info.get("status") != "completed":
                return _result(info, "timeout", f"not completed within {timeout:g}s")
        if phases is not None:
            phases.mark("transfer")
        res = _result(info)
        if res.completed:
            res = await _settled(client, step)
        if res.completed and handover is not None:
            return await _handover(client, res, handover, phases, after_quit)
        return res
    finally:
        if not target.done():
            await asyncio.gather(target, return_exceptions=True)
        with contextlib.suppress(Exception):
            client.remove_listener(events)
        await _close(client)


async def _settled(client: QMPClient, step: float) -> MigrationResult:
    """A completed migration once QEMU's main loop settled it: the source's status, QEMU's figures.

    QEMU says ``completed`` from its migration thread a moment (about a ms) before
    its main loop names the stopped guest ``postmigrate`` and sets ``total-time``
    and ``downtime`` (0 until then). Never raises: a status it cannot learn is
    None (the hand-over then refuses)."""
    status: str | None = None
    info: Mapping[str, Any] = {"status": "completed"}
    try:
        end = time.monotonic() + step
        while True:
            # SAFETY: the hand-over asks for the status (this copy must be stopped); this session is
            # QEMU's one QMP client, so nobody else could ask now
            got = await asyncio.wait_for(client.execute("query-status"), step)
            status = str(got.get("status")) if isinstance(got, dict) else None
            if status != "finish-migrate" or time.monotonic() > end:
                break
            await asyncio.sleep(0.001)
        got = await asyncio.wait_for(client.execute("query-migrate"), step)
        info = got if isinstance(got, dict) else info
    except (QMPError, TimeoutError, OSError, EOFError):
        pass
    return dataclasses.replace(_result(info, "completed"), source_status=status)


async def _handover(
    client: QMPClient,
    res: MigrationResult,
    handover: Callable[[MigrationResult], bool],
    phases: Phases | None,
    after_quit: Callable[[], None] | None,
) -> MigrationResult:
    """After ``completed``: ``handover(res)`` (a thread), then ``quit`` if it said so, then
    ``after_quit()`` (a thread) before this session closes.

    Never raises: the result of a completed migration must reach the caller, who
    may have committed it already."""
    # (in a thread: the commit may run an event loop of its own, as the store's clients may)
    if not await asyncio.to_thread(handover, res):
        return res
    # SAFETY: in the same session as the migration: this copy (stopped) never runs again (should the
    # quit go wrong, the caller kills the process when it has not exited within 5 s)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(client.execute("quit"), 2.0)
    if phases is not None:
        phases.mark("quit")
    if after_quit is not None:
        # the target's resume, before this session's close and event loop's end (1-3 ms on the
        # guest's pause); SAFETY: after the quit, as the caller's own resume would be
        with contextlib.suppress(Exception):
            await asyncio.to_thread(after_quit)
    return dataclasses.replace(res, quit_sent=True)


def migrate(
    path: Path,
    uri: str | Callable[[], str],
    timeout: float = DEFAULT_MIGRATE_TIMEOUT,
    downtime_ms: int = DOWNTIME_LIMIT_MS,
    phases: Phases | None = None,
    handover: Callable[[MigrationResult], bool] | None = None,
    after_quit: Callable[[], None] | None = None,
) -> MigrationResult:
    """Source side: migrate the QEMU behind QMP socket ``path`` to ``uri``; how it ended.

    Never raises for a QMP or socket problem: that is status ``error``. A
    migration that is not ``completed`` was cancelled (or failed) and the
    source QEMU still holds the guest. ``uri`` may be a callable (the target's
    ``listen``), run in a thread while the QMP session is set up; when it
    raises, the status is ``refused`` and nothing was migrated. QEMU reports the migration's progress
    as MIGRATION events (capability ``events``): each one is followed by a
    ``query-migrate``, so the end is seen at once, without polling.

    ``handover(result)``, if given, runs once the migration completed, while
    the QMP session is still open (the source's commit); when it returns True
    the source QEMU is told to ``quit`` in that same session (no second
    connection on the guest's pause). ``after_quit()``, if given, runs right after that
    ``quit`` was sent, still in the session (the target's resume: this session's close
    is no longer on the guest's pause); it must not raise."""
    try:
        return asyncio.run(_migrate(path, uri, timeout, downtime_ms, phases, handover, after_quit))
    except TargetRefused as e:
        return MigrationResult("refused", error=str(e))
    except Exception as e:  # e.g. OSError, QMPError, TimeoutError, EOFError: the caller decides by its commit
        return MigrationResult("error", error=repr(e))


async def _calls(
    path: Path, commands: tuple[tuple[str, Mapping[str, Any] | None], ...], timeout: float
) -> list[Any]:
    client = await _session(path, timeout)
    try:
        return [
            await asyncio.wait_for(client.execute(c, dict(a) if a else None), timeout) for c, a in commands
        ]
    finally:
        await _close(client)


def qmp_calls(path: Path, *commands: tuple[str, Mapping[str, Any] | None], timeout: float = 5.0) -> list[Any]:
    """QMP commands with arguments, one after the other; their return values.

    Raises :class:`MigrationError` when QEMU refuses or does not answer."""
    try:
        return asyncio.run(_calls(path, commands, timeout))
    except (OSError, QMPError, TimeoutError) as e:
        raise MigrationError(f"QMP {[c for c, _ in commands]} failed: {e!r}") from e


async def _resume(path: Path, timeout: float, phases: Phases | None) -> None:
    client = await _session(path, timeout)
    if phases is not None:
        phases.mark("connect")
    try:
        deadline = time.monotonic() + timeout
        while True:
            info = await asyncio.wait_for(client.execute("query-migrate"), timeout)
            status = await asyncio.wait_for(client.execute("query-status"), timeout)
            mig = info.get("status") if isinstance(info, dict) else None
            run = status.get("status") if isinstance(status, dict) else None
            # the source saw "completed" once it sent the last bytes; this side may still be loading
            # them (a few ms): wait for it, but only while a stream is coming in
            finishing = mig == "active" or (mig == "completed" and run == "inmigrate")
            if not finishing or time.monotonic() > deadline:
                break
            await asyncio.sleep(_INCOMING_POLL)
        if phases is not None:
            phases.mark("check")
        if mig != "completed" or run not in ("paused", "running"):
            raise MigrationError(f"not resuming: incoming migration {mig!r}, QEMU {run!r}")
        if run == "paused":
            await asyncio.wait_for(client.execute("cont"), timeout)
            if phases is not None:
                phases.mark("cont")
    finally:
        await _close(client)


def resume_incoming(path: Path, timeout: float = 5.0, phases: Phases | None = None) -> None:
    """Target side: run the guest that came in (``cont``), only once its migration COMPLETED.

    One QMP session: check, then ``cont``. SAFETY: an incoming QEMU whose
    migration did not complete holds no whole guest; it is never resumed
    (:class:`MigrationError`)."""
    try:
        asyncio.run(_resume(path, timeout, phases))
    except (OSError, QMPError, TimeoutError) as e:
        raise MigrationError(f"QMP resume failed: {e!r}") from e
