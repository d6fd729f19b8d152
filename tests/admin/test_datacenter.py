"""datacenter.cfg through the API (issue #14): every key and value checked, unknown modes refused,
only the changed lines rewritten, read-only keys refused.

The edits go through :class:`admin.ops.ApiOps` on a directory store: the path the node API
and ``ha-manager --offline`` both take.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from admin.errors import AdminError, ExitCode
from admin.ops import ROLE_READONLY, ApiOps
from ha.config.datacenter import parse_datacenter_cfg
from store import records as rec
from store.dirstore import DirStore

PVE_STYLE = (
    "# written by hand\n"
    "keyboard: de\n"
    "ha: shutdown_policy=conditional\n"
    "migration: secure,network=10.0.0.0/24\n"
    "# the scheduler\n"
    "crs: ha=static,ha-rebalance-on-start=1\n"
)


@pytest.fixture
def store(tmp_path: Path) -> DirStore:
    return DirStore(tmp_path)


def ops(store: DirStore) -> ApiOps:
    return ApiOps("n1", ["n1", "n2"], store, lambda: True)


def text(store: DirStore) -> str:
    r = store.read(rec.DATACENTER_CFG)
    return "" if r is None else r.data.decode()


def dc_set(store: DirStore, role: str = "admin", **args: Any) -> Any:
    return ops(store).call("datacenter_set", args, role)


def refused(store: DirStore, code: ExitCode, match: str, role: str = "admin", **args: Any) -> None:
    before = store.read(rec.DATACENTER_CFG)
    with pytest.raises(AdminError, match=match) as e:
        dc_set(store, role, **args)
    assert e.value.code == code
    assert "\n" not in str(e.value)
    assert store.read(rec.DATACENTER_CFG) == before, "a refused edit writes nothing"


def test_one_property_changes_only_its_own_line_and_keeps_everything_else(store: DirStore) -> None:
    store.write(rec.DATACENTER_CFG, PVE_STYLE.encode())
    dc_set(store, options={"crs.ha": "dynamic", "crs.ha-auto-rebalance": "yes"})
    assert text(store) == PVE_STYLE.replace(
        "crs: ha=static,ha-rebalance-on-start=1",
        "crs: ha=dynamic,ha-rebalance-on-start=1,ha-auto-rebalance=1",
    )
    dc_set(store, options={"ha.shutdown_policy": "migrate"}, delete=["crs.ha-rebalance-on-start"])
    assert "ha: shutdown_policy=migrate\n" in text(store)
    assert "crs: ha=dynamic,ha-auto-rebalance=1\n" in text(store)
    assert text(store).startswith("# written by hand\nkeyboard: de\n")
    assert "migration: secure,network=10.0.0.0/24\n# the scheduler\n" in text(store)
    dc = parse_datacenter_cfg(text(store))
    assert (dc.crs_mode, dc.auto_rebalance, dc.rebalance_on_start, dc.shutdown_policy) == (
        "dynamic", True, False, "migrate",
    )  # fmt: skip


def test_missing_lines_are_added_and_empty_ones_removed(store: DirStore) -> None:
    store.write(rec.DATACENTER_CFG, b"keyboard: de")  # no final line break
    dc_set(store, options={"crs.ha": "static", "max_workers": 4})
    assert text(store) == "keyboard: de\ncrs: ha=static\nmax_workers: 4\n"
    dc_set(store, delete=["crs.ha", "max_workers"])
    assert text(store) == "keyboard: de\n"


def test_a_whole_line_is_replaced_with_every_property_checked(store: DirStore) -> None:
    store.write(rec.DATACENTER_CFG, PVE_STYLE.encode())
    dc_set(store, options={"crs": "ha=basic,ha-auto-rebalance-method=topsis,ha-auto-rebalance=on"})
    assert "crs: ha=basic,ha-auto-rebalance-method=topsis,ha-auto-rebalance=1\n" in text(store)
    refused(
        store,
        ExitCode.USAGE,
        "crs: unknown property 'ha-rebalance'",
        options={"crs": "ha=static,ha-rebalance=1"},
    )
    refused(store, ExitCode.USAGE, "property 'ha' given twice", options={"crs": "ha=static,ha=basic"})
    refused(store, ExitCode.USAGE, "expected 'name=value'", options={"ha": "migrate"})
    refused(store, ExitCode.USAGE, "empty value", options={"crs": " "})
    dc_set(store, delete=["crs"])
    assert "crs:" not in text(store)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"crs.ha": "fancy"}, r"crs.ha: invalid value 'fancy' \(one of basic, static, dynamic\)"),
        ({"crs": "ha=fancy"}, "invalid value 'fancy'"),
        ({"crs.ha": "Static"}, "invalid value 'Static'"),
        ({"ha.shutdown_policy": "stop"}, "invalid value 'stop'"),
        ({"crs.ha-rebalance-on-start": "maybe"}, "invalid boolean value 'maybe'"),
        ({"crs.ha-auto-rebalance-threshold": "-1"}, "must be a number >= 0"),
        ({"crs.ha-auto-rebalance-hold-duration": "1001"}, "must be <= 1000"),
        ({"max_workers": "four"}, "expected a non-negative integer"),
        ({"crs.ha": "static\nha: shutdown_policy=freeze"}, "U\\+000A not allowed"),
        ({"crs.ha": ["static"]}, "expected enum"),
    ],
)
def test_a_bad_value_is_refused_and_nothing_written(
    store: DirStore, options: dict[str, object], match: str
) -> None:
    store.write(rec.DATACENTER_CFG, PVE_STYLE.encode())
    refused(store, ExitCode.USAGE, match, options=options)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ({"options": {"ha": "shutdown_policy=migrate", "bogus": "1"}}, "unknown datacenter option 'bogus'"),
        ({"options": {"keyboard": "en"}}, "unknown datacenter option 'keyboard'"),  # not ours
        ({"options": {"shutdown_policy": "migrate"}}, "unknown datacenter option 'shutdown_policy'"),
        ({"options": {"crs.mode": "static"}}, "unknown datacenter option 'crs.mode'"),
        ({"delete": ["crs.nope"]}, "unknown datacenter option 'crs.nope'"),
        ({"options": {"crs.ha": "static"}, "delete": ["crs.ha"]}, "both set and deleted"),
        ({"options": {"crs": "ha=static", "crs.ha-auto-rebalance": "1"}}, "give one or the other"),
        ({}, "nothing to change"),
        ({"options": {"crs.ha": "static"}, "extra": 1}, "unknown argument 'extra'"),
    ],
)
def test_unknown_keys_and_contradictions_are_refused(
    store: DirStore, args: dict[str, Any], match: str
) -> None:
    store.write(rec.DATACENTER_CFG, PVE_STYLE.encode())
    refused(store, ExitCode.USAGE, match, **args)


def test_a_read_only_key_may_read_but_not_write(store: DirStore) -> None:
    store.write(rec.DATACENTER_CFG, PVE_STYLE.encode())
    assert ops(store).call("datacenter", {}, ROLE_READONLY)["options"]["crs.ha"] == "static"
    refused(store, ExitCode.FORBIDDEN, "needs an admin key", role=ROLE_READONLY, options={"crs.ha": "basic"})


def test_digest_guards_against_a_concurrent_change(store: DirStore) -> None:
    store.write(rec.DATACENTER_CFG, PVE_STYLE.encode())
    digest = ops(store).call("datacenter", {})["digest"]
    new = dc_set(store, options={"crs.ha": "basic"}, digest=digest)["digest"]
    assert new != digest and new == ops(store).call("datacenter", {})["digest"]
    refused(store, ExitCode.CONFLICT, "digest mismatch", options={"crs.ha": "static"}, digest=digest)


def test_a_broken_line_is_never_edited_in_part_but_may_be_replaced_whole(store: DirStore) -> None:
    broken = PVE_STYLE.replace("crs: ha=static,ha-rebalance-on-start=1", "crs: ha=static,rebalance")
    store.write(rec.DATACENTER_CFG, broken.encode())
    refused(store, ExitCode.CONFLICT, r"datacenter.cfg:6: crs: expected 'name=value', got 'rebalance'.*--crs",
            options={"crs.ha": "basic"})  # fmt: skip
    # another line's edit would leave the file unreadable for the master: refused too
    refused(store, ExitCode.CONFLICT, "datacenter.cfg is invalid", options={"ha.shutdown_policy": "migrate"})
    dc_set(store, options={"crs": "ha=basic"})
    assert text(store) == PVE_STYLE.replace("crs: ha=static,ha-rebalance-on-start=1", "crs: ha=basic")


def test_an_unknown_mode_in_the_file_is_reported_not_taken_for_basic(store: DirStore) -> None:
    store.write(rec.DATACENTER_CFG, PVE_STYLE.replace("ha=static", "ha=fancy").encode())
    view = ops(store).call("datacenter", {})
    assert view["errors"] and "datacenter.cfg:6" in view["errors"][0] and "'fancy'" in view["errors"][0]
    assert view["lines"]["crs"] == "ha=fancy,ha-rebalance-on-start=1"
    assert "crs.ha" not in view["set"]
    refused(store, ExitCode.CONFLICT, "is invalid", options={"max_workers": "2"})


def test_two_lines_of_one_key_are_refused_when_edited(store: DirStore) -> None:
    store.write(rec.DATACENTER_CFG, (PVE_STYLE + "crs: ha=basic\n").encode())
    refused(store, ExitCode.CONFLICT, r"2 'crs' lines \(lines 6, 7\)", options={"crs.ha": "dynamic"})
    refused(store, ExitCode.CONFLICT, "2 'crs' lines", options={"crs": "ha=dynamic"})
    dc_set(store, options={"ha.shutdown_policy": "freeze"})  # another line: fine
    assert "ha: shutdown_policy=freeze\n" in text(store)


def test_a_property_written_twice_in_a_line_is_not_edited_in_part(store: DirStore) -> None:
    store.write(rec.DATACENTER_CFG, b"crs: ha=static,ha-auto-rebalance=1,ha=basic\n")
    refused(store, ExitCode.CONFLICT, "property 'ha' written twice", options={"crs.ha": "dynamic"})
    refused(store, ExitCode.CONFLICT, "property 'ha' written twice", delete=["crs.ha"])
    dc_set(store, options={"crs.ha-auto-rebalance": "0"})  # another property of the line: fine
    assert text(store) == "crs: ha=static,ha-auto-rebalance=0,ha=basic\n"


def test_properties_not_ours_in_the_ha_line_are_kept(store: DirStore) -> None:
    store.write(rec.DATACENTER_CFG, b"ha: shutdown_policy=freeze,future=1\n")
    dc_set(store, options={"ha.shutdown_policy": "failover"})
    assert text(store) == "ha: shutdown_policy=failover,future=1\n"
    assert "unknown property 'ha.future'" in ops(store).call("datacenter", {})["errors"][0]


def test_a_file_that_is_not_utf8_is_not_edited(store: DirStore) -> None:
    store.write(rec.DATACENTER_CFG, b"keyboard: \xff\xfe\n")
    refused(store, ExitCode.REFUSED, "UTF-8", options={"crs.ha": "static"})
    assert "UTF-8" in ops(store).call("datacenter", {})["errors"][0]


def test_the_view_shows_defaults_and_what_is_set(store: DirStore) -> None:
    view = ops(store).call("datacenter", {})  # no file at all
    assert view["digest"] == "" and view["set"] == [] and view["errors"] == []
    assert view["options"]["crs.ha"] == "basic" and view["options"]["max_workers"] is None
    store.write(rec.DATACENTER_CFG, PVE_STYLE.encode())
    view = ops(store).call("datacenter", {})
    assert view["set"] == ["ha.shutdown_policy", "crs.ha", "crs.ha-rebalance-on-start"]
    assert view["options"]["crs.ha-rebalance-on-start"] == "1"
    assert view["options"]["crs.ha-auto-rebalance-threshold"] == "0.3"
    assert view["lines"] == {"ha": "shutdown_policy=conditional", "crs": "ha=static,ha-rebalance-on-start=1"}
