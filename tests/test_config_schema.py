"""The schema drives everything (issue #16): every property is read, written, offered and documented.

These tests iterate over ``ha/config/schema.py``: a property added there is
covered without touching them, and a place that does not follow the schema
fails here.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from admin import configdocs
from admin.errors import AdminError
from admin.ops import ApiOps
from cli import ha_manager
from ha.config import schema
from ha.config.groups import format_groups_cfg, parse_groups_cfg
from ha.config.resources import RESOURCE_TYPES, format_resources_cfg, parse_resources_cfg
from ha.config.rules import format_rules_cfg, parse_rules_cfg
from ha.config.schema import GROUPS, RESOURCES, RULES, ConfigSchema, Kind, Prop
from store.dirstore import DirStore

PARSE = {
    "resources.cfg": (parse_resources_cfg, format_resources_cfg, "services"),
    "groups.cfg": (parse_groups_cfg, format_groups_cfg, "groups"),
    "rules.cfg": (parse_rules_cfg, format_rules_cfg, "rules"),
}
# the ha-manager commands of each file: (add, set)
COMMANDS: dict[str, tuple[list[str], list[str]]] = {
    "resources.cfg": (["add"], ["set"]),
    "groups.cfg": (["groupadd"], ["groupset"]),
    "rules.cfg": (["rules", "add"], ["rules", "set"]),
}
SECTION_SCHEMAS = (RESOURCES, GROUPS, RULES)


def _cases(schemas: tuple[ConfigSchema, ...] = SECTION_SCHEMAS) -> list[Any]:
    return [
        pytest.param(s, t.name, p, id=f"{s.file}:{t.name}:{p.name}")
        for s in schemas
        for t in s.section_types
        for p in s.props_for(t.name)
    ]


def _section(s: ConfigSchema, stype: str, prop: Prop) -> str:
    """A valid section of ``stype``: its required properties, plus ``prop``, from the examples."""
    sid = "100" if stype in ("vm", "ct", "fa") else "x1"
    lines = [f"{stype}: {sid}"]
    for p in s.props_for(stype):
        # a resource's node is optional to add (placed), but a parsed section needs one (file or location)
        if p.required or p is prop or (s is RESOURCES and p.name == "node"):
            lines.append(f"\t{p.name} {p.example}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(("s", "stype", "prop"), _cases())
def test_every_property_is_read_and_written_back(s: ConfigSchema, stype: str, prop: Prop) -> None:
    parse, fmt, attr = PARSE[s.file]
    conf, errors = parse(_section(s, stype, prop))
    assert not errors
    (record,) = getattr(conf, attr).values()
    assert s.get(record, prop) == prop.read(prop.example, "t", None)
    text = fmt(conf)
    assert f"\t{prop.name} " in text  # the writer writes it ...
    again, errors = parse(text)
    assert not errors and fmt(again) == text  # ... and reads back what it wrote


@pytest.mark.parametrize(("s", "stype", "prop"), _cases())
def test_every_property_refuses_a_line_break_when_read(s: ConfigSchema, stype: str, prop: Prop) -> None:
    parse, _, attr = PARSE[s.file]
    text = _section(s, stype, prop).replace(f"\t{prop.name} {prop.example}", f"\t{prop.name} a\u2028b")
    conf, errors = parse(text)
    if prop.presence:  # rules' disable: any value counts (§5.13.1)
        assert not errors
        return
    assert not getattr(conf, attr) and len(errors) == 1 and f"'{prop.name}'" in str(errors[0])


def _command(path: list[str]) -> click.Command:
    cmd: click.Command = ha_manager.main
    for name in path:
        assert isinstance(cmd, click.Group)
        cmd = cmd.commands[name]
    return cmd


@pytest.mark.parametrize("s", SECTION_SCHEMAS, ids=lambda s: s.file)
def test_every_api_property_is_a_cli_option_and_an_api_option(s: ConfigSchema) -> None:
    add, set_ = COMMANDS[s.file]
    ops = ApiOps("n", ["n"], None, lambda: True).ops  # type: ignore[arg-type]
    api_ops = {name for name, spec in ops.items() if spec.options is s}
    assert len(api_ops) == 2  # add and set
    for prop in s.props:
        for path, offered in ((add, prop.api), (set_, prop.api and prop.settable)):
            opts = {o.name: set(o.opts) for o in _command(path).params if isinstance(o, click.Option)}
            if offered:
                assert opts.get(prop.name) == set(prop.flags), (path, prop.name)
            else:
                assert prop.name not in opts, (path, prop.name)


@pytest.mark.parametrize(("s", "stype", "prop"), _cases((*SECTION_SCHEMAS, schema.DATACENTER)))
def test_every_property_is_in_the_docs(s: ConfigSchema, stype: str, prop: Prop) -> None:
    block = configdocs.DOC.read_text().split(f"<!-- schema:{s.file} -->")[1].split("<!-- /schema")[0]
    assert f"\n| `{prop.name}` |" in block


def test_the_docs_tables_are_the_schemas() -> None:
    """Fails when docs/CONFIG.md and the schema differ: run ``python -m admin.configdocs``."""
    text = configdocs.DOC.read_text()
    assert configdocs.render(text) == text
    assert configdocs.main(["--check"]) == 0


def test_the_resource_type_registry_comes_from_the_schema() -> None:
    for t in RESOURCES.section_types:
        extras = {p.name: p.required for p in RESOURCES.props_for(t.name) if p.extra}
        assert RESOURCE_TYPES[t.name].extra == extras
    assert RESOURCE_TYPES["proc"].extra["cmd"] is True and RESOURCE_TYPES["vm"].live_migration


@pytest.mark.parametrize(
    "prop", [p for p in RESOURCES.props if p.api], ids=lambda p: p.name
)  # fmt: skip
def test_every_resource_option_travels_through_the_api(tmp_path: Path, prop: Prop) -> None:
    """API option -> admin check -> resources.cfg -> parser -> the API's view, for every option."""
    stype = next(t for t in prop.types or ("proc",))
    ops = ApiOps("node1", ["node1", "node2"], DirStore(tmp_path), lambda: True, require_quorum=False)
    opts = {p.name: p.example for p in RESOURCES.props_for(stype) if p.required or p is prop}
    opts["node"] = "node1"
    if prop.kind == Kind.GROUP:  # --group needs an existing legacy group
        ops.store.write("groups.cfg", f"group: {prop.example}\n\tnodes node1\n".encode())
    spec = RESOURCES.section_type(stype)
    sid = f"{stype}:web" if spec is None or spec.id_pattern.match("web") else f"{stype}:100"  # vm: numbers
    ops.call("add", {"sid": sid, "options": opts})
    (res,) = ops.call("config", {"sid": sid})["resources"]
    expected = prop.parse(prop.example)
    assert res[prop.name] == (int(expected) if prop.kind == Kind.BOOL else expected)
    if prop.deletable:
        ops.call("set", {"sid": sid, "delete": [prop.name]})
        (res,) = ops.call("config", {"sid": sid})["resources"]
        assert res.get(prop.name) == (None if prop.default is None else prop.parse(prop.render(prop.default)))


