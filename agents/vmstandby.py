"""Warm standby QEMUs for live migrations to this node (issue #12; docs/AGENTS.md "Warm standbys").

A live migration's target used to launch its ``-incoming defer -S`` QEMU when
the source asked (``listen``): QEMU's own start-up (80-140 ms under TCG on a
loaded 2-core host, 34 ms idle) plus the launch sat on the migration's path.
:class:`StandbyKeeper` keeps one such QEMU launched ahead of time for each
``vm:`` service this node does not run (up to ``limit``), so a ``listen``
only opens its migration port (agents/vmincoming.py ``_take_standby``).

What it costs: an idle standby of the default guest (256 MiB) holds 36-39 MB
resident, 15 MB of it private (the kernel and initramfs loaded as ROM, QEMU's
heap), the rest QEMU's code and libraries, shared between QEMUs (25 MB PSS
each for two); its guest RAM is not touched until a migration comes in. It
uses no CPU while it waits (paused, ``-S``, no migration port open).

SAFETY (never two running copies; what each choice prevents):

* a standby is launched ``-incoming defer -S``: it runs no guest code unless a
  migration stream came in (only after a ``listen`` opened its port) AND the
  source, after its commit, asked for the ``resume``, which checks that the
  incoming migration completed (agents/vmqmp.py ``resume_incoming``) and that
  the marker says ``incoming``, not ``standby``;
* its marker ``<name>.incoming`` (``standby <key>``) is written before its
  launch: ``check_running`` says "not running" while a marker exists, so a
  standby is never counted as the service, and a ``started`` here kills it
  and boots afresh;
* it lives in the service's cgroup below the node's: fencing the node
  (``cgroup.kill``) kills it with the node's services;
* never beside a copy of the guest on this node (a running VM or a
  migration's incoming QEMU): the check and the launch hold the agent's
  ``_incoming_lock``, as a start, ``listen``, ``resume`` and ``abort`` do;
* the incoming reaper (``incoming_deadline``) kills only ``incoming``
  markers, so a standby is never reaped as a migration left behind; the
  keeper kills a standby whose service was removed, stopped, placed on this
  node or beyond ``limit``, and replaces one whose key (command line, QEMU
  binary, kernel files) no longer matches the config; a ``listen`` checks the
  key again itself, so a keeper that has not caught up yet costs time, never
  a wrong QEMU.

``limit`` comes from ``PYHA_VM_STANDBY`` in ha-node's environment
(:func:`standby_limit`): the most standbys a node keeps; ``0`` (or ``off``)
turns them off.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from typing import Final

from agents.vmincoming import INCOMING, IncomingSide
from ha.config.resources import ResourceConfig
from ha.env import Env

DEFAULT_STANDBY_LIMIT: Final = 4  # standbys per node (about 38 MB resident each for the default guest)
STANDBY_ENV: Final = "PYHA_VM_STANDBY"
# s: a change is acted on this long after it was seen (off a migration's own path: the source's new
# standby starts once the migration's last steps ran)
STANDBY_DELAY: Final = 0.3
STANDBY_INTERVAL: Final = 30.0  # s: a look without a change (a standby that died, a stale incoming QEMU)


def standby_limit(environ: Mapping[str, str] | None = None) -> int:
    """``PYHA_VM_STANDBY``: the most standby QEMUs a node keeps (default 4; ``0``/``off``: none)."""
    raw = (os.environ if environ is None else environ).get(STANDBY_ENV, "").strip().lower()
    if not raw:
        return DEFAULT_STANDBY_LIMIT
    if raw in ("off", "no", "false", "none"):
        return 0
    try:
        return max(0, int(raw))
    except ValueError:
        return DEFAULT_STANDBY_LIMIT


def wanted(node: str, services: Mapping[str, ResourceConfig], limit: int) -> list[tuple[str, ResourceConfig]]:
    """The ``vm:`` services that should have a standby on ``node``: requested ``started``, placed
    on another node; the first ``limit`` in sid order."""
    out = [
        (sid, conf)
        for sid, conf in sorted(services.items())
        if conf.type == "vm" and conf.state == "started" and conf.node and conf.node != node
    ]
    return out[:limit]


class StandbyKeeper:
    """Keeps this node's standby QEMUs in line with the cluster's config, in a thread of its own.

    ``services()`` returns the service config as this node reads it now (each
    service's ``node`` is where it is placed), or None when it cannot be read
    (then nothing is changed). :meth:`poke` after anything that may change
    what is wanted (a config change, a service moved); the keeper also looks
    every ``interval`` seconds."""

    def __init__(
        self,
        plugin: IncomingSide,
        env: Env,
        services: Callable[[], Mapping[str, ResourceConfig] | None],
        limit: int,
        *,
        delay: float = STANDBY_DELAY,
        interval: float = STANDBY_INTERVAL,
    ) -> None:
        self.plugin = plugin
        self.env = env
        self.services = services
        self.limit = limit
        self.delay = delay
        self.interval = interval
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one reconcile at a time (the thread's, a test's, close's)

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name=f"{self.env.nodename()}/vm-standby", daemon=True
        )
        self._thread.start()

    def poke(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.reconcile()
            self._wake.wait(self.interval)
            if self._stop.wait(self.delay):
                return
            self._wake.clear()

    def reconcile(self) -> None:
        """Launch the standbys wanted here, kill the others (and stale incoming QEMUs). Never raises."""
        with self._lock:
            if self._stop.is_set():
                return
            try:
                self._reconcile()
            except Exception as e:  # a keeper that stops would leave standbys of removed services behind
                self.env.log("warning", f"vm standby keeper: {e!r}")

    def _reconcile(self) -> None:
        node, plugin, env = self.env.nodename(), self.plugin, self.env
        services = self.services()
        if services is None:
            return
        want = dict(wanted(node, services, self.limit))
        for name in plugin.standby_names(node):
            sid = f"vm:{name}"
            if sid not in want:
                conf = services.get(sid)
                why = (
                    "its service was removed"
                    if conf is None
                    else "its service runs here"
                    if conf.node == node
                    else f"its service is {conf.state}"
                    if conf.state != "started"
                    else "beyond this node's standby limit"
                )
                plugin.standby_drop(env, sid, name, why)
        for name in plugin.marked(node, INCOMING):
            plugin.drop_stale_incoming(env, f"vm:{name}", name)
        for sid, conf in want.items():
            if self._stop.is_set():
                return
            plugin.standby_ensure(env, sid, conf)

    def close(self, kill: bool = True) -> None:
        """Stop the thread; with ``kill``, kill this node's standbys (the node stops)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10.0)
        if kill:
            with self._lock:
                for name in self.plugin.standby_names(self.env.nodename()):
                    self.plugin.standby_drop(self.env, f"vm:{name}", name, "the node stops")
