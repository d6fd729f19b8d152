"""``ha-manager`` against a live 3-node cluster: every command's happy path and its errors.

Each call is a real process; errors must be one line on stderr with the
documented exit code (docs/CLI.md), and must change nothing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from admin.ops import OpSpec
from tests.cli.conftest import Cluster, wait_for

pytestmark = pytest.mark.timeout(120)

SLEEP = "sleep 600"


def one_line_error(res: subprocess.CompletedProcess[str], *needles: str) -> str:
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one error line, got: {res.stderr!r}"
    assert lines[0].startswith("ha-manager"), lines[0]
    for n in needles:
        assert n in lines[0], f"{n!r} not in {lines[0]!r}"
    return lines[0]


# -- status ------------------------------------------------------------------------------------


def test_status_text_lines_in_reference_format(cluster: Cluster) -> None:
    out = cluster.hm("status").stdout.splitlines()
    assert out[0] == "quorum OK"
    ctime = r"\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}"
    assert re.fullmatch(rf"master node[123] \(active, {ctime}\)", out[1]), out[1]
    assert out[2] == "fencing armed (CRM watchdog active)"
    lrm = [ln for ln in out if ln.startswith("lrm ")]
    assert [ln.split()[1] for ln in lrm] == ["node1", "node2", "node3"]
    for ln in lrm:
        assert re.fullmatch(rf"lrm node\d \((active|idle), watchdog (active|standby), {ctime}\)", ln), ln


def test_status_json_and_verbose(cluster: Cluster) -> None:
    st = cluster.json("status")
    assert st["quorate"] is True and st["node"] in cluster.nodes
    assert {ln["type"] for ln in st["lines"]} >= {"quorum", "master", "fencing", "lrm"}
    assert all(ln["text"] == f"{ln['type']} {ln['status']}" for ln in st["lines"])
    assert "full" not in st
    full = cluster.status()["full"]
    assert set(full) == {"lrm_status", "manager_status", "quorum"}
    assert full["quorum"]["quorate"] == "1"
    text = cluster.hm("status", "--verbose").stdout
    head, _, rest = text.partition("full cluster state:\n")
    assert head.startswith("quorum OK")
    # Perl's JSON pretty mode: 3-space indent and "key" : value
    assert rest.startswith('{\n   "lrm_status" : {\n      "node1" : {')
    assert json.loads(rest)["manager_status"]["master_node"] in cluster.nodes
    pretty = cluster.hm("status", "--output-format", "json-pretty").stdout
    assert json.loads(pretty) and pretty.count("\n") > 5


# -- add / set / remove / config ------------------------------------------------------------------


def test_add_set_remove_round_trip(cluster: Cluster) -> None:
    sid = "proc:crud"
    cluster.hm("add", sid, "--node", "node1", "--cmd", SLEEP, "--state", "stopped", "--max_restart", "2",
               "--comment", "web front")  # fmt: skip
    text = cluster.hm("config").stdout
    section = text.split(f"{sid}\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert section == sorted(section)
    # as the reference: only the keys set, no defaults and no derived node (issue #13)
    assert section == sorted(["\tcomment web front", "\tmax_restart 2", "\tstate stopped", f"\tcmd {SLEEP}"])
    conf = cluster.json("config", "--type", "proc")
    (res,) = [r for r in conf["resources"] if r["sid"] == sid]
    assert res == {
        "sid": sid, "type": "proc", "name": "crud", "node": "node1", "state": "stopped",
        "max_restart": 2, "max_relocate": 1, "failback": 1, "comment": "web front", "cmd": SLEEP,
    }  # fmt: skip
    assert all(r["type"] == "proc" for r in conf["resources"])
    import yaml  # noqa: PLC0415

    as_yaml = cluster.hm("config", "--type", "proc", "--output-format", "yaml").stdout
    assert yaml.safe_load(as_yaml) == conf  # the reference's yaml output format (issue #13)
    assert cluster.json("config", "--type", "vm")["resources"] == []

    digest = conf["digest"]
    cluster.hm("set", sid, "--max_relocate", "3", "--delete", "comment", "--digest", digest)
    (res,) = [r for r in cluster.json("config")["resources"] if r["sid"] == sid]
    assert res["max_relocate"] == 3 and "comment" not in res
    # the digest read before that change is stale now: refused, nothing changed
    before = cluster.digest()
    err = cluster.hm("set", sid, "--max_relocate", "4", "--digest", digest, code=5)
    one_line_error(err, "digest mismatch")
    assert cluster.digest() == before

    cluster.wait_service(sid, "stopped")
    cluster.hm("remove", sid)
    assert sid not in {r["sid"] for r in cluster.json("config")["resources"]}
    one_line_error(cluster.hm("remove", sid, code=3), "no such resource")


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["add", "proc:e1", "--node", "node9", "--cmd", SLEEP], 3, "unknown node 'node9'"),
        (
            ["add", "proc:e1", "--node", "node1", "--cmd", SLEEP, "--state", "bogus"],
            2,
            "'bogus' is not one of",
        ),
        (["add", "proc:e1", "--node", "node1"], 2, "missing required property 'cmd'"),
        (["add", "bogus:e1", "--node", "node1", "--cmd", SLEEP], 2, "unknown resource type 'bogus'"),
        (["add", "proc:-x", "--node", "node1", "--cmd", SLEEP], 2, "invalid name"),
        (["add", "proc:e1", "--cmd", SLEEP, "--node", "node9"], 3, "unknown node 'node9'"),
        (["add", "proc:e1", "--node", "node1", "--cmd", SLEEP, "--max_restart", "-1"], 2, "--max_restart"),
        (
            ["add", "proc:e1", "--node", "node1", "--cmd", SLEEP, "--agent", "x:y"],
            2,
            "unknown property 'agent'",
        ),
        (
            ["add", "proc:e1", "--node", "node1", "--cmd", SLEEP, "--group", "g1"],
            3,
            "group 'g1' does not exist",
        ),
        (["set", "proc:nope", "--state", "stopped"], 3, "no such resource 'proc:nope'"),
        (["set", "proc:dup", "--state", "bogus"], 2, "'bogus' is not one of"),
        (["set", "proc:dup", "--failback", "7"], 2, "'7' is not one of"),
        (["set", "proc:dup"], 2, "nothing to change"),
        (["set", "proc:dup", "--agent", "x:y"], 2, "unknown option 'agent' for proc resources"),
        (["set", "proc:dup", "--delete", "cmd"], 2, "cannot delete option 'cmd'"),
        (["add", "proc:dup", "--node", "node1", "--cmd", SLEEP], 4, "already defined"),
        (["remove", "vm:1234"], 3, "no such resource 'vm:1234'"),
        (["frobnicate"], 2, "No such command"),
        (["status", "--output-format", "xml"], 2, "'xml' is not one of"),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(
    cluster: Cluster, args: list[str], code: int, needle: str
) -> None:
    if "proc:dup" not in cluster.sids():
        cluster.hm("add", "proc:dup", "--node", "node1", "--cmd", SLEEP, "--state", "stopped")
    before = cluster.digest()
    one_line_error(cluster.hm(*args, code=code), needle)
    assert cluster.digest() == before


# -- migrate / relocate -----------------------------------------------------------------------------


def test_migrate_and_relocate_move_the_service(cluster: Cluster) -> None:
    sid = "proc:mover"
    cluster.hm("add", sid, "--node", "node1", "--cmd", SLEEP)
    cluster.wait_service(sid, "started", "node1")
    cluster.hm("migrate", sid, "node2")
    cluster.wait_service(sid, "started", "node2")
    cluster.hm("crm-command", "relocate", sid, "node3")
    cluster.wait_service(sid, "started", "node3")
    # errors: unknown service, unknown node, already there; nothing queued
    one_line_error(cluster.hm("migrate", "proc:ghost", "node1", code=3), "no such resource")
    one_line_error(cluster.hm("relocate", sid, "node7", code=3), "unknown node 'node7'")
    one_line_error(cluster.hm("migrate", sid, "node3", code=4), "already on node 'node3'")
    one_line_error(cluster.hm("migrate", sid, code=2), "Missing argument 'NODE'")
    cluster.hm("set", sid, "--state", "stopped")
    cluster.wait_service(sid, "stopped")


# -- crm commands -----------------------------------------------------------------------------------


def test_crm_command_stop_and_its_errors(cluster: Cluster) -> None:
    sid = "proc:stopme"
    cluster.hm("add", sid, "--node", "node2", "--cmd", SLEEP)
    cluster.wait_service(sid, "started", "node2")
    cluster.hm("crm-command", "stop", sid, "0")
    wait_for(lambda: (cluster.service(sid) or {}).get("crm_state") in ("request_stop", "stopped"), 10,
             "the stop command to be taken")  # fmt: skip
    one_line_error(
        cluster.hm("crm-command", "stop", sid, "soon", code=2), "whole number of seconds, got 'soon'"
    )
    one_line_error(cluster.hm("crm-command", "stop", "proc:ghost", "5", code=3), "no such resource")
    cluster.hm("set", sid, "--state", "disabled")
    cluster.hm("remove", sid)


def test_node_maintenance_enable_disable(cluster: Cluster) -> None:
    cluster.hm("crm-command", "node-maintenance", "enable", "node3")
    wait_for(lambda: cluster.node_state("node3") == "maintenance", 15, "node3 in maintenance")
    out = cluster.hm("status").stdout
    assert "lrm node3 (maintenance mode," in out
    cluster.hm("crm-command", "node-maintenance", "disable", "node3")
    wait_for(lambda: cluster.node_state("node3") == "online", 15, "node3 online again")
    one_line_error(cluster.hm("crm-command", "node-maintenance", "enable", "node9", code=3), "unknown node")
    one_line_error(cluster.hm("crm-command", "node-maintenance", "toggle", "node1", code=2), "'toggle'")


def test_disarm_and_arm(cluster: Cluster) -> None:
    one_line_error(cluster.hm("crm-command", "arm-ha", code=4), "not disarmed")
    cluster.hm("crm-command", "disarm-ha", "freeze")
    wait_for(lambda: "fencing disarmed, resource mode: freeze (CRM watchdog released)"
             in cluster.hm("status").stdout, 20, "the stack to be disarmed")  # fmt: skip
    one_line_error(cluster.hm("crm-command", "disarm-ha", "ignore", code=4), "already disarmed")
    one_line_error(cluster.hm("crm-command", "node-maintenance", "enable", "node1", code=4), "disarmed")
    cluster.hm("crm-command", "arm-ha")
    wait_for(lambda: "fencing armed (CRM watchdog active)" in cluster.hm("status").stdout, 20, "re-armed")
    one_line_error(cluster.hm("crm-command", "disarm-ha", "sideways", code=2), "'sideways'")


# -- rules ------------------------------------------------------------------------------------------


def test_rules_add_list_set_remove(cluster: Cluster) -> None:
    for sid, node in (("proc:ra", "node1"), ("proc:rb", "node2"), ("proc:rc", "node3")):
        cluster.hm("add", sid, "--node", node, "--cmd", SLEEP, "--state", "stopped")
    cluster.hm("rules", "add", "node-affinity", "keep-ra", "--resources", "proc:ra", "--nodes", "node1,node2",
               "--comment", "prefer node1")  # fmt: skip
    cluster.hm("rules", "add", "resource-affinity", "apart", "--resources", "proc:ra,proc:rb",
               "--affinity", "negative")  # fmt: skip
    cluster.hm("rules", "add", "resource-affinity", "together", "--resources", "proc:rb,proc:rc",
               "--affinity", "positive", "--disable", "1")  # fmt: skip

    listing = cluster.hm("rules", "list").stdout
    assert listing.startswith("┌") and "│ keep-ra " in listing and "nodes node1,node2" in listing
    plain = cluster.hm("rules", "config", "--noborder").stdout.splitlines()
    assert plain[0].split() == ["enabled", "state", "rule", "type", "resources", "comment"]
    rows = {r["rule"]: r for r in cluster.json("rules", "config")}
    assert rows["keep-ra"]["state"] == "in use" and rows["keep-ra"]["comment"] == "prefer node1"
    assert rows["apart"]["affinity"] == "negative" and rows["apart"]["resources"] == "proc:ra,proc:rb"
    assert rows["together"]["state"] == "disabled" and rows["together"]["enabled"] == 0
    assert {r["rule"] for r in cluster.json("rules", "list", "--type", "resource-affinity")} == {
        "apart",
        "together",
    }
    assert {r["rule"] for r in cluster.json("rules", "list", "--resource", "proc:rc")} == {"together"}

    cluster.wait_service("proc:rb", "stopped", "node2")
    blocked = cluster.hm("migrate", "proc:ra", "node2", code=4)
    assert blocked.stderr.splitlines() == [
        "cannot migrate resource 'proc:ra' to node 'node2':",
        "- resource 'proc:rb' on target node 'node2' in negative affinity with resource 'proc:ra'",
    ]
    cluster.hm("rules", "set", "resource-affinity", "together", "--delete", "disable")
    cluster.wait_service("proc:rc", "stopped")
    # proc:rc is on node3 already: the master does not move it, so nothing is said (ha/motion.py)
    assert cluster.hm("migrate", "proc:rb", "node3").stdout.splitlines() == []
    cluster.wait_service("proc:rb", "stopped", "node3")
    also = cluster.hm("migrate", "proc:rc", "node2").stdout.splitlines()
    assert also == [
        "also migrate resource 'proc:rb' in positive affinity with resource 'proc:rc' to target node 'node2'"
    ]

    before = cluster.hm("rules", "config", "--output-format", "json").stdout
    cases = [
        (["rules", "add", "resource-affinity", "solo", "--resources", "proc:ra", "--affinity", "positive"], 4,
         "Rule 'solo' is invalid."),
        (["rules", "add", "node-affinity", "ghost", "--resources", "proc:ghost", "--nodes", "node1"], 3,
         "resource 'proc:ghost' is not HA managed"),
        (["rules", "add", "node-affinity", "far", "--resources", "proc:rc", "--nodes", "node9"], 3,
         "unknown node 'node9'"),
        (["rules", "add", "node-affinity", "keep-ra", "--resources", "proc:rc", "--nodes", "node1"], 4,
         "already defined"),
        (["rules", "add", "node-affinity", "nonodes", "--resources", "proc:rc"], 2, "--nodes is required"),
        (["rules", "add", "node-affinity", "9bad", "--resources", "proc:rc", "--nodes", "node1"], 2,
         "invalid rule id"),
        (["rules", "set", "node-affinity", "apart", "--comment", "x"], 2, "is a resource-affinity rule"),
        (["rules", "set", "node-affinity", "nope", "--comment", "x"], 3, "no such rule 'nope'"),
        (["rules", "set", "resource-affinity", "apart", "--nodes", "node1"], 2, "does not apply"),
        (["rules", "remove", "nope"], 3, "no such rule 'nope'"),
        (["rules", "add", "colocation", "x"], 2, "'colocation' is not one of"),
    ]  # fmt: skip
    for args, code, needle in cases:
        res = cluster.hm(*args, code=code)
        assert needle in res.stderr.splitlines()[0], res.stderr
    assert cluster.hm("rules", "config", "--output-format", "json").stdout == before

    cluster.hm("rules", "set", "node-affinity", "keep-ra", "--comment", "pinned", "--strict", "1")
    rows = {r["rule"]: r for r in cluster.json("rules", "config")}
    assert rows["keep-ra"]["comment"] == "pinned" and rows["keep-ra"]["strict"] == 1
    # remove --purge (default) drops the sid from its rules and deletes rules left empty
    cluster.hm("remove", "proc:ra")
    rows = {r["rule"]: r for r in cluster.json("rules", "config")}
    assert "keep-ra" not in rows and rows["apart"]["resources"] == "proc:rb"
    cluster.hm("remove", "proc:rb", "--purge", "0")
    assert "apart" in {r["rule"] for r in cluster.json("rules", "config")}
    for rule in ("apart", "together"):
        cluster.hm("rules", "remove", rule)
    cluster.hm("remove", "proc:rc")
    assert cluster.json("rules", "list") == []


def test_groups_work_on_a_running_cluster_beside_rules(cluster: Cluster) -> None:
    """Issue #13: groups are first-class on a live cluster whose nodes are all online (the
    reference's master would migrate them to rules at once, §5.14, and refuse group commands)."""
    cluster.hm("groupadd", "prefer3", "-nodes", "node3")
    # no --node: placed in the group's top priority
    cluster.hm("add", "proc:grp", "--cmd", SLEEP, "--group", "prefer3")
    assert next(r for r in cluster.json("config")["resources"] if r["sid"] == "proc:grp")["node"] == "node3"
    cluster.wait_service("proc:grp", "started", "node3")
    cluster.hm("groupset", "prefer3", "--nodes", "node2:2,node3")
    cluster.wait_service("proc:grp", "started", "node2")  # the master applies the group as a rule
    time.sleep(3)  # many CRM rounds later the group is still there: never migrated away
    assert cluster.hm("groupconfig").stdout == "group: prefer3\n\tnodes node2:2,node3\n\n"
    # the rule the master makes of it is listed beside the others, with its source
    rows = {r["rule"]: r for r in cluster.json("rules", "list")}
    assert rows["ha-group-prefer3"]["state"] == "in use (group prefer3)"
    assert "ha-group-prefer3" in cluster.hm("rules", "list").stdout
    # rules beside groups; a resource follows its group or a node-affinity rule, not both
    one_line_error(cluster.hm("rules", "add", "node-affinity", "r-grp", "--resources", "proc:grp",
                              "--nodes", "node1", code=4), "in group 'prefer3'")  # fmt: skip
    one_line_error(cluster.hm("rules", "add", "node-affinity", "ha-group-x", "--resources", "proc:base",
                              "--nodes", "node1", code=2), "groups'")  # fmt: skip
    cluster.hm("rules", "add", "node-affinity", "r-base", "--resources", "proc:base", "--nodes", "node1")
    one_line_error(cluster.hm("set", "proc:base", "--group", "prefer3", code=4), "rule 'r-base'")
    cluster.hm("rules", "remove", "r-base")
    one_line_error(cluster.hm("groupremove", "prefer3", code=4), "used by resource 'proc:grp'")
    cluster.hm("set", "proc:grp", "--delete", "group")
    cluster.hm("groupremove", "prefer3")
    assert cluster.hm("groupconfig").stdout == ""
    cluster.hm("remove", "proc:grp")


