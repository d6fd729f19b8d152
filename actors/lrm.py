"""The LRM actor: the core LRM of one node, executing through worker actors.

It iterates on a timer (agent lease renewal every ``renew_interval``) and on
events (a ``ServiceCommand`` from the master, a worker finishing). The core
writes ``lrm_status`` with the results first; the node runtime then sends
them to the master (``CommandResult``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from actors.daemon import DaemonActor, Exited, Waker
from actors.worker import ActorWorkerPool, WorkerDone
from ha.constants import Timing
from ha.env import Env
from ha.errors import HaError
from ha.lrm import LRM, WorkerPool
from ha.records import LrmResult
from ha.states import LrmMode, LrmState
from ha.states import ServiceState as S

RECHECK_HOLD = 5.0  # s: the longest a re-check round holds back the lrm_status write


def _same(a: tuple[object, ...] | None, b: tuple[object, ...] | None) -> bool:
    """The same pass inputs: the same request and config objects, equal counts."""
    return a is not None and b is not None and a[0] is b[0] and a[1] is b[1] and a[2:] == b[2:]


class PacedLRM(LRM):
    """The core LRM with re-checks of running services paced to ``recheck_interval``.

    The master answers every result of a ``started`` service with a new UID, so
    that the LRM checks the service again (BEHAVIOUR.md §5 "started": the
    reference does so once per 10 s round). The live LRM iterates every
    ``renew_interval``; running every such re-check at once would check each
    service, write lrm_status and make the master write manager_status twice a
    second. Here a re-check (a ``started`` request for a service whose last
    command here was a successful ``started`` with the same parameters) waits
    for the node's next re-check round, every ``recheck_interval`` seconds, for
    all services at once. Anything else (a first start, a retry after a failure,
    a stop, a migration, a request after this LRM restarted) runs at once. The
    core repeats a successful ``stopped`` request every round (to stop a copy
    started behind its back); here every re-check round.

    Failure detection of a *node* does not depend on this: it goes by bus
    membership and leases. A service that dies on a live node is noticed at the
    next re-check round (at most ``recheck_interval`` later, as in the reference).

    Quiet re-checks (issue #17, ours): a re-check that succeeded changes nothing
    the master acts on (§4: its only effect is a new UID, rule (c), which asks for
    the next re-check). Such a result is kept here but not published in
    lrm_status (:meth:`published_results`), so the master renews nothing and
    writes nothing; instead this LRM re-runs the quiet request itself at each of
    its re-check rounds. A re-check that fails (or a request that is not a
    re-check) is published at once, exactly as before. At rest a node therefore
    writes neither lrm_status nor causes manager_status writes; the services are
    still checked every ``recheck_interval``.
    """

    def __init__(
        self,
        env: Env,
        pool: WorkerPool | None,
        timing: Timing,
        recheck_interval: float,
        clock: Callable[[], float] = time.monotonic,
        incoming: dict[str, float] | None = None,
    ) -> None:
        super().__init__(env, pool=pool, timing=timing)
        self.recheck_interval = recheck_interval
        self.clock = clock
        # guests live-migrating to this node (NodeContext.incoming): sid -> monotonic deadline
        self.incoming = incoming if incoming is not None else {}
        self.confirmed: dict[str, tuple[tuple[str, Any], ...]] = {}  # sid -> params of its last good start
        self.next_recheck = -float("inf")
        self._recheck_now = True
        self.rechecks: set[str] = set()  # UIDs of this round's re-checks
        self.quiet: set[str] = set()  # UIDs whose result is a successful re-check: not published
        # the last lrm_status written: result UIDs, state, mode, when
        self.written: tuple[set[str], str, str, float] = (set(), "", "", -float("inf"))
        self.finished = 0  # commands finished so far (a new result is new input)
        self._idle_inputs: tuple[object, ...] | None = None  # of the last pass that queued nothing
        self.passes_skipped = 0

    def manage_resources(self) -> int:
        now = self.clock()
        self._recheck_now = now >= self.next_recheck
        if self._recheck_now:
            self.next_recheck = now + self.recheck_interval
        inputs = self._pass_inputs()
        if not self._recheck_now and _same(inputs, self._idle_inputs):
            # Nothing it reads changed since a pass that found nothing to do: the same pass
            # again would queue nothing (issue #17: a pass over every service twice a second).
            self.passes_skipped += 1
            return 0
        node = self.env.nodename()
        for sid in list(self.confirmed):
            sd = self.service_status.get(sid)
            if sd is None or sd.node != node or sd.state != S.STARTED:
                del self.confirmed[sid]  # it left "started" here meanwhile: its next request runs at once
        if self.quiet:
            self._rerun_quiet(node)
        left = super().manage_resources()
        self._idle_inputs = inputs if not self.workers and not self.after_running else None
        return left

    def collect_quietly(self) -> bool:
        """A worker finished: collect it and start what is queued, without a whole iteration,
        when nothing else is to do (False: run a whole iteration now).

        During a re-check round the pool finishes a command every few milliseconds; a whole
        iteration for each (the lease, the manager's request, a pass over every service)
        made a node of 100 services spend most of its time at rest on them (issue #17).
        Here the answers of successful re-checks are only collected and the next queued
        commands started, as long as the manager's request is still the one they were
        queued for. Anything else (a failed check, another result, a new request, the last
        re-check of the round, any state but plain active) runs a whole iteration, as before.
        """
        if self.state != LrmState.ACTIVE or self.mode != LrmMode.ACTIVE or self.shutdown_request is not None:
            return False
        try:
            ms = self.env.read_manager_status()
        except HaError:
            return False
        if ms.service_status is not self.service_status:
            return False  # SAFETY: a new request replaces queued commands first (a whole iteration)
        before = set(self.results)
        self.run_workers()
        if any(uid not in self.quiet for uid in self.results.keys() - before):
            return False  # a result the master must see: published by a whole iteration
        # (results pruned meanwhile are old requests: written with the round's end)
        return any(j.uid in self.rechecks for j in self.workers.values())  # the round goes on

    def run_workers(self) -> int:
        if self.rechecks:
            self._probe_rechecks()
        return super().run_workers()

    def _probe_rechecks(self) -> None:
        """Answer the queued re-checks whose agent checks cheaply here, without a worker.

        A re-check is a ``started`` request for a service that runs: the worker would call
        the agent's check_running and answer success without doing anything else (§3.3
        ``exec_resource_agent``). For agents whose check reads a few files and never blocks
        (``quick_check``: proc and ct), that check runs here and a running service is
        answered at once, as the worker would have (issue #17: a worker round trip per
        service every 10 s was most of a node's cost at rest). Anything else (not running,
        a failed check, another agent) goes to the workers as before, which start it.
        """
        env, node, sc = self.env, self.env.nodename(), None
        for job in [j for j in self.workers.values() if not j.started and j.uid in self.rechecks]:
            if job.state != S.STARTED:
                continue
            plugin = env.resource_plugin(job.sid.split(":", 1)[0])
            if plugin is None or not getattr(plugin, "quick_check", False):
                continue
            sc = sc if sc is not None else env.read_service_config()
            conf = sc.get(job.sid)
            if conf is None or conf.node != node:
                continue
            try:
                running = plugin.check_running(env, job.sid, conf)
            except Exception:  # the worker's exec_resource_agent tells the whole story
                continue
            if running:
                self.command_finished(job.sid, 0)  # what the worker reports for "already running"

    def _pass_inputs(self) -> tuple[object, ...] | None:
        """What a pass of :meth:`manage_resources` depends on between re-check rounds.

        The manager's request (the status object is new for every new version of the record),
        the service config (a new object for a new version; sections that cannot be read),
        and the results (every finished command counts). None while commands are queued or
        running: then every pass runs.
        """
        if self.workers or self.after_running:
            return None
        sc = self.env.read_service_config()
        # the objects themselves, compared by identity (an id could be reused once one is freed)
        return self.service_status, sc, sc.incomplete, self.finished, len(self.results)

    def _rerun_quiet(self, node: str) -> None:
        """Forget the quiet results still requested, at a re-check round: the core runs them again."""
        for uid in list(self.quiet):
            r = self.results.get(uid)
            sd = None if r is None else self.service_status.get(r.sid)
            if r is None or sd is None or sd.uid != uid or sd.node != node or sd.state != S.STARTED:
                self.quiet.discard(uid)  # superseded, pruned or moved: nothing to re-run
            elif self._recheck_now and r.sid not in self.workers:
                # SAFETY: the request is the master's current one for this node (same UID, still
                # ``started`` here): re-running it is what the reference's UID renewal asks for.
                del self.results[uid]

    def _pinned(self) -> bool:
        """A guest is live-migrating to this node: hold the agent lease and watchdog for it.

        SAFETY: the target's QEMU runs the guest before the master counts the service
        on this node; without its lease this node could be fenced "at once" (nothing
        to wait for) while the guest runs on. The core counts a migration's target as
        active (§3.2.2), but only once this LRM read that manager_status (each tick);
        the pin makes it go active before the target listens (actors/peer.py waits
        for it) and keeps it so until the master places the service here (then the
        core's own count holds it) or the pin expires (the incoming QEMU was reaped
        or the migration abandoned).
        """
        if not self.incoming:
            return False
        now, node = time.monotonic(), self.env.nodename()
        for sid, deadline in list(self.incoming.items()):
            sd = self.service_status.get(sid)
            if now > deadline or (sd is not None and sd.node == node):
                self.incoming.pop(sid, None)
        return bool(self.incoming)

    def active_service_count(self) -> int:
        pinned = self._pinned()  # first: it also drops the pins that ended
        n = super().active_service_count()
        return n if n or not pinned else 1

    def has_configured_service_on_local_node(self) -> bool:
        pinned = self._pinned()
        return super().has_configured_service_on_local_node() or pinned

    def published_results(self) -> dict[str, LrmResult]:
        """The results without the quiet ones (successful re-checks): see the class docstring."""
        if not self.quiet:
            return self.results
        return {uid: r for uid, r in self.results.items() if uid not in self.quiet}

    def queue_resource_command(
        self, sid: str, uid: str | None, state: str, params: dict[str, Any] | None = None
    ) -> None:
        key = tuple(sorted((params or {}).items()))
        if state != S.STARTED:
            self.confirmed.pop(sid, None)
        elif (
            not self._recheck_now
            and uid is not None
            and uid not in self.results
            and sid not in self.workers
            and self.confirmed.get(sid) == key
        ):
            return  # a re-check: at the next re-check round
        if (
            state == S.STARTED
            and uid is not None
            and uid not in self.results
            and self.confirmed.get(sid) == key
        ):
            self.rechecks.add(uid)
        if state == S.STOPPED and not self._recheck_now and uid is not None:
            done = self.results.get(uid)
            if done is not None and done.exit_code == 0 and sid not in self.workers:
                return  # the core re-runs a done stop every round: here every re-check round
        super().queue_resource_command(sid, uid, state, params)

    def update_lrm_status(self) -> bool:
        """Write lrm_status, but not between the answers of one re-check round.

        The pool runs a round's re-checks a few at a time; each batch would be one
        more write. While re-checks of the round are still running and nothing
        else is new (no other result, no failed check, same state and mode; the
        last write younger than ``RECHECK_HOLD``), the write waits for the last
        of them: one write per round.
        """
        if self._hold_for_rechecks():
            return True
        ok = super().update_lrm_status()
        if ok:
            self.written = (set(self.results), self.state, self.mode, self.clock())
        return ok

    def _hold_for_rechecks(self) -> bool:
        if not self.rechecks:
            return False
        if not any(j.uid in self.rechecks for j in self.workers.values()):
            self.rechecks.clear()  # the round is over: write what it found
            return False
        uids, state, mode, at = self.written
        if state != self.state or mode != self.mode or self.clock() - at > RECHECK_HOLD:
            return False
        return all(
            uid in uids or (uid in self.rechecks and r.exit_code == 0) for uid, r in self.results.items()
        )

    def command_finished(self, sid: str, status: int) -> None:
        self.finished += 1
        job = self.workers.get(sid)
        if job is not None and job.uid is not None:
            if job.state == S.STARTED and status == 0:
                self.confirmed[sid] = tuple(sorted(job.params.items()))
            else:
                self.confirmed.pop(sid, None)
        super().command_finished(sid, status)
        if job is None or job.uid is None:
            return
        r = self.results.get(job.uid)
        if r is not None and r.exit_code == 0 and job.uid in self.rechecks:
            self.quiet.add(job.uid)
        else:
            self.quiet.discard(job.uid)  # a failed re-check (or any other result) is published


class LrmActor(DaemonActor):
    name = "lrm"

    def __init__(
        self,
        node: str,
        env: Env,
        timing: Timing,
        make_worker_env: Callable[[int], Env],
        max_workers: int,
        command_timeout: float,
        on_exit: Callable[[Exited], None],
        waker: Waker | None = None,
        pre_iterate: Callable[[], None] | None = None,
        recheck_interval: float = 0.0,
        incoming: dict[str, float] | None = None,
        on_state: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(node, on_exit, waker)
        self.pre_iterate = pre_iterate
        self.on_state = on_state
        self.pool = ActorWorkerPool(max_workers, make_worker_env, self._worker_done, command_timeout)
        self.lrm = PacedLRM(env, self.pool, timing, recheck_interval, incoming=incoming)

    def _worker_done(self, msg: WorkerDone) -> None:
        # called on a worker's thread: hand over to this actor's thread
        self.actor_ref.tell(msg)

    def handle(self, message: object) -> object:
        if isinstance(message, WorkerDone):
            self.pool.finished(message)
            if self.waker.queued.is_set() or not self.lrm.collect_quietly():
                # one iteration collects every command finished by then (wake-ups coalesce)
                self.waker.poke()
            return None
        if message == "state":
            return (self.lrm.state, self.lrm.mode)
        return None

    def iterate(self) -> bool:
        if self.pre_iterate is not None:
            self.pre_iterate()
        try:
            return self.lrm.do_one_iteration()
        finally:
            if self.on_state is not None:
                self.on_state(self.lrm.state)

    def shutdown(self) -> None:
        self.lrm.request_shutdown()

    def on_stop(self) -> None:
        self.pool.stop()
