"""One fuzz run: feed the simulator its schedule, then the heal, then check liveness; and many runs."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from random import Random
from typing import SupportsIndex

from ha.errors import HaError
from sim.fuzz.commands import ScheduleGenerator
from sim.fuzz.generate import Case, generate_case
from sim.fuzz.heal import Healer, cluster_healthy
from sim.fuzz.invariants import (
    CRASH,
    KNOWN_LIMITATIONS,
    LIVENESS,
    NO_FATAL_ERROR,
    Checker,
    Finished,
    Violation,
    ViolationFound,
    check_liveness,
)
from sim.hardware import Hardware
from sim.runner import Observer, RunOptions, Simulation

#: virtual seconds between the first heal batch and the liveness check
LIVENESS_BOUND = 1500


@dataclass
class RunResult:
    case: Case
    violation: Violation | None
    steps: int
    virtual_time: int
    batches: list[list[str]]
    heal_index: int
    converged_after: int | None
    log: list[str]
    limitation: str | None = None
    stats: Counter[str] = field(default_factory=Counter)


class _Driver:
    """Feeds the run loop its batches: schedule (static or generated), then heal, then the check."""

    def __init__(
        self,
        case: Case,
        generator: ScheduleGenerator | None,
        n_random: int,
        heal_index: int | None,
    ) -> None:
        self.case = case
        self.generator = generator
        self.n_random = n_random
        self.heal_index = heal_index if heal_index is not None else len(case.schedule) + n_random
        self.healer = Healer()
        self.sim: Simulation | None = None
        self.checker: Checker | None = None
        self.index = 0
        self.record: list[list[str]] = []
        self.heal_start: int | None = None
        self.converged_since: int | None = None

    def next_batch(self) -> list[str]:
        assert self.sim is not None
        hw = self.sim.hw
        k = self.index
        self.index += 1
        if k == self.heal_index:
            self.heal_start = hw.time
        if self.heal_start is not None:
            ok = cluster_healthy(hw) and not check_liveness(
                hw.service_raw, hw.running, hw.manager_status.service_status
            )
            if not ok:
                self.converged_since = None
            elif self.converged_since is None:
                self.converged_since = hw.time
            if hw.time >= self.heal_start + LIVENESS_BOUND:
                errors = check_liveness(hw.service_raw, hw.running, hw.manager_status.service_status)
                if not cluster_healthy(hw):
                    errors.insert(0, "the cluster could not be healed (a node still down or shutting down)")
                if errors:
                    raise ViolationFound(
                        Violation(
                            LIVENESS, f"{LIVENESS_BOUND} s after healing began: " + "; ".join(errors), hw.time
                        )
                    )
                raise Finished
        if k < len(self.case.schedule):
            batch = list(self.case.schedule[k])
        elif k < self.heal_index and self.generator is not None:
            batch = self.generator.first_batch(self.case.nodes) if k == 0 else self.generator.batch(self.sim)
        else:
            batch = self.healer.batch(hw)
        self.record.append(batch)
        if self.checker is not None:
            self.checker.batch_applied = True  # the next step is this batch (not a daemon's work)
        return batch


class _Feed(list[list[str]]):
    """Stands in for the runner's cmdlist: every batch is asked from the driver when it is due."""

    def __init__(self, driver: _Driver) -> None:
        super().__init__()
        self.driver = driver

    def __bool__(self) -> bool:
        return True

    def pop(self, index: SupportsIndex = -1) -> list[str]:
        return self.driver.next_batch()


def run_case(
    case: Case,
    *,
    generate: bool = False,
    n_random: int = 0,
    heal_index: int | None = None,
    strict: bool = False,
) -> RunResult:
    """Run ``case``; with ``generate`` its schedule is extended by ``n_random`` generated batches."""
    generator = ScheduleGenerator(Random(case.seed * 7919 + 1), case) if generate else None
    driver = _Driver(case, generator, n_random if generate else 0, heal_index)
    holder: list[Hardware] = []
    checker = Checker(lambda: holder[0])
    try:
        sim = Simulation(
            case.scenario(),
            RunOptions(scale=case.scale),
            out=checker.on_line,
            observer=Observer(checker.after_step, checker.on_announce, checker.on_report),
        )
    except HaError as e:  # the simulator refuses the generated world: a generator bug
        rejected = Violation(NO_FATAL_ERROR, f"scenario rejected: {e}", 0)
        return RunResult(case, rejected, 0, 0, [], driver.heal_index, None, [])
    holder.append(sim.hw)
    driver.sim = sim
    driver.checker = checker
    sim.cmdlist = _Feed(driver)
    violation: Violation | None = None
    try:
        sim.run()
    except Finished:
        pass
    except ViolationFound as e:
        violation = e.violation
    except Exception as e:  # a bug in the simulated stack: report it like a violation
        violation = Violation(CRASH, f"{type(e).__name__}: {e}", sim.hw.time)
    else:
        last = sim.hw.lines[-1] if sim.hw.lines else ""
        reason = last.split("exit simulation - ", 1)[-1].strip() if "exit simulation - " in last else last
        violation = Violation(NO_FATAL_ERROR, f"simulation ended: {reason}", sim.hw.time)
    limitation = None
    if violation is not None and violation.invariant == NO_FATAL_ERROR and not strict:
        if any(known in violation.message for known in KNOWN_LIMITATIONS):
            limitation, violation = violation.message, None
    converged = None
    if driver.heal_start is not None and driver.converged_since is not None:
        converged = driver.converged_since - driver.heal_start
    schedule_len = min(driver.heal_index, len(driver.record))
    recorded = replace(case, schedule=[list(b) for b in driver.record[:schedule_len]])
    return RunResult(
        case=recorded,
        violation=violation,
        steps=checker.steps,
        virtual_time=sim.hw.time,
        batches=driver.record,
        heal_index=driver.heal_index,
        converged_after=converged,
        log=sim.hw.lines,
        limitation=limitation,
        stats=checker.stats,
    )


def fuzz_one(seed: int, strict: bool = False, profile: str = "small") -> RunResult:
    """Generate and run the case of ``seed`` (``profile``: see :data:`sim.fuzz.generate.PROFILES`)."""
    case = generate_case(seed, profile)
    n_random = Random(seed * 104729 + 7).randint(3, 25)
    return run_case(case, generate=True, n_random=n_random + 1, strict=strict)


@dataclass
class FuzzSummary:
    runs: int = 0
    steps: int = 0
    virtual_seconds: int = 0
    wall_seconds: float = 0.0
    max_converge: int = 0
    failures: list[RunResult] = field(default_factory=list)
    inconclusive: list[int] = field(default_factory=list)
    stats: Counter[str] = field(default_factory=Counter)


def fuzz(
    seed: int,
    runs: int,
    on_failure: Callable[[RunResult], bool] | None = None,
    strict: bool = False,
    profile: str = "small",
) -> FuzzSummary:
    """Run seeds ``seed .. seed+runs-1``; ``on_failure`` returns False to stop early."""
    summary = FuzzSummary()
    start = time.perf_counter()
    for s in range(seed, seed + runs):
        result = fuzz_one(s, strict, profile)
        summary.runs += 1
        if result.limitation is not None:
            summary.inconclusive.append(s)
        summary.steps += result.steps
        summary.virtual_seconds += result.virtual_time
        summary.stats.update(result.stats)
        if result.converged_after is not None:
            summary.max_converge = max(summary.max_converge, result.converged_after)
        if result.violation is not None:
            summary.failures.append(result)
            if on_failure is not None and not on_failure(result):
                break
    summary.wall_seconds = time.perf_counter() - start
    return summary