# -- access and reachability -------------------------------------------------------------------------


def test_readonly_key_reads_but_cannot_write(cluster: Cluster) -> None:
    assert cluster.hm("--role", "readonly", "status").stdout.startswith("quorum OK")
    assert "resources" in cluster.json("--role", "readonly", "config")
    before = cluster.digest()
    for args in (["add", "proc:ro", "--node", "node1", "--cmd", SLEEP], ["crm-command", "arm-ha"],
                 ["rules", "remove", "x"]):  # fmt: skip
        one_line_error(cluster.hm("--role", "readonly", *args, code=7), "permission denied")
    key = cluster.dir / "keys" / "clients" / "readonly" / "viewer.key_secret"
    one_line_error(cluster.hm("--key", str(key), "remove", "proc:dup", code=7), "needs an admin key")
    assert cluster.digest() == before


def test_root_on_a_cluster_host_may_use_a_node_key(cluster: Cluster) -> None:
    # no client key needed where a node's secret is readable: members are admins
    node_key = str(cluster.dir / "keys" / "node2.key_secret")
    cluster.hm(
        "--key", node_key, "add", "proc:bynode", "--node", "node3", "--cmd", SLEEP, "--state", "stopped"
    )
    cluster.hm("--key", node_key, "remove", "proc:bynode")


