"""The fuzzer (sim/fuzz/, ``ha-sim fuzz``): seeds pass, every checker can fail, the shrinker works.

Mutants (monkeypatched faults in the simulated stack) prove the checks catch real
safety bugs end to end, not only hand-made states.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from pathlib import Path
from random import Random

import pytest
from click.testing import CliRunner

import sim.env
import sim.hardware
from ha.announce import Announcement, Announcer, Command, ResultMessage, ResultReport, request_of
from ha.crm import CRM
from ha.manager import Manager
from ha.records import LrmResult, ManagerStatus, ServiceData
from sim.cli import main
from sim.env import SimEnv
from sim.fuzz import (
    ANNOUNCE,
    FENCE_BEFORE_RECOVERY,
    LIVENESS,
    NO_FATAL_ERROR,
    SINGLE_LOCATION,
    SINGLE_MASTER,
    START_UNDER_LOCK,
    Case,
    Checker,
    RunResult,
    Told,
    ViolationFound,
    check_announcement,
    check_fence_ack,
    check_fence_exit,
    check_liveness,
    check_location_change,
    check_manager_write,
    check_report,
    check_single_location,
    check_starts,
    fuzz,
    fuzz_one,
    generate_case,
    run_case,
)
from sim.fuzz.commands import Pick, ScheduleGenerator, _config_readable, _corrupt
from sim.fuzz_shrink import load_case, replay_folder, shrink, write_scenario
from sim.hardware import Hardware
from sim.runner import RunOptions, Simulation

SEEDS = 200
CHUNK = 25


# -- the seeds ----------------------------------------------------------------------------------


@pytest.mark.parametrize("first", range(1, SEEDS + 1, CHUNK), ids=lambda s: f"seeds-{s}-{s + CHUNK - 1}")
def test_seeds_hold_all_invariants(first: int) -> None:
    summary = fuzz(first, CHUNK)
    msgs = [
        f"seed {r.case.seed}: {r.violation} (ha-sim fuzz --seed {r.case.seed} --runs 1)"
        for r in summary.failures
    ]
    assert not msgs, "\n".join(msgs)
    assert summary.runs == CHUNK


def test_schedules_exercise_fencing_recovery_and_moves() -> None:
    stats: Counter[str] = Counter()
    for seed in range(1, 41):
        stats.update(fuzz_one(seed).stats)
    for key in (
        "fencings",
        "recoveries",
        "moves",
        "manager writes",
        "commands announced",
        "re-checks not announced",
        "results announced",
        "re-check answers held",
    ):
        assert stats[key] > 0, stats


def test_generation_is_deterministic_and_replays() -> None:
    a, b = fuzz_one(7), fuzz_one(7)
    assert a.log == b.log and a.batches == b.batches
    # the recorded schedule replays to the same log (the heal is regenerated identically)
    again = run_case(a.case)
    assert again.batches == a.batches
    assert again.log == a.log


def test_generated_clusters_stay_within_reference_limits() -> None:
    for seed in range(1, 200):
        case = generate_case(seed)
        assert 3 <= len(case.hardware) <= 7
        assert 1 <= len(case.services) <= 50
        assert all(sid.split(":")[0] in ("vm", "ct") for sid in case.services)
        assert not case.scale and case == generate_case(seed, "small")


# -- the large profile (20-50 nodes, scale mode; issue #15) -----------------------------------------

#: two seeds of the large profile that run in about a second each
LARGE_SEEDS = (1, 3)


def test_large_profile_clusters() -> None:
    for seed in range(1, 60):
        case = generate_case(seed, "large")
        n = len(case.hardware)
        assert case.scale and 20 <= n <= 50
        assert 2 * n <= len(case.services) <= 10 * n
    with pytest.raises(ValueError, match="unknown fuzz profile"):
        generate_case(1, "huge")


def test_large_profile_holds_all_invariants_in_scale_mode() -> None:
    stats: Counter[str] = Counter()
    for seed in LARGE_SEEDS:
        result = fuzz_one(seed, profile="large")
        assert result.violation is None, f"seed {seed}: {result.violation} (ha-sim fuzz --profile large)"
        assert result.limitation is None
        assert result.case.scale and result.converged_after is not None
        stats.update(result.stats)
    for key in ("fencings", "recoveries", "moves", "starts"):
        assert stats[key] > 0, stats


def test_large_profile_catches_an_lrm_starting_without_its_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The checks work in scale mode too (the mutant of test_mutant_lrm_without_lock_is_caught)."""
    original = SimEnv.get_ha_agent_lock

    def fake(self: SimEnv, node: str | None = None) -> bool:
        return True if self.daemon == "lrm" else original(self, node)

    monkeypatch.setattr(SimEnv, "get_ha_agent_lock", fake)
    result = fuzz_one(LARGE_SEEDS[0], profile="large")
    assert result.violation is not None and result.violation.invariant == START_UNDER_LOCK


