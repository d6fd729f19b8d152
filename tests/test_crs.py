"""The static/dynamic schedulers (ha/crs, BEHAVIOUR.md §5.10-§5.12), the crs keys of datacenter.cfg
and the simulator's stats (§9.2, §9.5)."""

from __future__ import annotations

import itertools
import math
import random
from pathlib import Path

import pytest

from ha.config.datacenter import parse_datacenter_cfg, parse_datacenter_json
from ha.config.rules import parse_rules_cfg
from ha.crs import topsis
from ha.crs.balance import stationary_bundles
from ha.crs.stats import NodeStats, ServiceStats
from ha.crs.topsis import WEIGHTS, alternative, alternatives_one_changed, imbalance, topsis_scores, trunc15
from ha.crs.usage import BalanceCandidate, LoadUsage
from ha.errors import ConfigError
from ha.records import ServiceData
from ha.rules import compile_rules
from sim.runner import run_scenario
from sim.scenario import load_scenario
from tests.conftest import SCENARIO_DIR

G = 1024**3


class Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def __call__(self, level: str, msg: str) -> None:
        self.lines.append((level, msg))


# -- formulas ---------------------------------------------------------------------------------


def test_imbalance_is_the_unnormalised_coefficient_of_variation() -> None:
    assert imbalance([1.0, 0.0, 0.0]) == pytest.approx(math.sqrt(2))  # §5.10 example
    assert imbalance([0.5, 0.5, 0.5]) == 0.0
    assert imbalance([0.4, 0.4, 0.4]) == pytest.approx(0.0, abs=1e-15)  # float noise, as in the reference
    assert imbalance([0.0, 0.0]) == 0.0


def test_trunc15_cuts_not_rounds() -> None:
    assert trunc15(0.1234567890123459) == pytest.approx(0.123456789012345, abs=0)
    assert trunc15(0.5) == 0.5


def test_topsis_prefers_the_alternative_closest_to_the_ideal() -> None:
    # identical alternatives tie; a dominated one scores 0, the dominating one 1
    good = alternative([0.1, 0.1], [0.1, 0.1])
    bad = alternative([0.9, 0.1], [0.9, 0.1])
    assert topsis_scores([good, bad]) == [1.0, 0.0]
    assert topsis_scores([good, good]) == [0.0, 0.0]
    # memory weighs more than CPU (weights 1, 2, 5, 10)
    cpu_heavy = alternative([0.9, 0.1], [0.2, 0.2])
    mem_heavy = alternative([0.2, 0.2], [0.9, 0.1])
    s = topsis_scores([cpu_heavy, mem_heavy])
    assert s[0] > s[1]


def test_fast_alternatives_equal_the_plain_ones() -> None:
    cpu = [0.13, 0.7, 0.21, 0.0, 0.33]
    mem = [0.5, 0.11, 0.9, 0.27, 0.05]
    new_cpu = [c + 0.17 for c in cpu]
    new_mem = [m + 0.03 for m in mem]
    fast = alternatives_one_changed(cpu, mem, new_cpu, new_mem)
    for i in range(len(cpu)):
        c, m = cpu.copy(), mem.copy()
        c[i], m[i] = new_cpu[i], new_mem[i]
        assert fast[i] == alternative(c, m)  # exactly: same left-to-right sums


def _plain_topsis(alternatives: list[tuple[float, float, float, float]]) -> list[float]:
    """TOPSIS as §5.10 words it: one alternative at a time, every sum left to right."""
    norms = []
    for j in range(4):
        s = 0.0
        for a in alternatives:
            s += a[j] * a[j]
        norms.append(math.sqrt(s))
    weighted = [
        tuple((a[j] / norms[j] if norms[j] != 0.0 else a[j]) * WEIGHTS[j] for j in range(4))
        for a in alternatives
    ]
    best = [min(w[j] for w in weighted) for j in range(4)]
    worst = [max(w[j] for w in weighted) for j in range(4)]
    out = []
    for w in weighted:
        d_best = 0.0
        d_worst = 0.0
        for j in range(4):
            d_best += (w[j] - best[j]) ** 2
            d_worst += (w[j] - worst[j]) ** 2
        total = math.sqrt(d_best) + math.sqrt(d_worst)
        out.append(math.sqrt(d_worst) / total if total != 0.0 else 0.0)
    return out


