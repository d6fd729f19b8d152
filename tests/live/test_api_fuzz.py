"""Random values for every option of every write through the real API of a live cluster (issue #10).

Property (checked after every call): a refused call changed no config file; an
accepted one left files that parse without error and changed no resource but
its own; no call is answered with an internal error. At the end every node
still answers, no ha-node restarted or fenced, and the service that was
running still runs (a fuzzed maintenance request may have moved it).

The fuzz never starts a service: every resource it adds is ``stopped`` or ``disabled`` and
``state`` is not among the options it sets (a random ``cmd`` would otherwise run).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from admin.cluster import ClusterConfig
from bench.livecluster import LiveCluster
from cli.api_client import ApiClient, ApiError, load_client_key
from ha.config import schema
from ha.config.groups import parse_groups_cfg
from ha.config.resources import ResourceConfig, parse_resources_cfg
from ha.config.rules import parse_rules_cfg
from store import records as rec
from store.base import Store

pytestmark = pytest.mark.timeout(600)

NASTY = [
    "", " ", "0", "1", "-5", "2.5", "nan", "inf", "99999999999999999999", str(2**31), str(2**63), str(2**64),
    "a\nproc: injected\n\tcmd touch /tmp/pwned", "x\r\ny", "\u2028", "\u2029", "\x85", "\x00", "\x7f", "\t",
    "x" * 5000, "127.0.0.1:99999", "localhost:80", "/nonexistent/dir", "relative/dir", "/",
    "heartbeat:NoSuch", "heartbeat:Dummy", "A=1", "1BAD=x", "A='unterminated", "node1", "node9",
    "node1:5,node2", "proc:p1", "positive", "negative", "started", "%ZZ", "grüße",
]  # fmt: skip
VALUES = st.one_of(
    st.sampled_from(NASTY),
    st.text(max_size=30),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
)
# proc:live (running, on node2) is the bystander: never a target, it must keep running where it runs
SIDS = ["proc:p1", "proc:p2", "ocf:o1", "vm:100", "ct:200", "proc:bad id", "nope:1"]
OPS = ["add", "set", "group_add", "group_set", "rule_add", "rule_set", "crm_command"]
GROUP_IDS = ["g1", "gg", "g", "bad id", "x" * 80]
DELETABLE = ["comment", "max_restart", "state", "node", "cmd", "x"]
REASONS: list[str] = []
FILES = (rec.RESOURCES_CFG, rec.GROUPS_CFG, rec.RULES_CFG)


def options_for(sch: schema.ConfigSchema, stype: str, *, adding: bool) -> st.SearchStrategy[dict[str, str]]:
    """Some of the type's options (and an unknown one), each a valid example about half the time."""
    props = {p.name: p for p in sch.props_for(stype) if p.api and p.name != "state"}
    names = [*props, *props, "bogus_option"]  # an unknown option now and then

    @st.composite
    def draw_options(draw: st.DrawFn) -> dict[str, str]:
        keys = draw(st.lists(st.sampled_from(names), unique=True, max_size=3))
        out = {}
        for k in keys:
            good = props[k].example if k in props else "x"
            out[k] = good if draw(st.integers(0, 2)) else draw(VALUES)  # a valid one 2 times in 3
        if adding:  # what an add needs, mostly valid, so that adds are accepted too
            for p in props.values():
                if p.required and p.name not in out and draw(st.integers(0, 3)):
                    out[p.name] = p.example
        return out

    return draw_options()


