"""The CRM daemon state machine (BEHAVIOUR.md §3.1)."""

from __future__ import annotations

from ha.constants import REFERENCE_TIMING, Timing
from ha.daemon import Daemon, lock_with_retries
from ha.env import Env
from ha.errors import HaError, LockLost
from ha.manager import Manager
from ha.records import ManagerStatus
from ha.states import CRM_TRANSITIONS, CrmState, NodeState
from ha.tools import count_fenced_services


class CRM(Daemon):
    """One node's cluster resource manager; acts as master while holding the manager lock."""

    TRANSITIONS = CRM_TRANSITIONS
    WHAT = "CRM state"

    def __init__(self, env: Env, timing: Timing = REFERENCE_TIMING) -> None:
        super().__init__(env, timing)
        self.manager: Manager | None = None
        self.shutdown_request = False
        self.disarmed = False  # the CRM released its watchdog because HA is fully disarmed
        self.idle_rounds = 0
        self.set_local_status(CrmState.WAIT_FOR_QUORUM)

    # -- state ------------------------------------------------------------

    def set_local_status(self, new: CrmState) -> None:
        """Change state; entering master creates the Manager, leaving it drops it (§3.1.1)."""
        if self.change_state(new):
            self.manager = Manager(self.env, self.timing) if new == CrmState.MASTER else None

    def request_shutdown(self) -> None:
        if not self.shutdown_request:
            self.env.log("info", "server received shutdown request")
        self.shutdown_request = True

    # -- predicates (§3.1.2) ------------------------------------------------

    def _read_ms(self) -> ManagerStatus | None:
        try:
            return self.env.read_manager_status()
        except HaError as e:
            self.env.log("err", f"could not read manager status: {e}")
            return None

    def healthy(self) -> ManagerStatus | None:
        env = self.env
        if not env.quorate() or not self.cluster_state_update_ok:
            return None
        ms = self._read_ms()
        if ms is None:
            return None
        # a node with services to be fenced must never become master
        if count_fenced_services(ms.service_status, env.nodename()):
            return None
        return ms

    def can_get_active(self, allow_no_service: bool = False) -> bool:
        ms = self.healthy()
        if ms is None:
            return False
        if allow_no_service:
            return True
        try:
            conf = self.env.read_service_config()
        except HaError as e:
            self.env.log("err", f"could not read service config: {e}")
            return False
        if len(conf):
            return True
        master = ms.master_node
        if (
            master is not None
            and ms.node_status.get(master) == NodeState.ONLINE
            and master != self.env.nodename()
        ):
            return False
        node_request = ms.node_request or {}
        for node, state in ms.node_status.items():
            if state == NodeState.MAINTENANCE and not node_request.get(node, {}).get("maintenance"):
                return True
        if self.env.any_pending_crm_command():
            return True
        return bool(ms.service_status) or ms.disarm is not None

    def allowed_to_get_idle(self) -> bool:
        ms = self.healthy()
        if ms is None or ms.disarm is not None:
            return False
        try:
            conf = self.env.read_service_config()
        except HaError:
            return False
        return not len(conf) and not ms.service_status

    # -- lock + watchdog (§3.1.3, §3.1.5) -----------------------------------

    def get_protected_ha_manager_lock(self) -> bool:
        env = self.env
        if not lock_with_retries(env, env.get_ha_manager_lock, self.timing.lock_max_seconds):
            return False
        if self.watchdog is not None:
            self.renew_watchdog()
        elif not self.disarmed:
            ms = self._read_ms()
            if ms is not None and ms.disarm is not None and ms.disarm.get("state") == "disarmed":
                env.log("info", "taking over as disarmed master, skipping watchdog")
                self.disarmed = True
            else:
                self.renew_watchdog()
        return True

    # -- iteration (§3.1.4) ----------------------------------------------------

    def work(self) -> bool:
        env = self.env
        state = self.state
        if state == CrmState.WAIT_FOR_QUORUM:
            if self.can_get_active():
                if self.get_protected_ha_manager_lock():
                    self.set_local_status(CrmState.MASTER)
                else:
                    self.set_local_status(CrmState.SLAVE)
        elif state == CrmState.SLAVE:
            if self.can_get_active():
                if self.get_protected_ha_manager_lock():
                    self.set_local_status(CrmState.MASTER)
            else:
                self.set_local_status(CrmState.WAIT_FOR_QUORUM)
        elif state == CrmState.LOST_MANAGER_LOCK:
            if self.can_get_active(True) and self.get_protected_ha_manager_lock():
                self.set_local_status(CrmState.MASTER)
        elif state == CrmState.MASTER:
            if not self.get_protected_ha_manager_lock():
                self.set_local_status(CrmState.LOST_MANAGER_LOCK)
            elif self.allowed_to_get_idle():
                self.idle_rounds += 1
                if self.idle_rounds > self.timing.crm_max_idle_rounds:
                    self.idle_rounds = 0
                    rounds = self.timing.crm_max_idle_rounds
                    env.log("info", f"cluster had no service configured for {rounds} rounds, going idle.")
                    # safety: no services, nothing to protect
                    env.release_ha_manager_lock()
                    self.give_up_watchdog()
                    self.set_local_status(CrmState.WAIT_FOR_QUORUM)
            else:
                self.idle_rounds = 0

        state = self.state
        if state == CrmState.WAIT_FOR_QUORUM:
            if self.shutdown_request:
                return False
            env.sleep(self.timing.wait_sleep)
        elif state == CrmState.MASTER:
            start = env.get_time()
            if self.shutdown_request:
                # release the lock so another CRM can take over without waiting for it to expire
                self.give_up_watchdog()
                env.log("info", "voluntary release CRM lock")
                if not env.release_ha_manager_lock():
                    env.log("notice", "CRM lock release failed, let the lock timeout")
                return False
            if not self.cluster_state_update_ok:
                env.log("notice", "temporary inconsistent cluster state (cfs restart?), skip round")
            else:
                try:
                    assert self.manager is not None
                    self.manager.manage()
                    if self.manager.fully_disarmed and not self.disarmed:
                        env.log("info", "HA stack fully disarmed, releasing CRM watchdog")
                        self.give_up_watchdog()
                        self.disarmed = True
                    elif self.disarmed and not self.manager.fully_disarmed:
                        env.log("info", "re-arming HA stack")
                        self.disarmed = False  # the next lock renewal opens the watchdog again
                except LockLost as e:
                    # SAFETY: this master's picture of manager_status is no longer the record's
                    # (its lease is gone, or another writer changed the record). It stops
                    # acting as master; a later take-over starts a new Manager from the record.
                    env.log("err", f"lost the manager status - {e}")
                    self.set_local_status(CrmState.LOST_MANAGER_LOCK)
                except (HaError, ValueError, KeyError) as e:
                    env.log("err", f"got unexpected error - {e}")
            env.sleep_until(start + self.timing.crm_loop)
        elif state == CrmState.LOST_MANAGER_LOCK:
            self.give_up_watchdog()
            if self.shutdown_request:
                return False
            self.set_local_status(CrmState.WAIT_FOR_QUORUM)
        elif state == CrmState.SLAVE:
            if self.shutdown_request:
                return False
        return True