def test_a_key_made_while_running_works_and_a_revoked_key_is_refused(
    cluster: Cluster, tmp_path: Path
) -> None:
    # the nodes re-read the key directory when it changes: no restart either way (issue #11)
    res = cluster.hm("keygen", "late", "--role", "admin")
    key = res.stdout.strip()
    assert key.endswith("late.key_secret")
    kept = tmp_path / "late.key_secret"
    kept.write_bytes(Path(key).read_bytes())  # the client keeps its copy of the secret
    kept.chmod(0o600)
    time.sleep(1.2)
    cluster.hm("--key", str(kept), "--timeout", "2", "status")
    out = cluster.hm("keyrevoke", "late").stdout
    assert "late.key" in out and not Path(key).exists()
    time.sleep(1.2)
    err = cluster.hm("--key", str(kept), "--timeout", "1", "status", code=7)
    one_line_error(err, "refused the client key")
    cluster.hm("keyrevoke", "late", code=3)  # gone already


def test_unreachable_cluster_exit_6(cluster: Cluster, tmp_path: Path) -> None:
    fake = tmp_path / "fake"
    shutil.copytree(cluster.dir / "keys", fake / "keys")
    conf = json.loads((cluster.dir / "cluster.json").read_text())
    for i, spec in enumerate(conf["nodes"].values()):
        spec["endpoint"] = f"tcp://127.0.0.1:{1 + i}"  # nothing listens there
    (fake / "cluster.json").write_text(json.dumps(conf))
    # "running": a live process in a node's pid file, so no offline fallback
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        (fake / "run" / "node1").mkdir(parents=True)
        (fake / "run" / "node1" / "ha-node.pid").write_text(f"{sleeper.pid}\n")
        t0 = time.monotonic()
        err = cluster.hm("--cluster", str(fake), "status", code=6)
        assert time.monotonic() - t0 < 10
        one_line_error(err, "cluster unreachable")
        one_line_error(cluster.hm("--cluster", str(tmp_path / "nowhere"), "status", code=3), "no cluster in")
    finally:
        sleeper.kill()
        sleeper.wait()
    env = {"PYHA_CLUSTER": ""}
    res = subprocess.run([sys.executable, "-m", "cli.ha_manager", "status"], capture_output=True, text=True,
                         env={**os.environ, **env}, check=False, timeout=30)  # fmt: skip
    assert res.returncode == 2 and "no cluster given" in res.stderr


