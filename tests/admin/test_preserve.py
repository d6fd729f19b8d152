"""Issue #10, "edits preserve what they do not understand": comments, typos, broken sections survive."""

from __future__ import annotations

from pathlib import Path

import pytest

from admin.errors import AdminError, ExitCode
from admin.ops import ApiOps
from ha.config.resources import format_resources_cfg, parse_resources_cfg
from ha.config.sectionconfig import preserve_edit, split_chunks
from store import records as rec
from store.dirstore import DirStore

COMMENT = "# web tier: ask alice before touching\n"
TYPO = "proc: typo\n\tcmd sleep 600\n\tnode node1\n\tstop_timout 5\n\n"
GOOD = "proc: web\n\tcmd sleep 600\n\tnode node1\n\n"
LAST = "proc: zz\n# keep this one as it is\n\tcmd sleep 1\n\tnode node2\n"


@pytest.fixture
def ops(tmp_path: Path) -> ApiOps:
    store = DirStore(tmp_path / "store")
    store.write(rec.RESOURCES_CFG, (COMMENT + TYPO + GOOD + LAST).encode())
    return ApiOps("node1", ["node1", "node2"], store, lambda: True, require_quorum=False)


def _text(ops: ApiOps) -> str:
    return rec.read_text(ops.store, rec.RESOURCES_CFG)[0]


def test_an_edit_of_another_resource_keeps_comments_and_broken_sections(ops: ApiOps) -> None:
    ops.call("set", {"sid": "proc:web", "options": {"state": "stopped"}})
    text = _text(ops)
    assert text.startswith(COMMENT + TYPO)  # byte for byte
    assert "proc: web\n\tcmd sleep 600\n\tnode node1\n\tstate stopped\n\n" in text
    assert text.endswith(LAST)  # untouched section, with its comment, byte for byte
    conf, errors = parse_resources_cfg(text)
    assert set(conf.services) == {"proc:web", "proc:zz"} and "stop_timout" in str(errors[0])


def test_add_and_remove_keep_them_too(ops: ApiOps) -> None:
    ops.call("add", {"sid": "proc:new", "options": {"node": "node2", "cmd": "sleep 1"}})
    ops.call("remove", {"sid": "proc:web"})
    text = _text(ops)
    assert text == COMMENT + TYPO + LAST + "\n" + "proc: new\n\tcmd sleep 1\n\tnode node2\n\n"
    assert set(parse_resources_cfg(text)[0].services) == {"proc:new", "proc:zz"}


def test_an_edit_that_would_replace_a_broken_section_is_refused(ops: ApiOps) -> None:
    before = _text(ops)
    with pytest.raises(AdminError) as e:
        ops.call("add", {"sid": "proc:typo", "options": {"node": "node1", "cmd": "sleep 1"}})
    assert e.value.code == ExitCode.CONFLICT and "section 'proc:typo' is invalid" in str(e.value)
    assert _text(ops) == before


def test_a_canonical_file_is_written_as_the_writer_writes_it() -> None:
    text = GOOD + "proc: zz\n\tcmd sleep 1\n\tnode node2\n\n"
    conf, _ = parse_resources_cfg(text)
    before = format_resources_cfg(conf)
    conf.services["proc:web"].state = "stopped"
    after = format_resources_cfg(conf)
    assert before == text and preserve_edit(text, before, after, "r") == after


@pytest.mark.parametrize(
    "text", ["", "a", "\n\n", COMMENT + TYPO + GOOD + LAST, "x\nproc: a\n\n\n#c\nproc: b"]
)
def test_chunks_join_back_to_the_text(text: str) -> None:
    assert "".join(c.text for c in split_chunks(text)) == text


def test_a_master_side_edit_keeps_them_too(tmp_path: Path) -> None:
    """The CRM's own edits of resources.cfg (``crm-command stop``, a node change) go the same way."""
    from tests.envstubs import live_env  # noqa: PLC0415

    store = DirStore(tmp_path / "store")
    store.write(rec.RESOURCES_CFG, (COMMENT + TYPO + GOOD + LAST).encode())
    live_env(store, "node1", "node1#t").update_service_config("proc:web", {"state": "stopped"}, [])
    text = rec.read_text(store, rec.RESOURCES_CFG)[0]
    assert text == COMMENT + TYPO + GOOD.replace("node1\n", "node1\n\tstate stopped\n") + LAST
