"""A live migration's source side (issue #12): mixed into :class:`agents.vm.VmPlugin`.

``migrate`` (online: :meth:`SourceSide.migrate_live`; ``relocate``: stop here,
the target boots the guest again), the hand-over's order and why (SAFETY:
never two running copies), the wait for the QEMU that left, and the way back
after a failed migration. The target's side is agents/vmincoming.py, the QMP
driver agents/vmqmp.py.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

from qemu.qmp import QMPError

from agents import procutil, vmqmp
from agents.proc import ProcState
from agents.vmincoming import IncomingSide
from agents.vmqmp import MigrationError, Peer, PeerError, Phases, qmp
from ha.config.resources import ResourceConfig
from ha.env import Env


class SourceSide(IncomingSide):
    """The source's side of a live migration (mixed into :class:`agents.vm.VmPlugin`)."""

    peer: Peer | None  # how this node reaches the target (the live runtime sets it); None: relocate
    migrate_timeout: float

    def migrate(self, env: Env, sid: str, conf: ResourceConfig, target: str, online: bool) -> bool:
        """``migrate``: live (:meth:`migrate_live`); ``relocate``: stop here, the target boots it again."""
        if online:
            return self.migrate_live(env, sid, conf, target)
        return self._relocate(env, sid, conf, target)

    def _relocate(self, env: Env, sid: str, conf: ResourceConfig, target: str) -> bool:
        if self.check_running(env, sid, conf):
            env.log("info", f"stopping service {sid} (relocate to node '{target}')")
            self.shutdown(env, sid, conf, None)
        return not self.check_running(env, sid, conf)

    # -- live migration: the source (issue #12; the QMP driver is agents/vmqmp.py) ----------------

    def migrate_live(
        self, env: Env, sid: str, conf: ResourceConfig, target: str, commit: Callable[[], None] | None = None
    ) -> bool:
        """Live-migrate the guest to ``target``; True once the target holds it (and runs it).

        ``commit`` moves the service's location to the target (the live runtime's
        :class:`actors.env.MovingPlugin` passes it; it raises when the move failed).

        The order, and why (SAFETY: never two running copies of the guest):

        1. the target launches its QEMU ``-incoming defer -S`` (request ``listen``,
           in a thread while this node's QMP session is set up);
        2. QMP ``migrate`` here; QEMU pauses this copy (``postmigrate``) before it
           reports ``completed``, and the target's copy stays paused (``-S``):
           from here on neither copy runs;
        3. ``commit``: the location names the target (run inside the migration's
           QMP session, :func:`agents.vmqmp.migrate` ``handover``);
        4. QMP ``quit`` here, in that same session: this copy can never be
           resumed again;
        5. only then the target resumes its copy (request ``resume``; it checks
           that the location names it), still in that session (``after_quit``):
           its close is not on the guest's pause.

        Any failure before 3 (no answer, QEMU failed, time-out: ``migrate_cancel``)
        kills the target's copy (request ``abort``; its node also kills an
        incoming QEMU never resumed within ``incoming_deadline``, and a start
        there never adopts one) and leaves the guest running here: False, the
        service stays here (BEHAVIOUR.md §3.3.3 and §2.2: a failed migrate is
        ERROR, the service goes back to ``started`` on its node; success is "the
        guest's config no longer on the source", our step 3). After 3 the target
        owns the service: True, even if step 5 failed (the target's LRM then
        boots the guest afresh).
        """
        node, name = env.nodename(), conf.name
        st = self.current(node, name)
        if st is None or not self.any_alive(st):
            return True  # nothing runs here: the target starts it, as after a relocation
        peer = self.peer
        if peer is None:
            env.log(
                "info", f"service {sid}: no way to reach node '{target}' for a live migration, relocating"
            )
            return self._relocate(env, sid, conf, target)
        env.log("info", f"service {sid}: live migration to node '{target}'")
        t0 = time.monotonic()
        phases = Phases()

        def listen() -> str:
            sent = time.time()
            reply = peer(target, {"sid": sid, "action": "listen"}, 20.0)
            listened.append(time.monotonic())
            target_phases = reply.get("phases")
            if isinstance(target_phases, dict):
                phases.add("target_", target_phases)
            phases.legs("peer_listen", sent, time.time(), reply.get("span"))
            phases.add("", {"listen_rtt": round((listened[0] - t0) * 1000, 1)})
            return str(reply["uri"])

        listened: list[float] = []
        moved: list[float] = []  # when the hand-over began, once the location moved (commit succeeded)
        failed: list[Exception] = []

        def handover(done: vmqmp.MigrationResult) -> bool:
            began = time.monotonic()
            # SAFETY: both copies are paused now (source postmigrate, target -S); True: the source
            # QEMU quits in the migration's own QMP session, before the target's copy may run
            # (QEMU reports "completed" a moment before its main loop moves the stopped guest from
            # finish-migrate to postmigrate: both are stopped, and a completed one never restarts)
            if done.source_status not in ("postmigrate", "finish-migrate"):
                failed.append(MigrationError(f"the source QEMU is {done.source_status!r}, not stopped"))
                return False
            if commit is not None:
                try:
                    commit()
                except Exception as e:  # the location did not move: the guest stays here
                    failed.append(e)
                    return False
            phases.mark("commit")
            moved.append(began)
            return True

        resumed_at: list[float] = []

        def resume_target() -> None:
            """The target runs the guest: once, after the commit and this copy's quit."""
            if resumed_at:
                return
            try:
                sent = time.time()
                resumed = peer(target, {"sid": sid, "action": "resume"}, 10.0)
                if isinstance(resumed.get("phases"), dict):
                    phases.add("target_resume_", resumed["phases"])
                phases.legs("peer_resume", sent, time.time(), resumed.get("span"))
            except Exception as e:  # PeerError, or a reply of the wrong shape: never raises (after_quit)
                env.log(
                    "err",
                    f"service {sid}: the guest did not resume on node '{target}' ({e}); it boots there again",
                )
            phases.mark("resume")
            resumed_at.append(time.monotonic())

        # the target's listen overlaps this node's QMP set-up (agents/vmqmp.py migrate); its resume
        # follows the commit and this copy's quit in the same QMP session
        res = vmqmp.migrate(
            self.qmp_path(node, name),
            listen,
            self.migrate_timeout,
            phases=phases,
            handover=handover,
            after_quit=resume_target,
        )
        ready_ms = ((listened[0] if listened else time.monotonic()) - t0) * 1000
        if res.status == "refused":
            env.log("err", f"service {sid}: node '{target}' cannot take the live migration: {res.error}")
            self._abort_target(env, sid, target, peer)
            return False
        if not moved:
            if failed:
                env.log(
                    "err",
                    f"service {sid}: migrated, but its location did not move ({failed[0]}); resuming it here",
                )
            else:
                env.log("err", f"service {sid}: live migration to node '{target}' {res.status}: {res.error}")
            self._abort_target(env, sid, target, peer)  # SAFETY: first gone there, then running here
            self._resume_here(env, sid, node, name)
            return False
        # the location names the target from here on: it owns the service, whatever happens next
        t_done = moved[0]
        if not res.completed:  # QMP trouble after the hand-over: the target still takes the guest
            env.log(
                "warning", f"service {sid}: after the hand-over to node '{target}': {res.status}: {res.error}"
            )
        if not res.quit_sent:
            # SAFETY: this copy quits before the target's may run (a postmigrate QEMU resumes only on `cont`)
            with contextlib.suppress(OSError, QMPError, TimeoutError):
                qmp(self.qmp_path(node, name), "quit", timeout=2.0)
            phases.mark("quit")
        resume_target()  # (done already when the quit went out in the migration's session)
        t_resumed = resumed_at[0]
        paused_ms = (t_resumed - t_done) * 1000 + (res.downtime_ms or 0)
        # the source QEMU was told to quit: its exit is waited for off the migration's path
        self._let_go(env, sid, node, name, st, t_resumed)
        env.log(
            "info",
            f"service {sid}: live migration phases (ms): {phases.text()} "
            f"wall_start={phases.wall:.3f} wall_end={time.time():.3f}",
        )
        env.log(
            "info",
            f"service {sid}: live migration to {target} done in {res.total_ms} ms, "
            f"downtime {res.downtime_ms} ms (QEMU); guest paused {paused_ms:.0f} ms, "
            f"{(t_resumed - t0) * 1000:.0f} ms in all (target QEMU ready after {ready_ms:.0f} ms)",
        )
        return True

    def _let_go(self, env: Env, sid: str, node: str, name: str, st: ProcState, since: float) -> None:
        """Wait (in a thread) for the migrated-away QEMU ``st`` to exit, then forget it; kill it after 5 s.

        The location names the target already and this copy was told to quit (it was
        stopped before: postmigrate). Until it is forgotten a start or a ``listen`` of the
        VM here waits for it (:meth:`_await_leaving`), so neither takes the leaving QEMU
        for a running copy, and no standby is launched beside it."""
        done = threading.Event()
        with self._incoming_lock:
            self._leaving[(node, name)] = done

        def wait() -> None:
            try:
                if procutil.poll_until(lambda: not self.any_alive(st), 5.0, first=0.002, cap=0.005):
                    self._forget(node, name, st)
                else:
                    self._terminate(env, sid, node, name, st, 0)
                gone_ms = (time.monotonic() - since) * 1000
                env.log("info", f"service {sid}: source QEMU gone {gone_ms:.0f} ms after the resume")
            finally:
                with self._incoming_lock:
                    self._leaving.pop((node, name), None)
                done.set()
                self._poke_standbys()  # the service left: this node may hold a standby of it now

        threading.Thread(target=wait, name=f"{node}/vm-{name}-gone", daemon=True).start()

    def _await_leaving(self, node: str, name: str) -> bool:
        """Wait until a QEMU of the VM that migrated away from here is gone; False if none was leaving.

        SAFETY: until then its state file names a live process: a start would take it
        for the running guest ("already running") while it exits."""
        done = self._leaving.get((node, name))
        if done is None:
            return False
        done.wait(5.0 + self.kill_wait + 2.0)
        return True

    def _abort_target(self, env: Env, sid: str, target: str, peer: Peer) -> None:
        try:
            peer(target, {"sid": sid, "action": "abort"}, 10.0)
        except PeerError as e:  # it kills the incoming QEMU itself after incoming_deadline
            env.log(
                "warning", f"service {sid}: node '{target}' did not confirm killing its incoming QEMU: {e}"
            )

    def _resume_here(self, env: Env, sid: str, node: str, name: str) -> None:
        """The guest runs here again after a failed migration (QEMU resumes it itself unless it completed).

        SAFETY: only called while the target's copy was never resumed (it never is before the commit)."""
        path = self.qmp_path(node, name)
        status = self._qmp_status(node, name, 5.0)
        if status in ("postmigrate", "paused", "finish-migrate"):
            with contextlib.suppress(MigrationError):
                vmqmp.qmp_calls(path, ("cont", None))
            status = self._qmp_status(node, name, 5.0)
        env.log(
            "info" if status == "running" else "err", f"service {sid}: guest {status or 'not answering'} here"
        )


__all__ = ["SourceSide"]
