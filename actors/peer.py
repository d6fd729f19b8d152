"""Requests between members (docs/API.md "Between members"): live migration's ``vm_incoming``.

A node asks another member with the API's own envelope, an ``ApiRequest``
sent on its peer link (:class:`PeerCalls`); the other node's API actor
answers it with an ``ApiReply`` on the same link, which ``actors/node.py``
hands back here. Only members may call these operations (:data:`MEMBER_OPS`;
``actors/api.py`` refuses every client key, admin keys included, code 7).

``vm_incoming`` (:class:`VmIncoming`) is the target's side of a live
migration (``agents/vmsource.py`` :meth:`~agents.vm.VmPlugin.migrate_live` is the
source's): ``listen`` launches the VM's QEMU ``-incoming`` in this node's
service cgroup, ``resume`` runs the guest that came in, ``abort`` kills an
incoming QEMU that was never resumed.
"""

from __future__ import annotations

import itertools
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from actors.env import LiveEnv, NodeContext
from admin.errors import AdminError, ExitCode
from agents.vm import VmPlugin
from agents.vmqmp import MigrationError, PeerError, Phases
from agents.vmstandby import StandbyKeeper, standby_limit
from bus.messages import ApiReply, ApiRequest, Message
from ha.config.resources import ResourceConfig
from ha.errors import HaError
from store import records as rec

MEMBER_OPS = frozenset({"vm_incoming"})
LRM_ACTIVE_WAIT = 5.0  # s: how long ``listen`` waits for this node's LRM to take its lease
PIN_MARGIN = 30.0  # s: a pin outlives the incoming QEMU's own deadline by this much
VM_ACTIONS = ("listen", "resume", "abort")


class PeerCalls:
    """This node's requests to other members, each waiting for its ``ApiReply`` (thread-safe)."""

    def __init__(self, node: str, send: Callable[[str, Message], bool]) -> None:
        self.node = node
        self.send = send
        self._lock = threading.Lock()
        self._waiting: dict[str, tuple[threading.Event, list[ApiReply]]] = {}
        self._ids = itertools.count(1)
        self._prefix = f"{node}-{secrets.token_hex(4)}-"

    def call(self, node: str, op: str, args: Mapping[str, Any], timeout: float) -> Any:
        """Run ``op`` on member ``node``; its result. PeerError when refused, unsent or unanswered."""
        rid = f"{self._prefix}{next(self._ids)}"
        slot: tuple[threading.Event, list[ApiReply]] = (threading.Event(), [])
        with self._lock:
            self._waiting[rid] = slot
        try:
            try:
                sent = self.send(node, ApiRequest(rid, op, dict(args)))
            except HaError as e:
                raise PeerError(f"'{op}' not sent to {node}: {e}") from e
            if not sent:
                raise PeerError(f"'{op}' not sent to {node} (no connection)")
            if not slot[0].wait(timeout):
                raise PeerError(f"no answer from {node} to '{op}' within {timeout:g}s")
            reply = slot[1][0]
        finally:
            with self._lock:
                self._waiting.pop(rid, None)
        if not reply.ok:
            raise PeerError(f"{node}: {reply.error}")
        return reply.result

    def deliver(self, reply: ApiReply) -> bool:
        """An ``ApiReply`` from a member: True if it answered one of our calls (late ones are dropped)."""
        with self._lock:
            slot = self._waiting.get(reply.request_id)
        if slot is None:
            return False
        slot[1].append(reply)
        slot[0].set()
        return True