def test_large_profile_generates_no_config_edit_after_a_corruption_in_the_batch() -> None:
    """The rule 'no administrator edits while resources.cfg is corrupt' also holds inside a batch
    in the large profile (large seed 209: a delete after the corruption, the LRM then migrated
    the deleted service kept from its last good reading). The small profile's schedules stay as
    they were."""
    case = generate_case(1, "large")
    sim = Simulation(case.scenario(), RunOptions(scale=True))
    pick = Pick(ScheduleGenerator(Random(1), case), sim)
    assert _config_readable(pick, "")
    assert (_corrupt(pick, "") or "").startswith("config resources.cfg corrupt ")
    assert not _config_readable(pick, "")
    small = Pick(ScheduleGenerator(Random(1), generate_case(1)), sim)
    assert (_corrupt(small, "") or "").startswith("config resources.cfg corrupt ")
    assert _config_readable(small, "")
    assert fuzz_one(209, profile="large").violation is None


def test_watchdog_race_cannot_happen_in_scale_mode() -> None:
    """Scale mode checks the watchdogs at the new instant before any daemon runs (sim/runner.py):
    the sequential loop's 'watchdog expired' limitation (WATCHDOG_RACE below) does not occur."""
    result = run_case(replace(WATCHDOG_RACE, scale=True), strict=True)
    assert result.violation is None and result.limitation is None


def test_large_case_folder_keeps_scale_mode(tmp_path: Path) -> None:
    result = run_case(replace(WATCHDOG_RACE, scale=True))
    folder = write_scenario(result, tmp_path / "s")
    assert (folder / "SCALE").exists() and "ha-sim run --scale" in (folder / "README").read_text()
    case, _ = load_case(folder)
    assert case.scale
    assert replay_folder(folder).log == result.log
    # the same case without scale mode: the mark goes, the reference's run loop replays it
    small = write_scenario(run_case(WATCHDOG_RACE), tmp_path / "s")
    assert not (small / "SCALE").exists() and not load_case(small)[0].scale
    assert replay_folder(small).log != result.log


# -- each checker fails on a hand-made violating state ------------------------------------------------


def sd(state: str, node: str) -> ServiceData:
    return ServiceData(state=state, node=node)


def test_single_location() -> None:
    assert check_single_location({"node1": {"vm:1": 1}, "node2": {"vm:1": 0, "vm:2": 1}}) == []
    errors = check_single_location({"node1": {"vm:1": 1}, "node2": {"vm:1": 1}, "node3": {}})
    assert errors == ["service vm:1 runs on node1, node2"]


def test_start_under_lock() -> None:
    locks = {"ha_agent_node1_lock": ("node1", 100), "ha_agent_node2_lock": ("node3", 100)}
    assert check_starts({("node1", "vm:1")}, locks, 150) == []
    assert check_starts({("node1", "vm:1")}, locks, 300)  # lease expired
    assert check_starts({("node2", "vm:1")}, locks, 150)  # the master holds node2's lock (fenced)
    assert check_starts({("node4", "vm:1")}, locks, 150)  # nobody holds it


