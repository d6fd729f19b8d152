"""Shrinking a failing fuzz case and writing it as a reference-format scenario folder.

The shrinker only accepts a smaller candidate when running it (schedule replayed
verbatim, heal regenerated for the candidate's own state) violates the *same*
invariant again; for ``no-fatal-error``/``crash`` the message must match too.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from sim.fuzz import (
    CRASH,
    LIVENESS_BOUND,
    NO_FATAL_ERROR,
    Case,
    GroupSpec,
    RuleSpec,
    RunResult,
    Violation,
    run_case,
)
from sim.scenario import load_scenario

HEAL_MARK = "fuzz-heal-batch:"
SEED_MARK = "fuzz-seed:"
# a scenario folder holding this file runs in scale mode (tests/test_scenarios.py, the large profile)
SCALE_MARK = "SCALE"


def same_failure(a: Violation, b: Violation) -> bool:
    if a.invariant != b.invariant:
        return False
    if a.invariant in (NO_FATAL_ERROR, CRASH):
        return a.message == b.message
    return True


class Shrinker:
    def __init__(self, result: RunResult, budget_seconds: float = 120.0, strict: bool = True) -> None:
        assert result.violation is not None
        self.target = result.violation
        self.best = result
        self.deadline = time.perf_counter() + budget_seconds
        self.strict = strict
        self.tries = 0

    # -- the oracle ---------------------------------------------------------------------------

    def attempt(self, case: Case) -> bool:
        """Run ``case``; keep it when it fails the same way."""
        if time.perf_counter() > self.deadline:
            return False
        self.tries += 1
        result = run_case(case, strict=self.strict)
        if result.violation is None or not same_failure(result.violation, self.target):
            return False
        self.best = result
        return True

    @property
    def case(self) -> Case:
        return self.best.case

    # -- passes ---------------------------------------------------------------------------------

    def shrink(self) -> RunResult:
        progress = True
        while progress and time.perf_counter() < self.deadline:
            progress = False
            for step in (
                self.drop_batches,
                self.drop_commands,
                self.drop_services,
                self.drop_nodes,
                self.drop_groups_rules,
                self.simplify_config,
            ):
                if step():
                    progress = True
        return self.best

    def _ddmin(self, items: list[Any], build: Callable[[list[Any]], Case]) -> bool:
        """Classic delta debugging over ``items`` (complements only); True if anything was removed."""
        changed = False
        n = 2
        while len(items) >= 1:
            chunk = max(1, len(items) // n)
            removed = False
            for start in range(0, len(items), chunk):
                rest = items[:start] + items[start + chunk :]
                if self.attempt(build(rest)):
                    items = rest
                    n = max(n - 1, 2)
                    removed = changed = True
                    break
            if not removed:
                if chunk == 1:
                    break
                n = min(len(items), n * 2)
        return changed

    def drop_batches(self) -> bool:
        base = self.case
        changed = self._ddmin(
            list(range(len(base.schedule))),
            lambda keep: replace(base, schedule=[base.schedule[i] for i in keep]),
        )
        # emptying a batch keeps the timing of the later ones
        for i in range(len(self.case.schedule)):
            if self.case.schedule[i]:
                sched = [list(b) for b in self.case.schedule]
                sched[i] = []
                if self.attempt(replace(self.case, schedule=sched)):
                    changed = True
        return changed

    def drop_commands(self) -> bool:
        changed = False
        i = 0
        while i < len(self.case.schedule):
            base = self.case
            if len(base.schedule[i]) > 1:

                def build(keep: list[str], base: Case = base, i: int = i) -> Case:
                    sched = [list(b) for b in base.schedule]
                    sched[i] = keep
                    return replace(base, schedule=sched)

                if self._ddmin(list(base.schedule[i]), build):
                    changed = True
            i += 1
        return changed

    def drop_services(self) -> bool:
        base = self.case
        return self._ddmin(sorted(base.services), lambda keep: _with_services(base, set(keep)))

    def drop_nodes(self) -> bool:
        changed = False
        for node in list(self.case.nodes):
            if len(self.case.hardware) <= 1 or node not in self.case.hardware:
                continue
            if self.attempt(_without_node(self.case, node)):
                changed = True
        return changed

    def drop_groups_rules(self) -> bool:
        changed = False
        for g in list(self.case.groups):
            if self.attempt(_without_group(self.case, g.id)):
                changed = True
        for r in list(self.case.rules):
            case = self.case
            if self.attempt(replace(case, rules=[x for x in case.rules if x.id != r.id])):
                changed = True
                continue
            for sid in list(r.resources):
                case = self.case
                rules = [
                    replace(x, resources=[s for s in x.resources if s != sid]) if x.id == r.id else x
                    for x in case.rules
                ]
                rules = [x for x in rules if x.resources]
                if self.attempt(replace(case, rules=rules)):
                    changed = True
        return changed

    def simplify_config(self) -> bool:
        changed = False
        if self.case.datacenter and self.attempt(replace(self.case, datacenter={})):
            changed = True
        if any("pve-manager-version" in st for st in self.case.hardware.values()):
            hardware = {
                n: {k: v for k, v in st.items() if k != "pve-manager-version"}
                for n, st in self.case.hardware.items()
            }
            if self.attempt(replace(self.case, hardware=hardware)):
                changed = True
        for sid in sorted(self.case.services):
            for key in ("group", "max_restart", "max_relocate", "failback"):
                cd = self.case.services.get(sid, {})
                if key not in cd:
                    continue
                services = dict(self.case.services)
                services[sid] = {k: v for k, v in cd.items() if k != key}
                if self.attempt(replace(self.case, services=services)):
                    changed = True
        return changed


_SERVICE_CMD = re.compile(r"^service\s+(\S+)")


def _mentions_service(cmd: str, sids: set[str]) -> bool:
    m = _SERVICE_CMD.match(cmd)
    return m is not None and m.group(1) in sids


def _with_services(case: Case, keep: set[str]) -> Case:
    dropped = set(case.services) - keep
    services = {sid: cd for sid, cd in case.services.items() if sid in keep}
    rules = [replace(r, resources=[s for s in r.resources if s not in dropped]) for r in case.rules]
    rules = [r for r in rules if r.resources]
    schedule = [[c for c in b if not _mentions_service(c, dropped)] for b in case.schedule]
    return replace(case, services=services, rules=rules, schedule=schedule)


def _without_node(case: Case, node: str) -> Case:
    hardware = {n: st for n, st in case.hardware.items() if n != node}
    gone = {sid for sid, cd in case.services.items() if cd.get("node") == node}
    # a service added on that node later is gone too
    for batch in case.schedule:
        for cmd in batch:
            parts = cmd.split()
            if len(parts) >= 4 and parts[0] == "service" and parts[2] == "add" and parts[3] == node:
                gone.add(parts[1])
    services = {sid: cd for sid, cd in case.services.items() if sid not in gone}
    schedule = [
        [c for c in b if node not in c.split() and not _mentions_service(c, gone)] for b in case.schedule
    ]
    groups = [replace(g, nodes={n: p for n, p in g.nodes.items() if n != node}) for g in case.groups]
    empty_groups = {g.id for g in groups if not g.nodes}
    groups = [g for g in groups if g.nodes]
    services = {
        sid: ({k: v for k, v in cd.items() if k != "group"} if cd.get("group") in empty_groups else cd)
        for sid, cd in services.items()
    }
    rules = [
        replace(
            r,
            nodes={n: p for n, p in r.nodes.items() if n != node},
            resources=[s for s in r.resources if s not in gone],
        )
        for r in case.rules
    ]
    rules = [r for r in rules if (r.nodes or r.affinity) and r.resources]
    return replace(case, hardware=hardware, services=services, schedule=schedule, groups=groups, rules=rules)


def _without_group(case: Case, gid: str) -> Case:
    services = {
        sid: ({k: v for k, v in cd.items() if k != "group"} if cd.get("group") == gid else cd)
        for sid, cd in case.services.items()
    }
    return replace(case, groups=[g for g in case.groups if g.id != gid], services=services)


def shrink(result: RunResult, budget_seconds: float = 120.0, strict: bool = True) -> tuple[RunResult, int]:
    """The smallest failing variant found within ``budget_seconds``, and the number of runs tried."""
    shrinker = Shrinker(result, budget_seconds, strict)
    best = shrinker.shrink()
    return best, shrinker.tries


# -- scenario folders ------------------------------------------------------------------------------


def _cmdlist_text(batches: list[list[str]]) -> str:
    if not batches:
        return "[]\n"
    lines = []
    for b in batches:
        lines.append("    [ " + ", ".join(json.dumps(c) for c in b) + " ]" if b else "    []")
    return "[\n" + ",\n".join(lines) + "\n]\n"


def _json_text(data: object) -> str:
    return json.dumps(data, indent=4, sort_keys=True) + "\n"


def write_scenario(result: RunResult, out_dir: Path, original: Violation | None = None) -> Path:
    """Write ``result`` as a reference-format scenario folder (the cmdlist includes the heal batches)."""
    case = result.case
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "cmdlist").write_text(_cmdlist_text(result.batches))
    (out_dir / "hardware_status").write_text(_json_text(case.hardware))
    (out_dir / "manager_status").write_text("{}\n")
    (out_dir / "service_config").write_text(_json_text(case.services))
    (out_dir / "datacenter.cfg").write_text(_json_text(case.datacenter))
    scale_mark = out_dir / SCALE_MARK
    if case.scale:  # run in scale mode (the large profile), like tests/test_scenarios.py does
        scale_mark.write_text("run with ha-sim run --scale (nodes in parallel virtual time)\n")
    elif scale_mark.exists():
        scale_mark.unlink()
    for name, text in (("groups", case.groups_text()), ("rules_config", case.rules_text())):
        path = out_dir / name
        if text is not None:
            path.write_text(text)
        elif path.exists():
            path.unlink()
    violation = result.violation
    lines = [
        f"Fuzzer counterexample for seed {case.seed} (ha-sim fuzz --seed {case.seed} --runs 1).",
        "",
    ]
    if violation is not None:
        lines += [f"Violated invariant: {violation.invariant}", f"  {violation}", ""]
    if original is not None and violation is not None and str(original) != str(violation):
        lines += [f"Before shrinking: {original}", ""]
    lines += [
        f"Batches 0..{result.heal_index - 1} are the (shrunk) schedule; from batch {result.heal_index} on",
        "the fuzzer heals the cluster (power/network on, daemons started, maintenance cleared); the liveness",
        f"check runs {LIVENESS_BOUND} virtual seconds after the first heal batch.",
        "",
        "Replay with the invariant checks:  ha-sim fuzz --replay <this folder>",
        f"Plain run:                         ha-sim run {'--scale ' if case.scale else ''}<this folder>",
        "",
        f"{SEED_MARK} {case.seed}",
        f"{HEAL_MARK} {result.heal_index}",
        "",
    ]
    (out_dir / "README").write_text("\n".join(lines))
    return out_dir


def load_case(folder: Path) -> tuple[Case, int | None]:
    """A scenario folder as a case whose schedule is its whole cmdlist, and the heal batch index."""
    sc = load_scenario(folder)
    seed = 0
    heal: int | None = None
    readme = folder / "README"
    if readme.exists():
        for line in readme.read_text().splitlines():
            if line.startswith(SEED_MARK):
                seed = int(line[len(SEED_MARK) :].strip() or 0)
            elif line.startswith(HEAL_MARK):
                heal = int(line[len(HEAL_MARK) :].strip())
    case = Case(
        seed=seed,
        hardware={n: dict(st) for n, st in sc.hardware.items()},
        services={sid: dict(cd) for sid, cd in sc.service_config.items()},
        groups=[],
        rules=[],
        datacenter=dict(sc.datacenter_raw),
        schedule=[list(b) for b in sc.cmdlist],
        groups_raw=sc.groups_text,
        rules_raw=sc.rules_text,
        scale=(folder / SCALE_MARK).exists(),
    )
    return case, heal


def replay_folder(folder: Path, strict: bool = True) -> RunResult:
    case, heal = load_case(folder)
    return run_case(case, heal_index=heal, strict=strict)


__all__ = [
    "GroupSpec",
    "RuleSpec",
    "Shrinker",
    "load_case",
    "replay_folder",
    "same_failure",
    "shrink",
    "write_scenario",
]