def test_a_new_resource_option_is_one_schema_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The demonstration asked for by issue #16: one ``Prop`` and the option works everywhere."""
    new = Prop("restart_delay", Kind.SECONDS, "Seconds to wait before a restart.", types=("proc",),
               extra=True, example="3")  # fmt: skip
    monkeypatch.setattr(schema, "RESOURCES", dataclasses.replace(RESOURCES, props=(*RESOURCES.props, new)))

    # parser and writer
    text = "proc: web\n\tcmd sleep 1\n\tnode node1\n\trestart_delay 3\n"
    conf, errors = parse_resources_cfg(text)
    assert not errors and conf.services["proc:web"].extra["restart_delay"] == "3"
    assert format_resources_cfg(conf) == text + "\n"
    # the API and the admin checks (value and applicability)
    ops = ApiOps("node1", ["node1"], DirStore(tmp_path), lambda: True, require_quorum=False)
    ops.call(
        "add", {"sid": "proc:web", "options": {"node": "node1", "cmd": "sleep 1", "restart_delay": "2.5"}}
    )
    assert ops.call("config", {"sid": "proc:web"})["resources"][0]["restart_delay"] == "2.5"
    with pytest.raises(AdminError, match="restart_delay': must be a number >= 0"):
        ops.call("set", {"sid": "proc:web", "options": {"restart_delay": "-1"}})
    ops.call("add", {"sid": "ocf:x", "options": {"node": "node1", "agent": "heartbeat:Dummy"}})
    with pytest.raises(AdminError, match="unknown option 'restart_delay' for ocf resources"):
        ops.call("set", {"sid": "ocf:x", "options": {"restart_delay": "1"}})
    # the CLI option (flags, help) and its docs row
    seen: dict[str, Any] = {}

    @click.command()
    @ha_manager.schema_options(schema.RESOURCES, adding=False)
    def probe(**kw: Any) -> None:
        seen.update(kw)

    res = CliRunner().invoke(probe, ["--restart_delay", "4"])
    assert res.exit_code == 0 and seen["restart_delay"] == "4"
    assert "--restart-delay" in CliRunner().invoke(probe, ["--help"]).output
    assert "| `restart_delay` | proc | seconds |" in schema.markdown_table(schema.RESOURCES)
