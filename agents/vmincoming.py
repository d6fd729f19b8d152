"""A live migration's target side of the ``vm`` agent (agents/vm.py; issue #12, docs/AGENTS.md).

:class:`IncomingSide` is the part of :class:`agents.vm.VmPlugin` that runs on
the node a guest migrates to: ``incoming_listen`` launches the service's QEMU
``-incoming defer -S`` (same command line and cgroup as a start) and opens its
migration port, ``incoming_resume`` runs the guest once its source committed,
``incoming_abort`` (and a reaper after ``incoming_deadline``) kills an incoming
QEMU that was never resumed. The source side is
:meth:`agents.vm.VmPlugin.migrate_live`; the QMP driver is agents/vmqmp.py.

**Warm standbys** (``standby_ensure``, ``standby_drop``; kept by
agents/vmstandby.py): the same ``-incoming defer -S`` QEMU, launched ahead of
time on a node that does not run the service, so that a ``listen`` only opens
its migration port (QEMU's own start-up, 80-140 ms under TCG on a loaded host,
leaves the migration's path). The marker ``<name>.incoming`` beside the state
file says which it is: ``standby <key>`` (``key``: a digest of the command
line, the QEMU binary and the kernel files; a ``listen`` takes the standby
over only when its key is the key of the service's config now) or ``incoming
<wall time>`` (a migration's, since its ``listen``). Either way the QEMU was
never resumed: the service does not run here.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from agents import vmqmp
from agents.guestimage import GuestError
from agents.proc import ProcPlugin, ProcState
from agents.vmqmp import INCOMING_ARGS, MigrationError, Phases
from agents.vmspec import VmConfigError, VmSpec
from ha.config.resources import ResourceConfig
from ha.env import Env

STANDBY: Final = "standby"  # a marker's first word: launched ahead of time, never given a migration
INCOMING: Final = "incoming"  # since a migration's listen (its reaper kills it after the deadline)


def standby_key(argv: Sequence[str]) -> str:
    """What a standby QEMU must share with the service's config now to be taken over by a ``listen``.

    The command line (memory, cores, devices, kernel/initrd/disk paths) and the identity
    (size, mtime, inode) of the QEMU binary and of every file named after ``-kernel`` or
    ``-initrd``: the target's QEMU must be the one the source's migration stream fits."""
    h = hashlib.sha256("\0".join(argv).encode())
    files = [argv[0]] + [argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ("-kernel", "-initrd")]
    for f in files:
        try:
            s = os.stat(f)
            h.update(f"\0{f}\0{s.st_size}\0{s.st_mtime_ns}\0{s.st_ino}".encode())
        except OSError:
            h.update(f"\0{f}\0missing".encode())
    return h.hexdigest()[:24]


class IncomingSide(ProcPlugin):
    """The target's side of a live migration (mixed into :class:`agents.vm.VmPlugin`)."""

    incoming_deadline: float
    standby_poke: Callable[[], None] | None  # the node's standby keeper (agents/vmstandby.py)
    _leaving: dict[tuple[str, str], threading.Event]  # QEMUs that migrated away, exiting (vmsource.py)
    _incoming_lock: threading.Lock  # listen, resume, abort, standbys and the reaper of one node's QEMUs

    # what the vm agent provides (agents/vm.py)
    def qmp_path(self, node: str, name: str) -> Path:
        raise NotImplementedError

    def _prepare(self, sid: str, node: str, name: str, conf: ResourceConfig) -> tuple[VmSpec, list[str]]:
        raise NotImplementedError

    def _argv(self, sid: str, node: str, name: str, conf: ResourceConfig) -> list[str]:
        raise NotImplementedError

    def _qmp_status(self, node: str, name: str, timeout: float) -> str | None:
        raise NotImplementedError

    def _await_leaving(self, node: str, name: str) -> bool:
        raise NotImplementedError

    def _poke_standbys(self) -> None:
        if self.standby_poke is not None:
            self.standby_poke()

    def incoming_path(self, node: str, name: str) -> Path:
        """Marks a QEMU of the service launched ``-incoming`` (a standby or a migration's) and not resumed."""
        return self._dir(node) / f"{name}.incoming"

    def marker(self, node: str, name: str) -> tuple[str, str] | None:
        """``(STANDBY, key)``, ``(INCOMING, wall time)`` or None (no incoming QEMU of the service here).

        An unreadable or old-style marker counts as INCOMING (the stricter: never taken over)."""
        try:
            words = self.incoming_path(node, name).read_text().split()
        except FileNotFoundError:
            return None
        except OSError:
            return (INCOMING, "")
        if len(words) == 2 and words[0] == STANDBY:
            return (STANDBY, words[1])
        return (INCOMING, words[-1] if words else "")

    def _write_marker(self, node: str, name: str, kind: str, value: str) -> None:
        path = self.incoming_path(node, name)
        tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
        tmp.write_text(f"{kind} {value}\n")
        os.rename(tmp, path)  # never half a marker: a crash leaves the old one or the new one

    def marked(self, node: str, kind: str) -> list[str]:
        """The VMs (names) with an incoming QEMU of ``kind`` (STANDBY or INCOMING) on ``node``."""
        d = self._dir(node)
        if not d.is_dir():
            return []
        names = [p.name.removesuffix(".incoming") for p in d.glob("*.incoming")]
        return sorted(n for n in names if (m := self.marker(node, n)) is not None and m[0] == kind)

    def standby_names(self, node: str) -> list[str]:
        """The VMs (names) holding a standby QEMU on ``node``."""
        return self.marked(node, STANDBY)

    def _drop_incoming(self, env: Env, sid: str, node: str, name: str, why: str = "never resumed") -> bool:
        """Kill the service's incoming QEMU that was never resumed (caller holds _incoming_lock).

        SAFETY: such a copy was never handed over (its migration failed, or its
        source died first, or it is a standby that never got one): it must never
        run, and a start never adopts it. True if there was one."""
        marker = self.incoming_path(node, name)
        if not marker.exists():
            return False
        st = self.current(node, name)
        if st is not None:
            what = "standby" if (m := self.marker(node, name)) is not None and m[0] == STANDBY else "incoming"
            env.log("info", f"service {sid}: killing its {what} QEMU ({why})")
            self._terminate(env, sid, node, name, st, 0)
        if st is None or not self.any_alive(st):
            marker.unlink(missing_ok=True)
        return True

    def _launch_incoming(self, env: Env, sid: str, node: str, name: str, argv: list[str]) -> ProcState | None:
        """Launch ``argv`` plus ``-incoming defer -S`` (caller holds the lock and wrote the marker)."""
        argv = [*argv, *INCOMING_ARGS]
        st = self._launch(env, sid, node, name, argv, "/", {}, " ".join(argv))
        if st is None:
            self.incoming_path(node, name).unlink(missing_ok=True)
        return st

    # -- standbys --------------------------------------------------------------------------------------

    def standby_ensure(self, env: Env, sid: str, conf: ResourceConfig) -> bool:
        """Hold a standby QEMU of ``sid`` here (launched now unless one with today's key runs); True if so.

        Never beside a copy of the service (a running VM or a migration's incoming QEMU):
        then nothing happens and the answer is False."""
        node, name = env.nodename(), conf.name
        with self._incoming_lock:
            if (node, name) in self._leaving:
                return False  # it migrated away from here a moment ago: poked again once it is gone
            mark = self.marker(node, name)
            if mark is not None and mark[0] != STANDBY:
                return False  # a migration's incoming QEMU: its listen, resume, abort or reaper own it
            try:
                argv = self._argv(sid, node, name, conf)
            except (VmConfigError, GuestError, OSError) as e:
                if mark is not None:
                    self._drop_incoming(env, sid, node, name, f"config: {e}")
                return False
            key = standby_key(argv)
            if mark is not None:
                st = self.current(node, name)
                alive = st is not None and self.any_alive(st)
                if mark[1] == key and alive:
                    return True
                self._drop_incoming(env, sid, node, name, "its config changed" if alive else "it died")
                if self.incoming_path(node, name).exists():
                    return False  # it survived the kill: leave it to the next round
            elif self._running_or_forgotten(node, name):
                # SAFETY: a copy of the guest runs here (this node's service): never a QEMU beside it
                return False
            try:
                self._prepare(sid, node, name, conf)  # folders, stale sockets
                # SAFETY: marked before the launch, so no crash leaves an unmarked standby (which a
                # check_running would take for the service)
                self._write_marker(node, name, STANDBY, key)
            except (VmConfigError, GuestError, OSError) as e:
                env.log("warning", f"service {sid}: no standby QEMU: {e}")
                return False
            st = self._launch_incoming(env, sid, node, name, argv)
            if st is None:
                return False
        env.log("info", f"service {sid}: standby QEMU launched for a live migration to this node")
        return True

    def standby_drop(self, env: Env, sid: str, name: str, why: str) -> bool:
        """Kill the standby QEMU of VM ``name`` here (never a migration's incoming QEMU); True if killed."""
        node = env.nodename()
        with self._incoming_lock:
            mark = self.marker(node, name)
            if mark is None or mark[0] != STANDBY:
                return False
            return self._drop_incoming(env, sid, node, name, why)

    def drop_stale_incoming(self, env: Env, sid: str, name: str) -> bool:
        """Kill a migration's incoming QEMU whose ``listen`` is older than ``incoming_deadline``.

        Its reaper (a timer of the process that listened) is gone when that process was
        restarted; this is the same deadline, checked by the node's standby keeper."""
        node = env.nodename()
        with self._incoming_lock:
            mark = self.marker(node, name)
            if mark is None or mark[0] != INCOMING:
                return False
            try:
                since = float(mark[1])
            except ValueError:
                since = self.incoming_path(node, name).stat().st_mtime
            if time.time() - since <= self.incoming_deadline:
                return False
            env.log(
                "warning", f"service {sid}: incoming migration not resumed in {self.incoming_deadline:g}s"
            )
            return self._drop_incoming(env, sid, node, name)

    def _take_standby(
        self, env: Env, sid: str, node: str, name: str, conf: ResourceConfig
    ) -> ProcState | None:
        """The standby QEMU of ``sid`` here, now a migration's (caller holds the lock); None if unfit."""
        mark = self.marker(node, name)
        if mark is None or mark[0] != STANDBY:
            return None
        try:
            key = standby_key(self._argv(sid, node, name, conf))
        except (VmConfigError, GuestError, OSError):
            return None
        st = self.current(node, name)
        if mark[1] != key or st is None or not self.any_alive(st):
            return None
        # SAFETY: still paused and never given a stream (-incoming defer -S); from here on it is this
        # migration's incoming QEMU: the deadline reaper, abort and resume treat it as such
        self._write_marker(node, name, INCOMING, f"{time.time()}")
        return st

    # -- a migration's target ----------------------------------------------------------------------------

    def incoming_listen(
        self, env: Env, sid: str, conf: ResourceConfig, host: str, phases: Phases | None = None
    ) -> str:
        """Launch the service's QEMU ``-incoming defer -S`` here (or take its standby), listening on ``host``.

        The same command line and cgroup as a start (so this node's fencing kills
        it), plus :data:`agents.vmqmp.INCOMING_ARGS`; the URI. Raises MigrationError.
        ``phases`` (if given) gets the time of each step."""
        phases = phases if phases is not None else Phases()
        node, name = env.nodename(), conf.name
        if self._await_leaving(node, name):  # it migrated away from here a moment ago
            phases.mark("leaving")
        with self._incoming_lock:
            st = self._take_standby(env, sid, node, name, conf)
        if st is not None:
            phases.mark("standby")
            try:
                uri = self._open_port(env, sid, node, name, st, host, phases)
            except MigrationError as e:
                env.log("warning", f"service {sid}: its standby QEMU did not listen ({e}), launching one")
            else:
                env.log("info", f"service {sid}: standby QEMU waiting for a live migration on {uri}")
                return uri
        with self._incoming_lock:
            self._drop_incoming(env, sid, node, name)
            if self._running_or_forgotten(node, name):
                # SAFETY: a copy of the guest runs here already: never a second one
                raise MigrationError(f"service {sid} already runs on node '{node}'")
            try:
                _, argv = self._prepare(sid, node, name, conf)
                # SAFETY: marked before the launch, so no crash leaves an unmarked incoming QEMU
                self._write_marker(node, name, INCOMING, f"{time.time()}")
            except (VmConfigError, GuestError, OSError) as e:
                raise MigrationError(str(e)) from e
            phases.mark("prepare")
            st = self._launch_incoming(env, sid, node, name, argv)
            if st is None:
                raise MigrationError("QEMU did not start (see this node's log)")
            phases.mark("launch")
        uri = self._open_port(env, sid, node, name, st, host, phases)
        env.log("info", f"service {sid}: QEMU waiting for a live migration on {uri}")
        return uri

    def _open_port(
        self, env: Env, sid: str, node: str, name: str, st: ProcState, host: str, phases: Phases
    ) -> str:
        """QMP ``migrate-incoming`` on the incoming QEMU ``st``; its URI. On failure it is killed."""
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
                    if (cur := self.current(node, name)) is not None and cur.pid == st.pid:
                        self._drop_incoming(env, sid, node, name)
                raise MigrationError(f"{err}{self._log_tail(node, name)}") from err
            time.sleep(0.002)
        reaper = threading.Timer(self.incoming_deadline, self._reap, (env, sid, node, name, st.pid))
        reaper.daemon = True
        reaper.start()
        return uri

    def _reap(self, env: Env, sid: str, node: str, name: str, pid: int) -> None:
        with self._incoming_lock:
            st = self.current(node, name)
            mark = self.marker(node, name)
            # SAFETY (of the standbys): only a migration's QEMU, never a standby launched since
            if st is not None and st.pid == pid and mark is not None and mark[0] == INCOMING:
                env.log(
                    "warning", f"service {sid}: incoming migration not resumed in {self.incoming_deadline:g}s"
                )
                self._drop_incoming(env, sid, node, name)
        self._poke_standbys()

    def incoming_resume(self, env: Env, sid: str, conf: ResourceConfig, phases: Phases | None = None) -> None:
        """Run the guest that came in (after the source's commit); idempotent. Raises MigrationError."""
        node, name = env.nodename(), conf.name
        with self._incoming_lock:
            mark = self.marker(node, name)
            if mark is None:
                if self._qmp_status(node, name, 3.0) == "running":
                    return  # resumed already (a repeated request)
                raise MigrationError(f"no incoming QEMU of {sid} on node '{node}'")
            if mark[0] != INCOMING:
                # SAFETY: a standby never got a migration: nothing of the guest is in it
                raise MigrationError(f"the QEMU of {sid} on node '{node}' is a standby: not resuming it")
            vmqmp.resume_incoming(self.qmp_path(node, name), phases=phases)
            self.incoming_path(node, name).unlink()  # an ordinary running VM from now on
        env.log("info", f"service {sid}: guest resumed here after its live migration")

    def incoming_abort(self, env: Env, sid: str, conf: ResourceConfig) -> bool:
        """Kill the service's incoming QEMU (never a resumed one); False if there was none."""
        with self._incoming_lock:
            killed = self._drop_incoming(env, sid, env.nodename(), conf.name)
        self._poke_standbys()  # a standby taken over by the listen may be due again
        return killed


__all__ = ["INCOMING", "STANDBY", "IncomingSide", "standby_key"]