# -- completion, json, misc -----------------------------------------------------------------------------


def test_completion_scripts_and_dynamic_values(cluster: Cluster) -> None:
    assert "_HA_MANAGER_COMPLETE=bash_complete" in cluster.hm("completion", "bash").stdout
    assert "compdef" in cluster.hm("completion", "zsh").stdout
    cluster.hm("add", "proc:comp1", "--node", "node1", "--cmd", SLEEP, "--state", "stopped", code=None)

    def complete(words: str, cword: int) -> list[str]:
        res = cluster.hm(env={"_HA_MANAGER_COMPLETE": "bash_complete", "COMP_WORDS": words,
                              "COMP_CWORD": str(cword)})  # fmt: skip
        return [ln.split(",", 1)[1] for ln in res.stdout.splitlines()]

    assert "proc:comp1" in complete("ha-manager set proc:co", 2)
    assert complete("ha-manager migrate proc:comp1 no", 3) == ["node1", "node2", "node3"]
    assert "crm-command" in complete("ha-manager cr", 1)
    assert complete("ha-manager crm-command node-maintenance enable node", 4) == ["node1", "node2", "node3"]
    cluster.hm("remove", "proc:comp1")


def test_every_read_command_speaks_json(cluster: Cluster) -> None:
    for args in (["status"], ["status", "--verbose"], ["config"], ["rules", "list"], ["rules", "config"]):
        for fmt in ("json", "json-pretty"):
            out = cluster.hm(*args, "--output-format", fmt).stdout
            json.loads(out)


def test_api_constants_match_the_client() -> None:
    import admin.ops as server  # noqa: PLC0415
    import cli.api_client as client  # noqa: PLC0415

    assert client.ROLES == server.ROLES
    assert {op for op, spec in _ops().items() if not spec.write} == client.READ_OPS


def _ops() -> dict[str, OpSpec]:
    from admin.ops import ApiOps  # noqa: PLC0415

    return dict(ApiOps("n", ["n"], None, lambda: True).ops)  # type: ignore[arg-type]