@st.composite
def calls(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    op = draw(st.sampled_from(OPS))
    if op in ("add", "set"):
        sid = draw(st.sampled_from(SIDS[:3])) if draw(st.integers(0, 2)) else draw(st.sampled_from(SIDS))
        stype = sid.split(":")[0]
        known = stype in ("proc", "ocf", "vm", "ct", "fa")
        opts = draw(options_for(schema.RESOURCES, stype if known else "proc", adding=op == "add"))
        if op == "add":
            opts["state"] = draw(st.sampled_from(["stopped", "disabled"]))  # SAFETY: never run a fuzzed cmd
            opts.setdefault("node", draw(st.sampled_from(["node1", "node2", "node3", "node9", ""])))
            return op, {"sid": sid, "options": opts}
        opts.pop("state", None)
        delete = draw(
            st.lists(st.sampled_from(["comment", "max_restart", "state", "node", "cmd", "x"]), max_size=2)
        )
        return op, {"sid": sid, "options": opts, "delete": delete}
    if op in ("group_add", "group_set"):
        opts = draw(options_for(schema.GROUPS, "group", adding=op == "group_add"))
        return op, {"group": draw(st.sampled_from(GROUP_IDS)), "options": opts}
    if op in ("rule_add", "rule_set"):
        rtype = draw(st.sampled_from(["node-affinity", "resource-affinity", "other"]))
        opts = draw(options_for(schema.RULES, rtype if rtype != "other" else "node-affinity", adding=True))
        return op, {"type": rtype, "rule": draw(st.sampled_from(["r1", "r 2", "r3"])), "options": opts}
    cmd = draw(st.sampled_from(["stop", "migrate", "enable-node-maintenance", "disarm-ha", "bogus"]))
    args: dict[str, Any] = {"cmd": cmd}
    if draw(st.booleans()):
        args["sid"] = draw(st.sampled_from(SIDS))
    if draw(st.booleans()):
        args["node"] = draw(st.sampled_from(["node1", "node2", "node9", "\n"]))
    if draw(st.booleans()):
        args["timeout"] = draw(st.integers(min_value=-5, max_value=2**40))
    if draw(st.booleans()):
        args["mode"] = draw(VALUES)
    return op, args


def snapshot(store: Store) -> dict[str, bytes | None]:
    out: dict[str, bytes | None] = {}
    for name in FILES:
        r = store.read(name)
        out[name] = None if r is None else r.data
    return out


def resources(data: bytes | None) -> dict[str, ResourceConfig]:
    conf, _ = parse_resources_cfg((data or b"").decode())
    return conf.services


def test_random_writes_through_the_api_never_hurt_the_cluster(cluster: LiveCluster) -> None:
    cluster.add_service("proc:live", "node2")
    cluster.up()
    cluster.wait_serving("proc:live", 30, on="node2")
    pids = {n: cluster.pid(n) for n in cluster.nodes}
    conf = ClusterConfig.load(cluster.dir)
    client = ApiClient(conf, key=load_client_key(conf, role="admin"), timeout=5, name="fuzzer")
    store = cluster.open_store()
    seen = {"accepted": 0, "refused": 0}
    try:

        @settings(max_examples=400, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        @given(calls())
        def one(call: tuple[str, dict[str, Any]]) -> None:
            op, args = call
            before = snapshot(store)
            try:
                client.call(op, args)
            except ApiError as e:
                assert e.code != 1 and "internal error" not in e.message, f"{op} {args!r}: {e.message}"
                assert "\n" not in e.message.strip(), f"not one line: {e.message!r}"
                after = snapshot(store)
                if op != "crm_command":
                    assert after == before, f"refused {op} {args!r} changed a config file"
                seen["refused"] += 1
                REASONS.append(f"{op}: {e.message[:90]}")
                return
            seen["accepted"] += 1
            after = snapshot(store)
            for name, parse in ((rec.RESOURCES_CFG, parse_resources_cfg), (rec.GROUPS_CFG, parse_groups_cfg),
                                (rec.RULES_CFG, parse_rules_cfg)):  # fmt: skip
                data = after[name]
                _, errors = parse((data or b"").decode(), name)  # type: ignore[operator]
                assert errors == [], f"accepted {op} {args!r} left {name} with errors: {errors}"
            old, new = resources(before[rec.RESOURCES_CFG]), resources(after[rec.RESOURCES_CFG])
            target = args.get("sid") if op in ("add", "set") else None
            for sid, cd in old.items():
                if sid != target:
                    assert new.get(sid) == cd, f"accepted {op} {args!r} changed {sid}"

        one()
    finally:
        client.close()
        store.close()
    print(f"fuzzed {seen}")
    assert seen["accepted"] > 15 and seen["refused"] > 15, (seen, REASONS[-30:])
    for n in cluster.nodes:
        assert cluster.pid(n) == pids[n], f"{n}'s ha-node restarted or fenced"
    with ApiClient(conf, key=load_client_key(conf, role="admin"), timeout=5, name="checker") as check:
        for n in cluster.nodes:
            assert check.call("info", node=n)["node"] == n
    # a fuzzed maintenance request may have moved it (a legal command): it must run somewhere
    cluster.wait_serving("proc:live", 40)
    logs = "".join(cluster.log(n) for n in cluster.nodes)
    assert "fencing this node" not in logs and "unexpected error" not in logs