def test_single_master() -> None:
    ms = ManagerStatus(master_node="node2", timestamp=300)
    assert check_manager_write(ms, {"ha_manager_lock": ("node2", 290)}, "master") == []
    assert check_manager_write(ms, {"ha_manager_lock": ("node1", 290)}, "master")  # another node holds it
    assert check_manager_write(ms, {}, "master")  # nobody holds it
    assert check_manager_write(ms, {"ha_manager_lock": ("node2", 100)}, "master")  # expired lease
    assert check_manager_write(ms, {"ha_manager_lock": ("node2", 290)}, "slave")  # not acting as master


def test_fence_ack() -> None:
    locks = {"ha_agent_node3_lock": ("node1", 500)}
    ss = {"vm:1": sd("fence", "node3"), "vm:2": sd("freeze", "node3")}
    # node3 was reset (its table is empty) or runs only a frozen service: fine
    assert check_fence_ack("node3", "node1", locks, {"node3": {}}, ss) == []
    assert check_fence_ack("node3", "node1", locks, {"node3": {"vm:2": 1}}, ss) == []
    # node3 still runs a service about to be recovered
    assert check_fence_ack("node3", "node1", locks, {"node3": {"vm:1": 1}}, ss) == [
        "node1 fenced node3 while service vm:1 still runs there"
    ]
    # acknowledged without the node's agent lock
    assert check_fence_ack("node3", "node1", {"ha_agent_node3_lock": ("node3", 500)}, {}, ss)


def test_fence_exit() -> None:
    before = {"vm:1": sd("fence", "node3")}
    after = {"vm:1": sd("started", "node2")}
    assert check_fence_exit(before, after, "node1", {"ha_agent_node3_lock": ("node1", 500)}) == []
    assert check_fence_exit(before, after, "node1", {"ha_agent_node3_lock": ("node3", 500)})
    assert check_fence_exit(before, after, "node1", {})
    # still in fence, or gone from the status (deleted): nothing to check
    assert check_fence_exit(before, {"vm:1": sd("fence", "node3")}, "node1", {}) == []
    assert check_fence_exit(before, {}, "node1", {}) == []


def test_location_change() -> None:
    assert check_location_change({"vm:1": "node3"}, {"vm:1": "node2"}, {"node3": {}}) == []
    assert check_location_change({"vm:1": "node3"}, {"vm:1": "node2"}, {"node3": {"vm:1": 1}}) == [
        "service vm:1 moved from node3 to node2 while still running on node3"
    ]


def test_liveness() -> None:
    config = {
        "vm:1": {"node": "node1", "state": "started"},
        "vm:2": {"node": "node2", "state": "stopped"},
        "vm:3": {"node": "node2"},  # no state: disabled
        "vm:4": {"node": "node3", "state": "ignored"},
    }
    good_running = {"node1": {"vm:1": 1}, "node2": {"vm:2": 0}, "node3": {"vm:4": 1}}
    ss = {"vm:1": sd("started", "node1"), "vm:2": sd("stopped", "node2"), "vm:3": sd("stopped", "node2")}
    assert check_liveness(config, good_running, ss) == []
    assert check_liveness(config, {"node1": {}, "node2": {}}, ss)  # vm:1 not running
    assert check_liveness(config, {"node1": {"vm:1": 1}, "node2": {"vm:1": 1}}, ss)  # twice
    assert check_liveness(config, {"node1": {"vm:1": 1}, "node2": {"vm:3": 1}}, ss)  # disabled but running
    assert check_liveness(config, good_running, {**ss, "vm:1": sd("freeze", "node1")})
    assert check_liveness(config, good_running, {**ss, "vm:2": sd("request_stop", "node2")})


def _ms(**entries: ServiceData) -> ManagerStatus:
    return ManagerStatus(
        master_node="node1", service_status={k.replace("_", ":"): v for k, v in entries.items()}
    )


def _cmd(sid: str, s: ServiceData) -> Command:
    what = request_of(s)
    assert what is not None and s.uid is not None
    return Command(sid, s.uid, *what)


