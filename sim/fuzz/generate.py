"""The fuzzer's random cluster: nodes, services, HA groups, rules and datacenter settings of a seed."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from random import Random
from typing import Any

from ha.config.datacenter import parse_datacenter_json
from sim.scenario import Scenario

# -- the case ---------------------------------------------------------------------------------


@dataclass
class GroupSpec:
    id: str
    nodes: dict[str, int | None]
    restricted: bool = False
    nofailback: bool = False


@dataclass
class RuleSpec:
    id: str
    nodes: dict[str, int | None]
    resources: list[str]
    strict: bool = False
    disable: bool = False
    affinity: str | None = None  # positive|negative: a resource-affinity rule (no nodes)


@dataclass
class Case:
    """A cluster and a schedule; everything a run needs besides the (deterministic) heal."""

    seed: int
    hardware: dict[str, dict[str, Any]]
    services: dict[str, dict[str, Any]]
    groups: list[GroupSpec] = field(default_factory=list)
    rules: list[RuleSpec] = field(default_factory=list)
    datacenter: dict[str, Any] = field(default_factory=dict)
    schedule: list[list[str]] = field(default_factory=list)
    # verbatim groups/rules texts (a replayed folder); they win over ``groups``/``rules``
    groups_raw: str | None = None
    rules_raw: str | None = None
    # run in the simulator's scale mode (nodes in parallel virtual time): the large profile
    scale: bool = False

    @property
    def nodes(self) -> list[str]:
        return sorted(self.hardware)

    def groups_text(self) -> str | None:
        if self.groups_raw is not None:
            return self.groups_raw
        if not self.groups:
            return None
        out = []
        for g in self.groups:
            text = f"group: {g.id}\n\tnodes {_node_list(g.nodes)}\n"
            if g.restricted:
                text += "\trestricted 1\n"
            if g.nofailback:
                text += "\tnofailback 1\n"
            out.append(text)
        return "\n".join(out)

    def rules_text(self) -> str | None:
        if self.rules_raw is not None:
            return self.rules_raw
        if not self.rules:
            return None
        out = []
        for r in self.rules:
            resources = ",".join(r.resources)
            if r.affinity is not None:
                text = f"resource-affinity: {r.id}\n\tresources {resources}\n\taffinity {r.affinity}\n"
            else:
                text = f"node-affinity: {r.id}\n\tnodes {_node_list(r.nodes)}\n\tresources {resources}\n"
            if r.strict:
                text += "\tstrict 1\n"
            if r.disable:
                text += "\tdisable 1\n"
            out.append(text)
        return "\n".join(out)

    def scenario(self) -> Scenario:
        dc_text = json.dumps(self.datacenter)
        return Scenario(
            path=Path(f"<fuzz seed {self.seed}>"),
            cmdlist=[],
            hardware={n: dict(st) for n, st in self.hardware.items()},
            manager_status={},
            service_config={sid: dict(cd) for sid, cd in self.services.items()},
            groups_text=self.groups_text(),
            rules_text=self.rules_text(),
            datacenter=parse_datacenter_json(dc_text),
            datacenter_raw=json.loads(dc_text),
        )


def _node_list(nodes: dict[str, int | None]) -> str:
    return ",".join(n if p is None else f"{n}:{p}" for n, p in nodes.items())


SERVICE_STATES = ("started", "stopped", "disabled", "ignored")


def weighted(rng: Random, table: Iterable[tuple[str, float]]) -> str:
    items = list(table)
    return rng.choices([k for k, _ in items], weights=[w for _, w in items])[0]


def _node_subset(rng: Random, nodes: list[str], priorities: bool) -> dict[str, int | None]:
    chosen = rng.sample(nodes, rng.randint(1, len(nodes)))
    return {n: (rng.randint(0, 3) if priorities and rng.random() < 0.8 else None) for n in chosen}


#: the cluster sizes of ``ha-sim fuzz --profile``: small (the reference's limits, its run loop)
#: and large (scale mode: nodes in parallel virtual time, sim/runner.py; issue #15)
PROFILES = ("small", "large")
LARGE_NODES = (20, 50)
LARGE_SERVICES_PER_NODE = (2, 10)


def generate_case(seed: int, profile: str = "small") -> Case:
    """The cluster of ``seed`` (its schedule is generated during the run, see :class:`ScheduleGenerator`).

    ``large``: 20-50 nodes with 2-10 services per node, run in scale mode; the draws after
    the sizes are the small profile's (a small case of a seed is unchanged).
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown fuzz profile '{profile}'")
    large = profile == "large"
    rng = Random(seed)
    n_nodes = rng.randint(*LARGE_NODES) if large else rng.randint(3, 7)
    nodes = [f"node{i}" for i in range(1, n_nodes + 1)]
    hardware: dict[str, dict[str, Any]] = {n: {"power": "off", "network": "off"} for n in nodes}
    if rng.random() < 0.15:  # new enough for the persistent group -> rule migration (§5.14)
        for st in hardware.values():
            st["pve-manager-version"] = "9.0.0~16"

    groups: list[GroupSpec] = []
    for i in range(rng.choice((0, 0, 1, 1, 2, 3))):
        groups.append(
            GroupSpec(
                f"group{i + 1}",
                _node_subset(rng, nodes, rng.random() < 0.5),
                restricted=rng.random() < 0.5,
                nofailback=rng.random() < 0.3,
            )
        )

    if large:
        n_services = rng.randint(n_nodes * LARGE_SERVICES_PER_NODE[0], n_nodes * LARGE_SERVICES_PER_NODE[1])
        numbers = rng.sample(range(100, 10000), n_services)
    else:
        n_services = rng.randint(1, 15) if rng.random() < 0.7 else rng.randint(16, 50)
        numbers = rng.sample(range(100, 1000), n_services)
    services: dict[str, dict[str, Any]] = {}
    for num in sorted(numbers):
        sid = f"{rng.choice(('vm', 'vm', 'ct'))}:{num}"
        cd: dict[str, Any] = {"node": rng.choice(nodes)}
        state = weighted(
            rng,
            (("started", 60), ("stopped", 10), ("disabled", 8), ("ignored", 8), ("", 4), ("enabled", 2)),
        )
        if state:
            cd["state"] = state
        if groups and rng.random() < 0.4:
            cd["group"] = rng.choice(groups).id
        if rng.random() < 0.3:
            cd["max_restart"] = rng.randint(0, 3)
        if rng.random() < 0.3:
            cd["max_relocate"] = rng.randint(0, 3)
        if rng.random() < 0.15:
            cd["failback"] = 0
        services[sid] = cd

    rules: list[RuleSpec] = []
    sids = sorted(services)
    for i in range(rng.choice((0, 0, 1, 1, 2, 3))):
        resources = sorted(rng.sample(sids, min(len(sids), rng.randint(1, 5))))
        rules.append(
            RuleSpec(
                f"rule{i + 1}",
                _node_subset(rng, nodes, rng.random() < 0.5),
                resources,
                strict=rng.random() < 0.5,
                disable=rng.random() < 0.1,
            )
        )

    # Resource affinity. A negative rule only gets services without any node preference (no
    # group, no node-affinity rule, no positive partner) and each service at most one negative
    # rule: with a preference, the reference removes the partners' nodes from the *preferred*
    # class only and finds no node at all when that empties it, even with other nodes free
    # (BEHAVIOUR.md §5.9 step 6; docs/fuzzing.md "Findings") - a liveness limitation by design.
    kinds = [rng.choice(("positive", "negative")) for _ in range(rng.choice((0, 0, 0, 1, 2)))]
    preferred = {sid for sid, cd in services.items() if "group" in cd}
    for r in rules:
        preferred.update(r.resources)
    for i, affinity in enumerate(sorted(kinds, key=lambda k: k != "positive")):
        pool = sids if affinity == "positive" else [s for s in sids if s not in preferred]
        if len(pool) < 2:
            continue
        resources = sorted(rng.sample(pool, min(len(pool), rng.randint(2, 3))))
        preferred.update(resources)
        rules.append(
            RuleSpec(f"affinity{i + 1}", {}, resources, affinity=affinity, disable=rng.random() < 0.1)
        )

    datacenter: dict[str, Any] = {}
    policy = rng.choice((None, "conditional", "freeze", "failover", "migrate"))
    if policy is not None:
        datacenter["ha"] = {"shutdown_policy": policy}
    if rng.random() < 0.2:
        datacenter["crs"] = {"ha-rebalance-on-start": 1}
    return Case(seed, hardware, services, groups, rules, datacenter, scale=large)
