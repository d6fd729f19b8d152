"""Constants, timings and exit codes of the reference (BEHAVIOUR.md §2)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

# §2.1 timings (seconds). The live runtime scales its own timings (see docs);
# these are the reference values used by the core's decisions and the simulator.
LOCK_TIMEOUT = 120
WATCHDOG_TIMEOUT = 60
FENCE_DELAY = 60
GONE_NODE_DELETE_DELAY = 3600
CRM_LOOP_TIME = 10
LRM_LOOP_TIME = 10
LRM_MAINTENANCE_LOOP_TIME = 5
WAIT_SLEEP = 5
LOCK_MAX_TRIES = 6  # "try max 5 time" after the first: 6 attempts in all
LOCK_MAX_SECONDS = 5
CRM_MAX_IDLE_ROUNDS = 90
LRM_MAX_IDLE_ROUNDS = 60
LRM_RESTART_GIVE_UP = 90
WORKER_SLOT_BUDGET = 8
DEFAULT_MAX_WORKERS = 4
DEFAULT_MAX_RESTART = 1
DEFAULT_MAX_RELOCATE = 1
DEFAULT_SHUTDOWN_POLICY = "conditional"
GROUP_MIGRATION_FIRST_ROUND = 3
GROUP_MIGRATION_RETRY_ROUNDS = 6
GROUP_MIGRATION_MIN_VERSION = "9.0.0~16"


@dataclass(frozen=True, slots=True)
class Timing:
    """The timings the core's decisions depend on. Defaults are the reference's (§2.1).

    The simulator always uses the reference values (its logs depend on them);
    the live runtime passes shorter ones for failover in seconds (its lease
    and watchdog settings are validated against these at start).
    """

    fence_delay: float = FENCE_DELAY
    gone_delete_delay: float = GONE_NODE_DELETE_DELAY
    crm_loop: float = CRM_LOOP_TIME
    lrm_loop: float = LRM_LOOP_TIME
    lrm_maintenance_loop: float = LRM_MAINTENANCE_LOOP_TIME
    wait_sleep: float = WAIT_SLEEP
    lock_max_seconds: float = LOCK_MAX_SECONDS
    lrm_restart_give_up: float = LRM_RESTART_GIVE_UP
    worker_slot_budget: float = WORKER_SLOT_BUDGET
    crm_max_idle_rounds: int = CRM_MAX_IDLE_ROUNDS
    lrm_max_idle_rounds: int = LRM_MAX_IDLE_ROUNDS


REFERENCE_TIMING = Timing()


class ExitCode(IntEnum):
    """Resource agent exit codes (§2.2)."""

    FAILED_TO_EXECUTE = -1
    SUCCESS = 0
    ERROR = 1
    ETRY_AGAIN = 2
    EWRONG_NODE = 3
    EUNKNOWN_SERVICE_TYPE = 4
    EUNKNOWN_COMMAND = 5
    EINVALID_PARAMETER = 6
    EUNKNOWN_SERVICE = 7
    IGNORED = 8