def test_announcement() -> None:
    told = Told()
    first = ServiceData(state="started", node="node2", uid="u1")
    assert check_announcement(told, _ms(vm_1=first), Announcement("node1", (_cmd("vm:1", first),))) == []
    recheck = ServiceData(state="started", node="node2", uid="u2")
    # the re-check is not announced: fine; announced: a violation
    assert (
        check_announcement(Told(dict(told.last), set(told.uids)), _ms(vm_1=recheck), Announcement("node1"))
        == []
    )
    errors = check_announcement(
        Told(dict(told.last), set(told.uids)),
        _ms(vm_1=recheck),
        Announcement("node1", (_cmd("vm:1", recheck),)),
    )
    assert errors == ["node1 announced a re-check of vm:1 (u2) to node2"]
    # a changed request must be announced, once
    stop = ServiceData(state="request_stop", node="node2", uid="u3")
    assert check_announcement(
        Told(dict(told.last), set(told.uids)), _ms(vm_1=stop), Announcement("node1")
    ) == ["node1 did not announce vm:1's request ('request_stop', 'node2', None, ()) (u3) to node2"]
    assert check_announcement(told, _ms(vm_1=first), Announcement("node1", (_cmd("vm:1", first),))) == [
        "node1 announced vm:1's request u1 twice"
    ]
    # a command manager_status does not ask for
    assert check_announcement(Told(), _ms(), Announcement("node1", (_cmd("vm:1", first),)))


def test_report() -> None:
    ms = _ms(vm_1=ServiceData(state="started", node="node2", uid="u1", running=True))
    ok = LrmResult("vm:1", "started", 0)
    assert check_report("node2", [("r1", ok)], ms, ResultReport("node2", held=("r1",))) == []
    assert check_report(
        "node2", [("r1", ok)], ms, ResultReport("node2", (ResultMessage("vm:1", "r1", 0, "node1"),))
    )
    failed = LrmResult("vm:1", "started", 1)
    sent = ResultReport("node2", (ResultMessage("vm:1", "r1", 1, "node1"),))
    assert check_report("node2", [("r1", failed)], ms, sent) == []
    assert check_report("node2", [("r1", failed)], ms, ResultReport("node2", held=("r1",)))  # held wrongly
    assert check_report("node2", [("r1", failed)], ms, ResultReport("node2"))  # lost
    wrong = ResultReport("node2", (ResultMessage("vm:1", "r1", 1, "node3"),))
    assert check_report("node2", [("r1", failed)], ms, wrong) == [
        "node2 sent result r1 to node3, the master is node1"
    ]


def test_checker_on_a_hardware_state() -> None:
    """The step observer itself, on a live Hardware whose running table was tampered with."""
    case = generate_case(3)
    hw = Hardware(case.scenario())
    checker = Checker(lambda: hw)
    checker.after_step(hw)
    sid = sorted(case.services)[0]
    hw.running["node1"][sid] = 1
    hw.running["node2"][sid] = 1
    with pytest.raises(ViolationFound, match=SINGLE_LOCATION) as info:
        checker.after_step(hw)
    assert info.value.violation.invariant == SINGLE_LOCATION


# -- mutants: real faults in the simulated stack are found --------------------------------------------


def _broken_watchdog(monkeypatch: pytest.MonkeyPatch) -> None:
    """Watchdogs never fire: an isolated node keeps running its services forever."""
    monkeypatch.setattr(Hardware, "watchdog_check", lambda self, node: True)


def _first_failure(seeds: range) -> RunResult:
    for seed in seeds:
        result = fuzz_one(seed)
        if result.violation is not None:
            return result
    raise AssertionError(f"no violation in seeds {seeds}")


def test_mutant_broken_watchdog_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    _broken_watchdog(monkeypatch)
    result = _first_failure(range(1, 40))
    assert result.violation is not None and result.violation.invariant == FENCE_BEFORE_RECOVERY


def test_mutant_short_lock_lease_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """A lock lifetime shorter than the watchdog timeout breaks fencing (§11.1 item 3)."""
    monkeypatch.setattr(sim.hardware, "LOCK_TIMEOUT", 30)
    result = _first_failure(range(1, 40))
    assert result.violation is not None and result.violation.invariant == FENCE_BEFORE_RECOVERY


def test_mutant_crm_ignoring_lost_lock_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    original = CRM.get_protected_ha_manager_lock

    def always_master(self: CRM) -> bool:
        original(self)
        if self.watchdog is None:
            self.watchdog = self.env.watchdog_open()
        return True

    monkeypatch.setattr(CRM, "get_protected_ha_manager_lock", always_master)
    result = _first_failure(range(1, 10))
    assert result.violation is not None and result.violation.invariant == SINGLE_MASTER


