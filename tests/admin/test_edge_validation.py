"""Issue #10, "every value checked at the edge": a bad value is refused (exit 2) and nothing is written.

The edits go through :class:`admin.ops.ApiOps` on a directory store: the
path the node API and ``ha-manager --offline`` both take.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from admin.errors import AdminError, ExitCode
from admin.ops import ApiOps
from ha.config.groups import parse_groups_cfg
from ha.config.resources import parse_resources_cfg
from ha.config.rules import parse_rules_cfg
from ha.config.schema import UINT_MAX
from store import records as rec
from store.dirstore import DirStore

NODES = ["node1", "node2", "node3"]
INJECTION = "hello\n\nproc: injected\n\tcmd touch /tmp/pwned\n\tnode node1"


@pytest.fixture
def ops(tmp_path: Path) -> ApiOps:
    store = DirStore(tmp_path / "store")
    o = ApiOps("node1", NODES, store, lambda: True, require_quorum=False)
    o.call("add", {"sid": "proc:x", "options": {"node": "node1", "cmd": "sleep 600", "state": "stopped"}})
    return o


def _files(ops: ApiOps) -> dict[str, str]:
    return {n: rec.read_text(ops.store, n)[0] for n in (rec.RESOURCES_CFG, rec.GROUPS_CFG, rec.RULES_CFG)}


def _refused(ops: ApiOps, op: str, args: dict[str, object], needle: str) -> AdminError:
    before = _files(ops)
    with pytest.raises(AdminError) as e:
        ops.call(op, args)
    assert e.value.code == ExitCode.USAGE, e.value
    assert needle in str(e.value)
    assert "\n" not in str(e.value) and "\u2028" not in str(e.value)  # one clear line
    assert _files(ops) == before  # nothing written
    return e.value


@pytest.mark.parametrize("key", ["comment", "cmd", "check_cmd", "env", "cwd"])
@pytest.mark.parametrize(
    "bad",
    [INJECTION, "a\rb", "a\x00b", "a\tb", "a\x1bb", "a\x7fb", "a\u0085b", "a\u2028b", "a\u2029b", "a\x9bb"],
)
def test_set_refuses_control_characters_and_line_separators(ops: ApiOps, key: str, bad: str) -> None:
    value = "/" + bad if key == "cwd" else bad
    _refused(ops, "set", {"sid": "proc:x", "options": {key: value}}, f"property '{key}': control character")
    conf, errors = parse_resources_cfg(_files(ops)[rec.RESOURCES_CFG])
    assert not errors and set(conf.services) == {"proc:x"}


def test_add_refuses_an_injected_section(ops: ApiOps) -> None:
    opts = {"node": "node1", "cmd": "sleep 1", "comment": INJECTION}
    _refused(ops, "add", {"sid": "proc:y", "options": opts}, "U+000A not allowed")
    opts = {"node": "node1", "cmd": INJECTION}
    _refused(ops, "add", {"sid": "proc:y", "options": opts}, "property 'cmd'")


def test_groupadd_and_rules_refuse_line_breaks(tmp_path: Path) -> None:
    store = DirStore(tmp_path / "store")
    ops = ApiOps("node1", NODES, store, lambda: True, require_quorum=False)
    store.write(rec.GROUPS_CFG, b"group: g0\n\tnodes node2\n")  # groups not migrated yet
    args = {"group": "g1", "options": {"nodes": "node1", "comment": INJECTION.replace("proc:", "group:")}}
    _refused(ops, "group_add", args, "property 'comment'")
    ops.call("group_add", {"group": "g1", "options": {"nodes": "node1"}})
    _refused(ops, "group_set", {"group": "g1", "options": {"comment": "x\u2028y"}}, "U+2028")
    conf, errors = parse_groups_cfg(_files(ops)[rec.GROUPS_CFG])
    assert not errors and conf.groups["g1"].comment is None

    # rules: only once groups are gone
    ops.call("group_remove", {"group": "g1"})
    ops.call("group_remove", {"group": "g0"})
    ops.call("add", {"sid": "vm:100", "options": {"node": "node1"}})
    ops.call("rule_add", {"type": "node-affinity", "rule": "r1",
                          "options": {"resources": "vm:100", "nodes": "node1"}})  # fmt: skip
    args = {"type": "node-affinity", "rule": "r1", "options": {"comment": "a\nb"}}
    _refused(ops, "rule_set", args, "property 'comment'")
    assert parse_rules_cfg(_files(ops)[rec.RULES_CFG])[0].rules["r1"].comment is None


@pytest.mark.parametrize(
    ("key", "value", "needle"),
    [
        ("max_restart", "99999999999999999999", f"must be <= {UINT_MAX}"),
        ("max_restart", 2**64, f"must be <= {UINT_MAX}"),
        ("max_relocate", UINT_MAX + 1, f"must be <= {UINT_MAX}"),
        ("max_restart", "-5", "expected a non-negative integer"),
        ("max_restart", "1e3", "expected a non-negative integer"),
        ("stop_timeout", "-5", "must be a number >= 0"),
        ("stop_timeout", "soon", "is not a number of seconds"),
        ("stop_timeout", "nan", "must be a number >= 0"),
        ("check_tcp", "nonsense", "is not HOST:PORT"),
        ("check_tcp", "127.0.0.1:99999", "is not HOST:PORT"),
        ("cwd", "relative/dir", "is not an absolute path"),
        ("failback", "maybe", "invalid boolean value"),
        ("state", "bogus", "invalid value 'bogus'"),
        ("group", "9x", "invalid group id"),
        ("comment", "x" * 4097, "longer than 4096"),
    ],
)
def test_set_refuses_values_out_of_type_range_or_format(
    ops: ApiOps, key: str, value: object, needle: str
) -> None:
    _refused(ops, "set", {"sid": "proc:x", "options": {key: value}}, needle)


def test_the_largest_accepted_integer_is_written_and_read_back(ops: ApiOps) -> None:
    ops.call("set", {"sid": "proc:x", "options": {"max_restart": UINT_MAX, "stop_timeout": "2.5"}})
    conf, errors = parse_resources_cfg(_files(ops)[rec.RESOURCES_CFG])
    assert not errors
    assert conf.services["proc:x"].max_restart == UINT_MAX
    assert conf.services["proc:x"].extra["stop_timeout"] == "2.5"


def test_surrounding_blanks_are_dropped_not_stored(ops: ApiOps) -> None:
    ops.call("set", {"sid": "proc:x", "options": {"comment": "  web front  "}})
    assert "\tcomment web front\n" in _files(ops)[rec.RESOURCES_CFG]


def test_the_api_refuses_option_names_no_config_type_knows(ops: ApiOps) -> None:
    e = _refused(
        ops, "set", {"sid": "proc:x", "options": {"stop_timout": "5"}}, "unknown option 'stop_timout'"
    )
    assert "stop_timeout" in str(e)  # the known ones are listed
    _refused(ops, "set", {"sid": "proc:x", "options": {"lock": "migrate"}}, "unknown option 'lock'")
    _refused(ops, "set", {"sid": "proc:x", "options": {"comment": ["a"]}}, "option 'comment' must be")


def test_the_parsers_refuse_the_same_values_when_reading() -> None:
    text = (
        "proc: a\n\tcmd sleep 1\n\tnode node1\n\tmax_restart 99999999999999999999\n\n"
        "proc: b\n\tcmd sleep 1\n\tnode node1\n\tcomment x\u2028proc: c\n\n"
        "proc: d\n\tcmd sleep 1\n\tnode node1\n\tcomment x\x85y\n\n"
        "proc: ok\n\tcmd sleep 1\n\tnode node1\n\tcomment fine\n"
    )
    conf, errors = parse_resources_cfg(text)
    assert set(conf.services) == {"proc:ok"}
    assert [e.line for e in errors] == [4, 9, 14]
    assert "must be <= 2147483647" in str(errors[0]) and "U+2028" in str(errors[1])
    # a line separator is not a line end: no section 'proc: c' appears
    assert "proc:c" not in conf.services
