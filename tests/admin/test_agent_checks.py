"""ha-manager add/set run the agent's own checks before writing (issue #10): no service goes to error
for a value the agent refuses, and the user gets the agent's message at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from admin.errors import AdminError, ExitCode
from admin.resources import add_resource, set_resource
from store import records as rec
from store.dirstore import DirStore

NODES = ["n1", "n2"]


@pytest.mark.parametrize(
    ("sid", "options", "message"),
    [
        ("proc:a", {"cmd": "sleep 9", "cwd": "/nonexistent/dir"}, "no directory '/nonexistent/dir'"),
        ("ocf:b", {"agent": "heartbeat:NoSuch"}, "no OCF agent heartbeat:NoSuch"),
        ("proc:c", {"cmd": "sleep 9", "env": "1BAD=x"}, "is not KEY=VALUE"),
        ("ocf:d", {"agent": "heartbeat:Dummy", "params": "=x"}, "params"),
    ],
)
def test_add_refuses_what_the_agent_would_refuse(
    tmp_path: Path, sid: str, options: dict[str, str], message: str
) -> None:
    store = DirStore(tmp_path)
    with pytest.raises(AdminError, match=message) as e:
        add_resource(store, sid, {"node": "n1", **options}, NODES)
    assert e.value.code == ExitCode.USAGE
    assert store.read(rec.RESOURCES_CFG) is None, "nothing written"


def test_set_refuses_what_the_agent_would_refuse_and_keeps_the_old_value(tmp_path: Path) -> None:
    store = DirStore(tmp_path)
    add_resource(store, "proc:a", {"node": "n1", "cmd": "sleep 9", "cwd": str(tmp_path)}, NODES)
    before = store.read(rec.RESOURCES_CFG)
    with pytest.raises(AdminError, match="no directory"):
        set_resource(store, "proc:a", {"cwd": str(tmp_path / "gone")}, [])
    after = store.read(rec.RESOURCES_CFG)
    assert before is not None and after is not None and after.data == before.data


def test_an_existing_ocf_agent_is_accepted(tmp_path: Path) -> None:
    store = DirStore(tmp_path)
    add_resource(store, "ocf:dummy", {"node": "n1", "agent": "heartbeat:Dummy"}, NODES)
    record = store.read(rec.RESOURCES_CFG)
    assert record is not None and b"agent heartbeat:Dummy" in record.data