def test_mutant_lrm_without_lock_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """An LRM that believes it got its agent lock without taking it starts guests unprotected."""
    original = SimEnv.get_ha_agent_lock

    def fake(self: SimEnv, node: str | None = None) -> bool:
        return True if self.daemon == "lrm" else original(self, node)

    monkeypatch.setattr(SimEnv, "get_ha_agent_lock", fake)
    result = _first_failure(range(1, 10))
    assert result.violation is not None and result.violation.invariant == START_UNDER_LOCK


def test_mutant_never_unfreezing_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Manager, "next_state_freeze", lambda self, sid, cd, sd, res: None)
    result = _first_failure(range(1, 60))
    assert result.violation is not None and result.violation.invariant == LIVENESS


def test_mutant_announcing_rechecks_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """A master that sends every new UID, re-checks included (the tight loop ha/announce.py avoids)."""
    original = Announcer.after_write

    def announce_all(self: Announcer, ms: ManagerStatus) -> Announcement:
        out = original(self, ms)
        extra = tuple(_cmd(sid, ms.service_status[sid]) for sid in out.rechecks)
        return Announcement(out.node, out.commands + extra, out.superseded)

    monkeypatch.setattr(Announcer, "after_write", announce_all)
    result = _first_failure(range(1, 5))
    assert result.violation is not None and result.violation.invariant == ANNOUNCE
    assert "announced a re-check" in result.violation.message


def test_mutant_not_waking_the_own_lrm_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    original = Announcer.after_write

    def remote_only(self: Announcer, ms: ManagerStatus) -> Announcement:
        out = original(self, ms)
        return Announcement(out.node, out.to_send(), out.superseded, out.rechecks)

    monkeypatch.setattr(Announcer, "after_write", remote_only)
    result = _first_failure(range(1, 5))
    assert result.violation is not None and result.violation.invariant == ANNOUNCE
    assert "did not announce" in result.violation.message


def test_mutant_holding_back_started_results_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """An LRM side that treats every successful start as a re-check's answer."""

    def hold_started(node: str, new: list[tuple[str, LrmResult]], ms: ManagerStatus | None) -> ResultReport:
        held = tuple(uid for uid, r in new if r.state == "started" and r.exit_code == 0)
        sent = tuple(
            ResultMessage(r.sid, uid, r.exit_code, ms.master_node if ms else None)
            for uid, r in new
            if uid not in held
        )
        return ResultReport(node, sent, held)

    monkeypatch.setattr(sim.env, "route_results", hold_started)
    result = _first_failure(range(1, 5))
    assert result.violation is not None and result.violation.invariant == ANNOUNCE
    assert "no re-check's answer" in result.violation.message


# -- shrinking and counterexample folders ------------------------------------------------------------


