"""A live migration's target side of the ``vm`` agent (agents/vm.py; issue #12, docs/AGENTS.md).

:class:`IncomingSide` is the part of :class:`agents.vm.VmPlugin` that runs on
the node a guest migrates to: ``incoming_listen`` launches the service's QEMU
``-incoming defer -S`` (same command line and cgroup as a start) and opens its
migration port, ``incoming_resume`` runs the guest once its source committed,
``incoming_abort`` (and a reaper after ``incoming_deadline``) kills an incoming
QEMU that was never resumed. The source side is
:meth:`agents.vm.VmPlugin.migrate_live`; the QMP driver is agents/vmqmp.py.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from agents import vmqmp
from agents.guestimage import GuestError
from agents.proc import ProcPlugin
from agents.vmqmp import INCOMING_ARGS, MigrationError, Phases
from agents.vmspec import VmConfigError, VmSpec
from ha.config.resources import ResourceConfig
from ha.env import Env


class IncomingSide(ProcPlugin):
    """The target's side of a live migration (mixed into :class:`agents.vm.VmPlugin`)."""

    incoming_deadline: float
    _incoming_lock: threading.Lock  # resume, abort and the reaper of one node's incoming QEMUs

    # what the vm agent provides (agents/vm.py)
    def qmp_path(self, node: str, name: str) -> Path:
        raise NotImplementedError

    def _prepare(self, sid: str, node: str, name: str, conf: ResourceConfig) -> tuple[VmSpec, list[str]]:
        raise NotImplementedError

    def _qmp_status(self, node: str, name: str, timeout: float) -> str | None:
        raise NotImplementedError

    def incoming_path(self, node: str, name: str) -> Path:
        """Marks a QEMU of the service launched for an incoming migration and not yet resumed."""
        return self._dir(node) / f"{name}.incoming"

    def _drop_incoming(self, env: Env, sid: str, node: str, name: str) -> bool:
        """Kill the service's incoming QEMU that was never resumed (caller holds _incoming_lock).

        SAFETY: such a copy was never handed over (its migration failed, or its
        source died first): it must never run, and a start never adopts it.
        True if there was one."""
        marker = self.incoming_path(node, name)
        if not marker.exists():
            return False
        st = self.current(node, name)
        if st is not None:
            env.log("info", f"service {sid}: killing its incoming QEMU (never resumed)")
            self._terminate(env, sid, node, name, st, 0)
        if st is None or not self.any_alive(st):
            marker.unlink(missing_ok=True)
        return True

    def incoming_listen(
        self, env: Env, sid: str, conf: ResourceConfig, host: str, phases: Phases | None = None
    ) -> str:
        """Launch the service's QEMU ``-incoming defer -S`` here, listening on ``host``; the URI.

        The same command line and cgroup as a start (so this node's fencing kills
        it), plus :data:`agents.vmqmp.INCOMING_ARGS`. Raises MigrationError.
        ``phases`` (if given) gets the time of each step."""
        phases = phases if phases is not None else Phases()
        node, name = env.nodename(), conf.name
        with self._incoming_lock:
            self._drop_incoming(env, sid, node, name)
            if self._running_or_forgotten(node, name):
                # SAFETY: a copy of the guest runs here already: never a second one
                raise MigrationError(f"service {sid} already runs on node '{node}'")
            try:
                _, argv = self._prepare(sid, node, name, conf)
                # SAFETY: marked before the launch, so no crash leaves an unmarked incoming QEMU
                self.incoming_path(node, name).write_text(f"{time.time()}\n")
            except (VmConfigError, GuestError, OSError) as e:
                raise MigrationError(str(e)) from e
            argv += INCOMING_ARGS
            phases.mark("prepare")
            st = self._launch(env, sid, node, name, argv, "/", {}, " ".join(argv))
            if st is None:
                self.incoming_path(node, name).unlink(missing_ok=True)
                raise MigrationError("QEMU did not start (see this node's log)")
            phases.mark("launch")
        deadline = time.monotonic() + 15.0
        sock = self.qmp_path(node, name)
        err: Exception = MigrationError("QEMU made no QMP socket")
        while True:
            # QEMU makes its QMP socket while it sets up (a cheap check every 2 ms, no connection
            # attempts before); a client connected then gets the greeting once QEMU's main loop runs
            if sock.exists():
                try:
                    uri = vmqmp.listen(sock, host, timeout=2.0, phases=phases)
                    break
                except MigrationError as e:
                    err = e
            if not self.any_alive(st) or time.monotonic() > deadline:
                with self._incoming_lock:
                    self._drop_incoming(env, sid, node, name)
                raise MigrationError(f"{err}{self._log_tail(node, name)}") from err
            time.sleep(0.002)
        reaper = threading.Timer(self.incoming_deadline, self._reap, (env, sid, node, name, st.pid))
        reaper.daemon = True
        reaper.start()
        env.log("info", f"service {sid}: QEMU waiting for a live migration on {uri}")
        return uri

    def _reap(self, env: Env, sid: str, node: str, name: str, pid: int) -> None:
        with self._incoming_lock:
            st = self.current(node, name)
            if st is not None and st.pid == pid and self.incoming_path(node, name).exists():
                env.log(
                    "warning", f"service {sid}: incoming migration not resumed in {self.incoming_deadline:g}s"
                )
                self._drop_incoming(env, sid, node, name)

    def incoming_resume(self, env: Env, sid: str, conf: ResourceConfig) -> None:
        """Run the guest that came in (after the source's commit); idempotent. Raises MigrationError."""
        node, name = env.nodename(), conf.name
        with self._incoming_lock:
            if not self.incoming_path(node, name).exists():
                if self._qmp_status(node, name, 3.0) == "running":
                    return  # resumed already (a repeated request)
                raise MigrationError(f"no incoming QEMU of {sid} on node '{node}'")
            vmqmp.resume_incoming(self.qmp_path(node, name))
            self.incoming_path(node, name).unlink()  # an ordinary running VM from now on
        env.log("info", f"service {sid}: guest resumed here after its live migration")

    def incoming_abort(self, env: Env, sid: str, conf: ResourceConfig) -> bool:
        """Kill the service's incoming QEMU (never a resumed one); False if there was none."""
        with self._incoming_lock:
            return self._drop_incoming(env, sid, env.nodename(), conf.name)
