"""A node survives any config content (issue #10): bad bytes and broken sections never fail a loop.

The live Env reads config files section by section: bytes that are not UTF-8
and sections that fail to parse are config errors (file and line), and what an
earlier reading had is kept while the file has errors.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from actors.env import LiveEnv
from ha.config.encoding import decode_config
from ha.config.lastgood import carry_over
from ha.config.resources import ServiceConfig
from ha.errors import ConfigError
from ha.records import ManagerStatus
from ha.status import status_lines
from store import records as rec
from store.dirstore import DirStore
from tests import envstubs

GOOD = (
    "proc: web\n\tcmd sleep 100\n\tnode n1\n\n"
    "proc: db\n\tcmd sleep 200\n\tnode n2\n\tstate stopped\n\n"
    "proc: cache\n\tcmd sleep 300\n\tnode n3\n"
)


def live_env(store: DirStore, daemon: str = "crm") -> LiveEnv:
    return envstubs.live_env(store, daemon=daemon)


def test_decode_blanks_exactly_the_section_with_bad_bytes() -> None:
    data = GOOD.replace("sleep 200", "sleep \xff200").encode("latin-1")
    text, errors = decode_config(data, "resources.cfg")
    assert [(e.path, e.line) for e in errors] == [("resources.cfg", 6)]
    assert "proc: db" in str(errors[0])
    assert "sleep 100" in text and "sleep 300" in text and "db" not in text
    assert len(text.split("\n")) == len(data.split(b"\n")), "line numbers of later lines are kept"


def test_decode_drops_only_a_comment_line_with_bad_bytes() -> None:
    data = b"# caf\xe9\n" + GOOD.encode()
    text, errors = decode_config(data, "resources.cfg")
    assert len(errors) == 1 and errors[0].line == 1
    assert text.split("\n")[1:] == GOOD.split("\n")


def test_carry_over_only_while_there_are_errors() -> None:
    new = {"a": 1}
    assert carry_over(new, {"a": 0, "b": 2}, has_errors=False) == [] and new == {"a": 1}
    assert carry_over(new, {"a": 0, "b": 2}, has_errors=True) == ["b"] and new == {"a": 1, "b": 2}


def test_a_non_utf8_byte_does_not_fail_the_read_and_keeps_the_last_good_section(tmp_path: Path) -> None:
    store = DirStore(tmp_path)
    store.write(rec.RESOURCES_CFG, GOOD.encode())
    env = live_env(store)
    assert sorted(env.read_service_config().services) == ["proc:cache", "proc:db", "proc:web"]
    store.write(rec.RESOURCES_CFG, GOOD.replace("sleep 200", "sleep \xff200").encode("latin-1"))
    conf = env.read_service_config()  # raised UnicodeDecodeError before issue #10
    assert sorted(conf.services) == ["proc:cache", "proc:db", "proc:web"]
    db = conf.services["proc:db"]
    assert db.state == "stopped" and db.extra["cmd"] == "sleep 200", "the last good version stays in force"
    recorded = rec.read_config_errors(store)
    assert "not valid UTF-8" in recorded[rec.RESOURCES_CFG]["errors"][0]


def test_a_fresh_reader_of_a_bad_file_still_gets_every_good_section(tmp_path: Path) -> None:
    store = DirStore(tmp_path)
    store.write(rec.RESOURCES_CFG, GOOD.replace("sleep 100", "sleep \xff").encode("latin-1"))
    conf = live_env(store, "lrm").read_service_config()
    assert sorted(conf.services) == ["proc:cache", "proc:db"]


def test_a_typo_keeps_the_resource_managed_until_fixed_then_the_new_reading_rules(tmp_path: Path) -> None:
    store = DirStore(tmp_path)
    store.write(rec.RESOURCES_CFG, GOOD.encode())
    env = live_env(store)
    env.read_service_config()
    store.write(rec.RESOURCES_CFG, GOOD.replace("\tstate stopped", "\tstate stoped").encode())
    conf = env.read_service_config()
    assert conf.services["proc:db"].state == "stopped", "kept, not dropped from management"
    first = rec.read_config_errors(store)[rec.RESOURCES_CFG]
    # a second bad version: still invalid since the first time
    time.sleep(0.01)
    store.write(rec.RESOURCES_CFG, GOOD.replace("\tstate stopped", "\tstate stopp").encode())
    env.read_service_config()
    assert rec.read_config_errors(store)[rec.RESOURCES_CFG]["since"] == first["since"]
    # fixed, with db removed on purpose: now the removal takes effect and the report is cleared
    store.write(rec.RESOURCES_CFG, GOOD.split("proc: db", maxsplit=1)[0].encode())
    assert sorted(env.read_service_config().services) == ["proc:web"]
    assert rec.RESOURCES_CFG not in rec.read_config_errors(store)


def test_a_master_edit_keeps_broken_sections_and_bad_bytes_byte_for_byte(tmp_path: Path) -> None:
    store = DirStore(tmp_path)
    bad = "# ours\n" + GOOD.replace("\tstate stopped", "\tstop_timout 5\n\tstate stopped")
    store.write(rec.RESOURCES_CFG, bad.encode())
    env = live_env(store)
    env.update_service_config("proc:web", {"state": "stopped"}, [])
    now = store.read(rec.RESOURCES_CFG)
    assert now is not None
    text = now.data.decode()
    assert text.startswith("# ours\n") and "\tstop_timout 5\n" in text, "comment and broken section kept"
    assert "proc: web\n\tcmd sleep 100\n\tnode n1\n\tstate stopped\n" in text
    # bytes that are not UTF-8 in another section: the edit lands, those bytes stay as they were
    undecodable = GOOD.replace("sleep 300", "sleep \xff").encode("latin-1")
    store.write(rec.RESOURCES_CFG, undecodable)
    env.update_service_config("proc:web", {"state": "stopped"}, [])
    after = store.read(rec.RESOURCES_CFG)
    assert after is not None
    assert after.data == undecodable.replace(b"node n1\n", b"node n1\n\tstate stopped\n", 1)
    # the section that holds them is not read, so an edit of it changes nothing
    env.update_service_config("proc:cache", {"state": "stopped"}, [])
    again = store.read(rec.RESOURCES_CFG)
    assert again is not None and again.data == after.data


def test_the_tools_refuse_a_non_utf8_file_with_one_line(tmp_path: Path) -> None:
    store = DirStore(tmp_path)
    store.write(rec.RESOURCES_CFG, b"proc: x\n\tcmd \xff\n")
    with pytest.raises(ConfigError) as e:
        rec.read_text(store, rec.RESOURCES_CFG)
    assert str(e.value).startswith("resources.cfg:2: ") and "\n" not in str(e.value)


def test_status_shows_a_config_line_only_when_a_file_has_errors() -> None:
    def lines(errors: dict[str, tuple[float | None, list[str]]]) -> list[str]:
        out = status_lines(
            node="n1", quorate=True, ms=ManagerStatus(), lrm={}, conf=ServiceConfig(), now=0.0,
            fmt_time=lambda t: f"T{t:.0f}", config_errors=errors,
        )  # fmt: skip
        return [ln.text() for ln in out]

    assert lines({}) == lines({"resources.cfg": (5.0, [])})
    shown = lines({"resources.cfg": (5.0, ["resources.cfg:3: bad", "resources.cfg:9: worse"])})
    assert shown[1] == (
        "config resources.cfg invalid since T5: resources.cfg:3: bad (and 1 more);"
        " the last good configuration stays in force"
    )


def test_a_fresh_master_neither_removes_nor_stops_a_service_whose_section_it_cannot_read(
    tmp_path: Path,
) -> None:
    """No earlier reading to carry over (a new master): the Manager leaves the service alone."""
    from ha.constants import Timing  # noqa: PLC0415
    from ha.crm import CRM  # noqa: PLC0415
    from ha.records import ServiceData  # noqa: PLC0415
    from ha.states import CrmState  # noqa: PLC0415

    store = DirStore(tmp_path)
    store.write(rec.RESOURCES_CFG, GOOD.replace("sleep 300", "sleep \xff").encode("latin-1"))
    ms = ManagerStatus(
        node_status={"n1": "online", "n2": "online", "n3": "online"},
        service_status={"proc:cache": ServiceData("started", "n3", "u1", running=True)},
    )
    rec.write_manager_status(store, ms)
    crm = CRM(live_env(store), Timing(crm_loop=0.0))
    for _ in range(6):
        crm.do_one_iteration()
    assert crm.state == CrmState.MASTER
    after = rec.read_manager_status(store)[0].service_status
    assert "proc:cache" in after, "removed from HA management"
    assert after["proc:cache"].state == "started", f"acted on: {after['proc:cache'].state}"
    assert after["proc:web"].state in ("request_start", "started"), "the readable ones are managed"