def test_shrinker_writes_a_runnable_folder_that_reproduces(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _broken_watchdog(monkeypatch)
    result = _first_failure(range(1, 40))
    assert result.violation is not None
    best, tries = shrink(result, budget_seconds=40)
    assert tries > 0
    assert best.violation is not None and best.violation.invariant == result.violation.invariant
    commands = sum(len(b) for b in best.case.schedule)
    assert commands <= sum(len(b) for b in result.case.schedule)
    assert len(best.case.services) <= len(result.case.services)

    folder = write_scenario(best, tmp_path / "counterexample", result.violation)
    for name in (
        "cmdlist",
        "hardware_status",
        "manager_status",
        "service_config",
        "datacenter.cfg",
        "README",
    ):
        assert (folder / name).exists(), name
    readme = (folder / "README").read_text()
    assert f"seed {result.case.seed}" in readme and result.violation.invariant in readme
    json.loads((folder / "cmdlist").read_text())

    # the plain simulator accepts the folder and runs it to its end
    run = CliRunner().invoke(main, ["run", "--quiet", str(folder), "--out", str(tmp_path / "status")])
    assert run.exit_code == 0, run.output
    log = (tmp_path / "status" / "log").read_text()
    assert log.startswith("info      0     hardware: starting simulation")
    assert "exit simulation - " in log.splitlines()[-1]

    # and replaying it under the checks reproduces the same violation (the fault is still injected)
    again = replay_folder(folder)
    assert again.violation is not None and again.violation.invariant == result.violation.invariant
    replay = CliRunner().invoke(main, ["fuzz", "--replay", str(folder)])
    assert replay.exit_code == 1 and result.violation.invariant in replay.output

    # without the fault the same scenario is fine
    monkeypatch.undo()
    assert replay_folder(folder).violation is None
    run = CliRunner().invoke(main, ["run", "--quiet", str(folder), "--out", str(tmp_path / "status2")])
    assert run.exit_code == 0, run.output
    assert (tmp_path / "status2" / "log").read_text().endswith("exit simulation - done\n")


def test_load_case_roundtrip(tmp_path: Path) -> None:
    result = fuzz_one(11)
    folder = write_scenario(result, tmp_path / "s")
    case, heal = load_case(folder)
    assert heal == result.heal_index
    assert case.services == result.case.services
    again = replay_folder(folder)
    assert again.violation is None
    assert again.log == result.log


# -- the simulator's watchdog-check limitation (docs/fuzzing.md) -------------------------------------------


WATCHDOG_RACE = Case(
    seed=1096,
    hardware={f"node{i}": {"power": "off", "network": "off"} for i in range(1, 7)},
    services={
        "ct:493": {"node": "node1", "state": "started"},
        "vm:614": {"node": "node5", "state": "started"},
    },
    datacenter={"ha": {"shutdown_policy": "migrate"}},
    schedule=[
        ["power node1 on", "power node2 on", "power node4 on", "power node5 on", "power node6 on"],
        ["service ct:4982 add node4", "crm node6 stop", "network node1 off"],
        [],
        ["shutdown node2"],
    ],
)


def test_watchdog_expired_race_is_inconclusive_unless_strict() -> None:
    lenient = run_case(WATCHDOG_RACE)
    assert lenient.violation is None and lenient.limitation is not None
    assert "watchdog expired" in lenient.limitation
    strict = run_case(WATCHDOG_RACE, strict=True)
    assert strict.violation is not None and strict.violation.invariant == NO_FATAL_ERROR


# -- the command line ------------------------------------------------------------------------------------


def test_cli_success_line() -> None:
    res = CliRunner().invoke(main, ["fuzz", "--seed", "5", "--runs", "3"])
    assert res.exit_code == 0, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("fuzz: 3 runs (seeds 5..7) all passed")
    assert "steps checked" in lines[0] and "virtual s simulated" in lines[0] and "s wall" in lines[0]


def test_cli_large_profile() -> None:
    res = CliRunner().invoke(
        main, ["fuzz", "--profile", "large", "--seed", str(LARGE_SEEDS[0]), "--runs", "1"]
    )
    assert res.exit_code == 0, res.output
    assert res.output.startswith(f"fuzz: 1 large runs (seeds {LARGE_SEEDS[0]}..{LARGE_SEEDS[0]}) all passed")


@pytest.mark.parametrize(
    "args",
    [
        ["--runs", "0"],
        ["--runs", "x"],
        ["--seed", "-1"],
        ["--bogus"],
        ["--replay", "/nonexistent/dir"],
        ["--profile", "huge"],
    ],
)
def test_cli_bad_options(args: list[str]) -> None:
    res = CliRunner().invoke(main, ["fuzz", *args])
    assert res.exit_code == 2
    out = res.output.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("ha-sim fuzz: "), res.output


def test_cli_failure_writes_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _broken_watchdog(monkeypatch)
    seed = _first_failure(range(1, 40)).case.seed
    res = CliRunner().invoke(
        main, ["fuzz", "--seed", str(seed), "--runs", "1", "--out", str(tmp_path), "--shrink-seconds", "5"]
    )
    assert res.exit_code == 1, res.output
    folders = list(tmp_path.iterdir())
    assert len(folders) == 1 and str(folders[0]) in res.output
    assert FENCE_BEFORE_RECOVERY in folders[0].name

