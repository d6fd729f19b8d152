"""Randomised safety and liveness testing of the simulated HA stack (``ha-sim fuzz``).

A *case* is a random cluster (3-7 nodes, up to 50 ``vm``/``ct`` services, HA groups,
node-affinity rules, a shutdown policy; the ``large`` profile: 20-50 nodes with 2-10
services each, run in the simulator's scale mode) plus a schedule of command batches. The
schedule is generated *lazily*, at the moment the run loop takes the next batch, so
each command is valid for the cluster's current state (no ``power on`` of a node
that is shutting down, ...). The batches actually applied are recorded, so a case
replays deterministically as a plain reference-format scenario.

After the schedule the cluster is healed (all nodes powered on, network on,
daemons started, maintenance cleared) and must converge within
:data:`LIVENESS_BOUND` virtual seconds.

The modules, one idea each: :mod:`sim.fuzz.generate` (the cluster of a seed),
:mod:`sim.fuzz.commands` (the command table and the schedule generator),
:mod:`sim.fuzz.heal` (the heal), :mod:`sim.fuzz.invariants` (the checks and the
Checker) and :mod:`sim.fuzz.driver` (one run, many runs).

Invariants (exact formulations and why they are sound: docs/fuzzing.md):

``single-location``        a service is never marked running on two nodes;
``single-master``          every manager_status write is made by the current, unexpired
                           holder of ``ha_manager_lock``;
``fence-before-recovery``  fencing (the master taking a node's agent lock) happens only when
                           none of the services to be recovered still runs there, a service
                           leaves ``fence`` only under that lock, and a service's configured
                           node changes only when it does not run on the old node;
``start-under-lock``       a node starts a guest only while holding its own unexpired agent lock;
``announce``               what the nodes would announce on the bus (ha/announce.py): the master
                           announces every changed request exactly once and no re-check; every
                           new LRM result goes to the master unless it answers a re-check;
``liveness``               after healing, every ``started`` service runs on exactly its
                           configured node and is ``started``; ``stopped``/``disabled`` ones
                           run nowhere and are ``stopped``;
``no-fatal-error``         the simulation never ends with ``exit simulation - ...``;
``crash``                  no Python exception escapes the simulator.
"""

from sim.fuzz.commands import COMMANDS, DELAY_BUDGET, CommandKind, ScheduleGenerator, shutdown_pending
from sim.fuzz.driver import LIVENESS_BOUND, FuzzSummary, RunResult, fuzz, fuzz_one, run_case
from sim.fuzz.generate import PROFILES, SERVICE_STATES, Case, GroupSpec, RuleSpec, generate_case
from sim.fuzz.heal import STUCK_SHUTDOWN, Healer, cluster_healthy
from sim.fuzz.invariants import (
    ANNOUNCE,
    CRASH,
    FENCE_BEFORE_RECOVERY,
    INVARIANTS,
    KNOWN_LIMITATIONS,
    LIVENESS,
    NO_FATAL_ERROR,
    SINGLE_LOCATION,
    SINGLE_MASTER,
    START_UNDER_LOCK,
    Checker,
    Told,
    Violation,
    ViolationFound,
    agent_lock,
    check_announcement,
    check_fence_ack,
    check_fence_exit,
    check_liveness,
    check_location_change,
    check_manager_write,
    check_report,
    check_single_location,
    check_starts,
    requested_state,
)

__all__ = [
    "ANNOUNCE",
    "COMMANDS",
    "CRASH",
    "DELAY_BUDGET",
    "FENCE_BEFORE_RECOVERY",
    "INVARIANTS",
    "KNOWN_LIMITATIONS",
    "LIVENESS",
    "LIVENESS_BOUND",
    "NO_FATAL_ERROR",
    "PROFILES",
    "SERVICE_STATES",
    "SINGLE_LOCATION",
    "SINGLE_MASTER",
    "START_UNDER_LOCK",
    "STUCK_SHUTDOWN",
    "Case",
    "Checker",
    "CommandKind",
    "FuzzSummary",
    "GroupSpec",
    "Healer",
    "RuleSpec",
    "RunResult",
    "ScheduleGenerator",
    "Told",
    "Violation",
    "ViolationFound",
    "agent_lock",
    "check_announcement",
    "check_fence_ack",
    "check_fence_exit",
    "check_liveness",
    "check_location_change",
    "check_manager_write",
    "check_report",
    "check_single_location",
    "check_starts",
    "cluster_healthy",
    "fuzz",
    "fuzz_one",
    "generate_case",
    "requested_state",
    "run_case",
    "shutdown_pending",
]
