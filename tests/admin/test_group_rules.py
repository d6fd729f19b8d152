"""Issue #13: the rules the master makes of groups show in ``rules list`` and cannot be edited as rules.

On a live cluster a group used by a resource is applied as a node-affinity rule
``ha-group-<group>`` in memory (ha/groups.py, §5.14); groups.cfg stays. An operator
listing the rules must see it beside the rules of rules.cfg, with its source, and
count it in the conflict check as the master does.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from admin.errors import AdminError, ExitCode
from admin.ops import ApiOps
from store import records as rec
from store.dirstore import DirStore

RESOURCES = (
    "proc: a\n\tcmd sleep 600\n\tnode node1\n\tgroup pref\n\n"
    "proc: b\n\tcmd sleep 600\n\tnode node2\n\n"
    "proc: c\n\tcmd sleep 600\n\tnode node2\n\tgroup pref\n\n"
)
GROUPS = "group: pref\n\tnodes node2:2,node1\n\trestricted 1\n\ngroup: unused\n\tnodes node3\n\n"
RULES = "node-affinity: pin-b\n\tresources proc:b\n\tnodes node2\n\n"


@pytest.fixture
def ops(tmp_path: Path) -> ApiOps:
    store = DirStore(tmp_path / "store")
    store.write(rec.RESOURCES_CFG, RESOURCES.encode())
    store.write(rec.GROUPS_CFG, GROUPS.encode())
    store.write(rec.RULES_CFG, RULES.encode())
    return ApiOps("node1", ["node1", "node2", "node3"], store, lambda: True, require_quorum=False)


def test_a_used_group_is_listed_as_its_rule(ops: ApiOps) -> None:
    rows = {r["rule"]: r for r in ops.op_rules({})["rules"]}
    assert sorted(rows) == ["ha-group-pref", "pin-b"]  # an unused group makes no rule
    g = rows["ha-group-pref"]
    assert (g["type"], g["resources"], g["nodes"], g["strict"]) == (
        "node-affinity",
        "proc:a,proc:c",
        "node1,node2:2",
        1,
    )
    assert g["group"] == "pref" and g["state"] == "in use (group pref)"
    assert "group" not in rows["pin-b"] and rows["pin-b"]["state"] == "in use"
    # the filters apply to it like to any rule
    assert [r["rule"] for r in ops.op_rules({"resource": "proc:c"})["rules"]] == ["ha-group-pref"]
    assert [r["rule"] for r in ops.op_rules({"type": "resource-affinity"})["rules"]] == []


def test_a_group_rule_in_conflict_is_shown_ignored(ops: ApiOps) -> None:
    # a positive resource affinity between resources the group and pin-b keep apart
    ops.store.write(
        rec.RULES_CFG,
        (RULES + "resource-affinity: together\n\tresources proc:a,proc:b\n\taffinity positive\n\n").encode(),
    )
    rows = {r["rule"]: r for r in ops.op_rules({})["rules"]}
    assert rows["ha-group-pref"]["state"].startswith("ignored (conflicts)"), rows
    assert rows["ha-group-pref"]["state"].endswith("(group pref)")


def test_a_group_rule_is_changed_through_its_group(ops: ApiOps) -> None:
    before = rec.read_text(ops.store, rec.RULES_CFG)[0]
    for op in (
        lambda: ops.call("rule_remove", {"rule": "ha-group-pref"}),
        lambda: ops.call(
            "rule_set", {"type": "node-affinity", "rule": "ha-group-pref", "options": {"comment": "x"}}
        ),
    ):
        with pytest.raises(AdminError) as e:
            op()
        assert e.value.code == ExitCode.REFUSED and "groupset pref" in str(e.value)
    with pytest.raises(AdminError) as e:
        ops.call("rule_remove", {"rule": "ha-group-unused"})  # no resource uses it: no such rule
    assert e.value.code == ExitCode.NOT_FOUND
    assert rec.read_text(ops.store, rec.RULES_CFG)[0] == before