@pytest.mark.parametrize("summing", ["builtin", "reduce"])
def test_fast_scoring_gives_the_same_floats_as_the_plain_definition(
    summing: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # magnitudes far apart make every rounding step show: any other summation order differs
    if summing == "reduce":
        monkeypatch.setattr(topsis, "seqsum", topsis._reduce_sum)
    rng = random.Random(14)

    def value() -> float:
        return rng.choice([0.0, 1 / 3, 0.1, 1e-9 * rng.random(), 1e9 * rng.random(), rng.random()])

    for _ in range(300):
        n = rng.randint(1, 30)
        cpu, mem = [value() for _ in range(n)], [value() for _ in range(n)]
        new_cpu, new_mem = [c + value() for c in cpu], [m + value() for m in mem]
        fast = alternatives_one_changed(cpu, mem, new_cpu, new_mem)
        plain = []
        for i in range(n):
            c, m = cpu.copy(), mem.copy()
            c[i], m[i] = new_cpu[i], new_mem[i]
            plain.append(alternative(c, m))
        assert fast == plain
        assert topsis_scores(fast) == _plain_topsis(plain)


def test_highest_load_criterion_with_ties_zeros_and_nan() -> None:
    # the one-changed maximum is the overall one except where a load holds it alone
    nan = float("nan")
    values = [0.0, -0.0, 0.5, 1.0, nan, 0.25]
    for loads in itertools.product(values, repeat=3):
        for new in itertools.product(values, repeat=3):
            fast = alternatives_one_changed(list(loads), list(loads), list(new), list(new))
            for i in range(3):
                changed = list(loads)
                changed[i] = new[i]
                plain = alternative(changed, changed)
                assert (fast[i][1], fast[i][3]) == (plain[1], plain[3])  # the max criteria: never NaN


def test_seqsum_adds_left_to_right() -> None:
    # 1e100 + 1.0 rounds back to 1e100: only a left-to-right sum loses both ones before the -1e100
    assert topsis.seqsum([1e100, 1.0, -1e100, 1.0], 0.0) == 1.0
    assert topsis._reduce_sum([1e100, 1.0, -1e100, 1.0], 0.0) == 1.0


# -- usage ------------------------------------------------------------------------------------


def _static(nodes: dict[str, NodeStats], services: dict[str, ServiceStats], log: Log) -> LoadUsage:
    u = LoadUsage("static", nodes, services, log)
    for n in sorted(nodes):
        u.add_node(n)
    return u


def test_static_start_scoring_follows_capacity_not_count() -> None:
    log = Log()
    nodes = {"node1": NodeStats(8, 16 * G), "node2": NodeStats(64, 256 * G)}
    services = {f"vm:{i}": ServiceStats(2, 2 * G) for i in range(100, 110)}
    u = _static(nodes, services, log)
    for i in range(101, 105):
        u.add_service_usage(f"vm:{i}", "started", "node2", None)
    scores = u.score_nodes_to_start_service("vm:100")
    assert scores["node2"] < scores["node1"]  # 4 services on the big node still beat 0 on the small one
    assert log.lines == []


def test_static_charges_node_maxcpu_for_maxcpu_0_and_remove_undoes_it() -> None:
    log = Log()
    u = _static({"n1": NodeStats(4, 8 * G), "n2": NodeStats(4, 8 * G)}, {"vm:1": ServiceStats(0, G)}, log)
    before = u.imbalance()
    u.add_service_usage("vm:1", "started", "n1", None)
    assert u.imbalance() == pytest.approx(1.0)  # n1 load (4/4 + 1/8)/2, n2 0: cv of two values = 1
    u.remove_service_usage("vm:1")
    assert u.imbalance() == before == 0.0


def test_static_only_target_counts_as_current_and_migration_counts_both() -> None:
    u = _static({"a": NodeStats(8, 8 * G), "b": NodeStats(8, 8 * G)}, {"vm:1": ServiceStats(2, G)}, Log())
    u.add_service_usage("vm:1", "request_start_balance", "a", "b")
    assert u.nodes == {"a": set(), "b": {"vm:1"}}
    u.remove_service_usage("vm:1")
    u.add_service_usage("vm:1", "migrate", "a", "b")
    assert u.nodes == {"a": {"vm:1"}, "b": {"vm:1"}}
    assert u.imbalance() == 0.0


def test_missing_stats_are_logged_and_scoring_falls_back_to_counting() -> None:
    log = Log()
    u = _static({"a": NodeStats(8, 8 * G), "b": NodeStats(8, 8 * G)}, {"vm:1": ServiceStats(2, G)}, log)
    u.add_service_usage("vm:2", "started", "a", None)
    assert log.lines == [("warning", "unable to add service 'vm:2' - no static service stats for 'vm:2'")]
    u.add_service_usage("vm:1", "started", "b", None)
    assert u.score_nodes_to_start_service("vm:3") == {"a": 0.0, "b": 1.0}
    assert log.lines[-1] == (
        "err",
        "unable to score nodes according to static usage for service 'vm:3' - "
        "no static service stats for 'vm:3'",
    )


@pytest.mark.parametrize("mode", ["static", "dynamic"])
def test_adding_all_services_at_once_equals_adding_them_one_by_one(mode: str) -> None:
    rng = random.Random(7)
    nodes = {f"n{i}": NodeStats(8 + i, (16 + i) * G, i / 3, i * G / 7) for i in range(5)}
    services = {f"vm:{i}": ServiceStats(i % 3, (i % 5) * G / 3, i / 11, i * G / 13) for i in range(60)}
    states = [
        "started",
        "started",
        "stopped",
        "migrate",
        "relocate",
        "request_start_balance",
        "fence",
        "freeze",
    ]
    ss = {
        f"vm:{i}": ServiceData(
            state=rng.choice(states),
            node=rng.choice([*nodes, "gone"]),
            target=rng.choice([None, *nodes, "gone"]),
            running=rng.random() < 0.5,
        )
        for i in range(70)  # vm:60.. have no stats
    }
    one_by_one = LoadUsage(mode, nodes, services, Log())
    at_once = LoadUsage(mode, nodes, services, Log())
    for n in sorted(nodes):
        one_by_one.add_node(n)
        at_once.add_node(n)
    for sid in sorted(ss):
        sd = ss[sid]
        one_by_one.add_service_usage(sid, sd.state, sd.node, sd.target, sd.running)
    at_once.add_services(ss)
    assert at_once.nodes == one_by_one.nodes
    assert at_once.imbalance() == one_by_one.imbalance()
    for sid in ("vm:1", "vm:2", "vm:3"):
        assert at_once.score_nodes_to_start_service(sid) == one_by_one.score_nodes_to_start_service(sid)
    for sid in sorted(ss):
        at_once.remove_service_usage(sid)
        one_by_one.remove_service_usage(sid)
    assert at_once.score_nodes_to_start_service("vm:1") == one_by_one.score_nodes_to_start_service("vm:1")


def test_remove_undoes_every_charge_of_a_service_placed_twice_on_its_node() -> None:
    u = _static({"a": NodeStats(4, 4 * G), "b": NodeStats(4, 4 * G)}, {"vm:1": ServiceStats(1, G)}, Log())
    u.add_service_usage("vm:1", "started", "a", None)
    assert u.add_service_usage_to_node("a", "vm:1")
    assert u.add_service_usage_to_node("b", "vm:1")
    assert u.nodes == {"a": {"vm:1"}, "b": {"vm:1"}}
    assert u.imbalance() == pytest.approx(1 / 3)  # a carries 2 CPUs / 2 GiB, b 1 / 1
    u.remove_service_usage("vm:1")
    assert u.nodes == {"a": set(), "b": set()}
    assert u.imbalance() == 0.0  # both charges on a undone, not one


def test_node_without_stats_fails_the_init() -> None:
    u = LoadUsage("static", {"a": NodeStats(8, G)}, {}, Log())
    with pytest.raises(Exception, match="no static node stats for node 'b'"):
        u.add_node("b")


def test_dynamic_charges_only_starting_services_and_imbalance_uses_measured_stats() -> None:
    nodes = {"a": NodeStats(16, 16 * G, 8, 8 * G), "b": NodeStats(16, 16 * G, 0, 0)}
    services = {"vm:1": ServiceStats(8, 8 * G, 8, 8 * G), "vm:2": ServiceStats(8, 8 * G, 0, 0)}
    u = LoadUsage("dynamic", nodes, services, Log())
    u.add_node("a")
    u.add_node("b")
    u.add_service_usage("vm:1", "started", "a", None, running=True)  # already in a's measured stats
    measured = u.imbalance()
    assert measured == pytest.approx(1.0)
    u.add_service_usage("vm:2", "started", "b", None, running=False)  # starting: charged for scoring only
    assert u.imbalance() == measured
    scores = u.score_nodes_to_start_service("vm:2")
    assert scores["a"] == scores["b"]  # both nodes now carry 8 CPUs / 8 GiB for start scoring


def test_bruteforce_picks_the_lowest_imbalance_ties_by_leader_source_target() -> None:
    nodes = {n: NodeStats(8, 8 * G) for n in ("a", "b", "c")}
    services = {s: ServiceStats(2, 2 * G) for s in ("vm:1", "vm:2", "vm:3")}
    u = _static(nodes, services, Log())
    for s in services:
        u.add_service_usage(s, "started", "a", None)
    cands = [BalanceCandidate(s, "a", (s,), ("b", "c")) for s in sorted(services)]
    best = u.select_best_balancing_migration(cands, "bruteforce")
    assert best is not None
    assert (best.sid, best.source, best.target) == ("vm:1", "a", "b")  # all moves equal: first by order
    assert best.imbalance < u.imbalance()
    top = u.select_best_balancing_migration(cands, "topsis")
    assert top is not None and (top.sid, top.target) == ("vm:1", "b")


def test_a_non_stationary_bundle_fails_the_whole_selection() -> None:
    log = Log()
    u = _static({"a": NodeStats(8, 8 * G), "b": NodeStats(8, 8 * G)}, {"vm:1": ServiceStats(2, G)}, log)
    u.add_service_usage("vm:1", "migrate", "a", "b")
    assert (
        u.select_best_balancing_migration([BalanceCandidate("vm:1", "a", ("vm:1",), ("b",))], "topsis")
        is None
    )
    assert log.lines[-1][0] == "warning"
    assert log.lines[-1][1].startswith("unable to score best balancing migration - ")


def test_stationary_bundles_follow_affinity() -> None:
    text = (
        "resource-affinity: together\n\tresources vm:101,vm:102\n\taffinity positive\n\n"
        "resource-affinity: apart\n\tresources vm:103,vm:104\n\taffinity negative\n\n"
        "node-affinity: pin\n\tresources vm:103\n\tnodes b:2,c:2,a:1\n"
    )
    conf, errors = parse_rules_cfg(text, "rules.cfg")
    assert not errors
    rules = compile_rules(conf, ["a", "b", "c"])
    ss = {
        "vm:101": ServiceData("started", "a"),
        "vm:102": ServiceData("started", "a"),
        "vm:103": ServiceData("started", "a"),
        "vm:104": ServiceData("started", "b"),
        "vm:105": ServiceData("stopped", "a"),
    }
    cands = stationary_bundles(rules, ss, {"a", "b", "c"})
    assert cands == [
        BalanceCandidate("vm:101", "a", ("vm:101", "vm:102"), ("b", "c")),
        BalanceCandidate("vm:103", "a", ("vm:103",), ("c",)),  # preferred b, c minus vm:104's node b
        BalanceCandidate("vm:104", "b", ("vm:104",), ("c",)),  # a holds vm:103
    ]
    ss["vm:102"] = ServiceData("migrate", "a", target="c")
    assert [c.leader for c in stationary_bundles(rules, ss, {"a", "b", "c"})] == ["vm:103", "vm:104"]
    ss["vm:102"] = ServiceData("started", "b")  # members split over two nodes
    assert [c.leader for c in stationary_bundles(rules, ss, {"a", "b", "c"})] == ["vm:103", "vm:104"]


# -- datacenter.cfg crs keys -----------------------------------------------------------------


def test_crs_keys_are_parsed() -> None:
    dc = parse_datacenter_cfg(
        "crs: ha=dynamic,ha-rebalance-on-start=1,ha-auto-rebalance=1,ha-auto-rebalance-threshold=0.5,"
        "ha-auto-rebalance-method=topsis,ha-auto-rebalance-hold-duration=0,ha-auto-rebalance-margin=0.2\n"
    )
    assert (dc.crs_mode, dc.rebalance_on_start, dc.auto_rebalance) == ("dynamic", True, True)
    assert (dc.auto_rebalance_threshold, dc.auto_rebalance_method) == (0.5, "topsis")
    assert (dc.auto_rebalance_hold_duration, dc.auto_rebalance_margin) == (0, 0.2)
    default = parse_datacenter_cfg("")
    assert (default.crs_mode, default.auto_rebalance_threshold, default.auto_rebalance_hold_duration) == (
        "basic",
        0.3,
        3,
    )


@pytest.mark.parametrize(
    ("text", "msg"),
    [
        (
            "ha: shutdown_policy=freeze\ncrs: ha=fancy\n",
            "datacenter.cfg:2: property 'ha': invalid value 'fancy'",
        ),
        ("crs: ha=static,ha-rebalance=1\n", "datacenter.cfg:1: crs: unknown key 'ha-rebalance'"),
        ("crs: ha-auto-rebalance-method=random\n", "invalid value 'random'"),
        ("crs: ha-auto-rebalance-threshold=lots\n", "'lots' is not a number"),
        ("crs: ha-auto-rebalance-hold-duration=-1\n", "expected a non-negative integer"),
    ],
)
def test_bad_crs_values_are_refused_with_file_and_line(text: str, msg: str) -> None:
    with pytest.raises(ConfigError, match=msg.replace("(", r"\(")):
        parse_datacenter_cfg(text)


def test_simulator_json_refuses_an_unknown_mode_with_its_line() -> None:
    with pytest.raises(ConfigError, match=r"dc.json:3: property 'ha': invalid value 'dyn'"):
        parse_datacenter_json('{\n "crs": {\n  "ha": "dyn"\n }\n}\n', "dc.json")


# -- the simulator's stats ---------------------------------------------------------------------


def test_set_static_stats_changes_placement(tmp_path: Path) -> None:
    """100-crs-static-rebalance-on-start without the set-static-stats command keeps vm:105 on node1."""
    src = SCENARIO_DIR / "100-crs-static-rebalance-on-start"
    for f in src.iterdir():
        (tmp_path / f.name).write_text(f.read_text())
    with_cmd = "".join(run_scenario(load_scenario(tmp_path)).hw.lines)
    assert "service vm:105: re-balance selected new node node3 for startup" in with_cmd
    cmdlist = (
        (tmp_path / "cmdlist")
        .read_text()
        .replace('"service vm:105 set-static-stats maxcpu 12 maxmem 24576",', "")
    )
    (tmp_path / "cmdlist").write_text(cmdlist)
    without = "".join(run_scenario(load_scenario(tmp_path)).hw.lines)
    assert "service vm:105: re-balance selected current node node1 for startup" in without


def test_set_dynamic_stats_and_overcommit_warning_once(tmp_path: Path) -> None:
    src = SCENARIO_DIR / "101-crs-dynamic-auto-rebalance"
    for f in src.iterdir():
        (tmp_path / f.name).write_text(f.read_text())
    cmdlist = (tmp_path / "cmdlist").read_text().replace("cpu 10 mem 40960", "cpu 20 mem 40960")
    (tmp_path / "cmdlist").write_text(cmdlist)
    lines = run_scenario(load_scenario(tmp_path)).hw.lines
    warn = [line for line in lines if "overcommitted cpu on 'vm:105'" in line]
    assert warn == ["warning   320     hardware: overcommitted cpu on 'vm:105'\n"]