class VmIncoming:
    """The ``vm_incoming`` operation of one node (run by its API actor, for members only)."""

    def __init__(self, ctx: NodeContext, host: str, wake_lrm: Callable[[], None] = lambda: None) -> None:
        self.ctx = ctx
        self.host = host  # the migration stream's address: the node's bus host
        self.env = LiveEnv(ctx, "api")
        self.wake_lrm = wake_lrm
        self.standbys: StandbyKeeper | None = None  # started by warm_up
        self._closed = False

    def warm_up(self) -> None:
        """In the background: what a ``listen`` of this node's ``vm:`` services needs, ready now.

        (The default guest's kernel and initramfs: looking them up reads a few MB, 40-60 ms,
        which a migration's target would otherwise pay before its QEMU could start.) Then the
        node's warm standby QEMUs (agents/vmstandby.py), unless ``PYHA_VM_STANDBY=0``."""
        standby_env = LiveEnv(self.ctx, "vm")  # the keeper's thread reads the config with its own

        def services() -> Mapping[str, ResourceConfig] | None:
            try:
                # a cluster without a vm: section (most at scale: issue #15) costs no parse of the
                # whole resources.cfg on every node at each change (its sections start "vm: <id>")
                record = self.ctx.store.read(rec.RESOURCES_CFG)
                if record is None or b"vm:" not in record.data:
                    return {}
                return standby_env.read_service_config().services
            except (AdminError, HaError, OSError):
                return None

        def warm() -> None:
            try:
                plugin = self._plugin()
            except AdminError:
                return
            for sid, conf in (services() or {}).items():
                if sid.startswith("vm:"):
                    plugin.warm(conf)
            limit = standby_limit()
            if limit > 0 and not self._closed:
                self.standbys = StandbyKeeper(plugin, standby_env, services, limit)
                plugin.standby_poke = self.standbys.poke
                self.standbys.start()

        threading.Thread(target=warm, name=f"{self.ctx.node}/vm-warm", daemon=True).start()

    def changed(self) -> None:
        """The config or a service's location changed: the standbys may have to follow."""
        if self.standbys is not None:
            self.standbys.poke()

    def close(self) -> None:
        """The node stops: its standby QEMUs go with it (a node that starts again launches them)."""
        self._closed = True
        if self.standbys is not None:
            self.standbys.close(kill=True)

    def _arm(self, sid: str, deadline: float) -> None:
        """Pin ``sid`` so that this node's LRM holds its agent lease and watchdog; wait until it does.

        SAFETY: a node runs a guest only under its own lease and watchdog, or the master
        could fence it "at once" (it held no lease) and recover the guest elsewhere while
        it still runs here (actors/lrm.py ``PacedLRM._pinned``).
        """
        self.ctx.incoming[sid] = time.monotonic() + deadline
        self.wake_lrm()
        if not self.ctx.lrm_active.wait(LRM_ACTIVE_WAIT):
            self.ctx.incoming.pop(sid, None)
            raise AdminError(
                f"node '{self.ctx.node}': its LRM holds no agent lease and watchdog (after"
                f" {LRM_ACTIVE_WAIT:g}s): not taking the guest",
                ExitCode.REFUSED,
            )

    def _plugin(self) -> VmPlugin:
        plugin: object = self.ctx.plugins.get("vm")
        agent = getattr(plugin, "agent", plugin)  # the MovingPlugin's wrapped agent
        if not isinstance(agent, VmPlugin):
            raise AdminError("this node runs no vm agent", ExitCode.REFUSED)
        return agent

    def __call__(self, sender: str, args: Mapping[str, Any]) -> dict[str, Any]:
        sid, action = args.get("sid"), args.get("action")
        if not isinstance(sid, str) or not sid.startswith("vm:") or action not in VM_ACTIONS:
            want = "|".join(VM_ACTIONS)
            raise AdminError(f"vm_incoming: needs sid 'vm:...' and action {want}", ExitCode.USAGE)
        phases = Phases()
        plugin = self._plugin()
        conf = self.env.read_service_config().services.get(sid)
        if conf is None:
            raise AdminError(f"no such resource '{sid}'", ExitCode.NOT_FOUND)
        node = self.ctx.node
        try:
            if action == "abort":  # always allowed: it only ever kills a copy that never ran
                killed = plugin.incoming_abort(self.env, sid, conf)
                self.ctx.incoming.pop(sid, None)
                return {"killed": killed}
            if self.ctx.fenced.is_set():
                # SAFETY: a node that is fencing itself starts nothing
                raise AdminError(f"node '{node}' is fencing itself", ExitCode.REFUSED)
            where, _ = rec.read_location(self.ctx.store, sid)
            where = where or conf.node
            phases.mark("records")  # the service's config and location, read here
            if action == "listen":
                if where != sender:
                    raise AdminError(f"'{sid}' is on node '{where}', not on '{sender}'", ExitCode.REFUSED)
                self._arm(sid, plugin.incoming_deadline + PIN_MARGIN)
                phases.mark("arm")
                try:
                    uri = plugin.incoming_listen(self.env, sid, conf, self.host, phases)
                    return {"uri": uri, "phases": phases.ms, "span": phases.span()}
                except MigrationError:
                    self.ctx.incoming.pop(sid, None)
                    raise
            # SAFETY: the guest runs here only once its location names this node (the source's commit)
            if where != node:
                raise AdminError(f"'{sid}' is on node '{where}': not resuming it here", ExitCode.REFUSED)
            # SAFETY: and only under this node's lease and watchdog (see _arm); refused, the guest
            # stays paused here and the master's start boots it afresh (the incoming marker)
            if sid not in self.ctx.incoming or not self.ctx.lrm_active.is_set():
                raise AdminError(
                    f"node '{node}': its LRM holds no agent lease and watchdog: not resuming '{sid}'",
                    ExitCode.REFUSED,
                )
            plugin.incoming_resume(self.env, sid, conf, phases)  # marks connect, check, cont
            return {"resumed": True, "phases": phases.ms, "span": phases.span()}
        except MigrationError as e:
            raise AdminError(str(e), ExitCode.FAILED) from e
