"""Every example of the reference's chapter, typed as written (issue #13).

The examples are taken from the chapter itself (``$PYHA_SEED_DOC``, default
/work/shared/seed/ha-manager.adoc): the ``# ha-manager ...`` command lines of
its listing blocks and its ``.Configuration Example`` files. A 4-node cluster
(the chapter's groups name node1-node4):

- stopped, the example files are written to its store byte for byte and
  read back by ``ha-manager config``/``groupconfig`` (indented comment, no
  ``node``: placed, each on one node);
- running, every command line is run as written and must exit 0; the
  resulting configuration is the chapter's.

Guests are real: the chapter's ``ct:102`` runs as a crun container with the
built-in busybox tree (agents/ct.py; its init answers the health ping on the
node it was placed on), a ``vm:`` boots the built-in QEMU guest (agents/vm.py).
``ha-manager set vm:100 --state disabled`` needs a ``vm:100``, which the
chapter assumes exists (a service in error); it is added first.
``ha-manager set SID -state REQUEST_STATE`` is a template: run with
``vm:100`` and ``stopped``.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from admin.cluster import ClusterConfig
from agents.ct import CtPlugin, ping_container
from ha.config.groups import parse_groups_cfg
from store.dirstore import DirStore
from tests.cli.conftest import Cluster

pytestmark = pytest.mark.timeout(180)

SEED = Path(os.environ.get("PYHA_SEED_DOC", "/work/shared/seed/ha-manager.adoc"))
TEMPLATES = {"SID": "vm:100", "REQUEST_STATE": "stopped"}


def chapter() -> str:
    assert SEED.is_file(), f"the reference chapter is not at {SEED} (set $PYHA_SEED_DOC)"
    return SEED.read_text()


def listing_blocks(text: str) -> list[tuple[str, list[str]]]:
    """(title line before the block or "", lines) of every ``----`` listing block."""
    blocks: list[tuple[str, list[str]]] = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        # a listing starts after a blank line, a block title or a "+" (a heading's underline follows its text)
        if lines[i] == "----" and (i == 0 or not lines[i - 1].strip() or lines[i - 1].startswith((".", "+"))):
            title = lines[i - 1] if i > 0 else ""
            j = lines.index("----", i + 1)
            blocks.append((title, lines[i + 1 : j]))
            i = j + 1
        else:
            i += 1
    return blocks


def command_lines(text: str) -> list[list[str]]:
    """The ``# ha-manager ...`` lines as argv, templates filled in."""
    out = []
    for _, block in listing_blocks(text):
        for ln in block:
            if ln.startswith("# ha-manager "):
                out.append([TEMPLATES.get(w, w) for w in shlex.split(ln[len("# ha-manager ") :])])
    return out


def example_files(text: str) -> dict[str, str]:
    """``.Configuration Example (`/etc/pve/ha/NAME`)`` blocks: name -> text."""
    out = {}
    for title, block in listing_blocks(text):
        m = re.fullmatch(r"\.Configuration Example \(`/etc/pve/ha/([a-z]+\.cfg)`\)", title)
        if m:
            out[m.group(1)] = "\n".join(block) + "\n"
    return out


@pytest.fixture(scope="module")
def four() -> Iterator[Cluster]:
    root = Path(tempfile.mkdtemp(prefix="pyha-chapter-"))
    c = None
    try:
        c = Cluster(root, nodes=4)
        yield c
    finally:
        if c is not None:
            c.close()
        shutil.rmtree(root, ignore_errors=True)


def resources(c: Cluster) -> dict[str, dict[str, Any]]:
    return {r["sid"]: r for r in c.json("config")["resources"]}


def test_the_chapter_has_the_examples_this_test_runs() -> None:
    text = chapter()
    assert sorted(example_files(text)) == ["groups.cfg", "resources.cfg"]
    cmds = command_lines(text)
    assert ["add", "ct:102"] in cmds and [
        "groupadd",
        "mygroup2",
        "-nodes",
        "node1,node2",
        "-restricted",
    ] in cmds
    assert len(cmds) == 8, cmds


def test_example_files_load_unchanged(four: Cluster) -> None:
    """Stopped cluster: the files as the chapter prints them, read by ha-manager."""
    files = example_files(chapter())
    store = DirStore(four.dir / "store")
    try:
        for name, text in files.items():
            store.write(name, text.encode())
    finally:
        store.close()
    res = resources(four)
    assert sorted(res) == ["ct:102", "vm:501"]
    assert (res["vm:501"]["state"], res["vm:501"]["max_relocate"]) == ("started", 2)
    assert (res["ct:102"]["state"], res["ct:102"]["max_relocate"]) == ("started", 1)
    # placed on load, least loaded first: two nodes, one each, recorded as locations
    assert {res[s]["node"] for s in res} <= set(four.nodes) and res["vm:501"]["node"] != res["ct:102"]["node"]
    placed = {p.name: p.read_text().split()[0] for p in (four.dir / "store" / "locations").iterdir()}
    assert placed == {"vm:501": res["vm:501"]["node"], "ct:102": res["ct:102"]["node"]}
    # the file itself is the user's, unchanged
    assert (four.dir / "store" / "resources.cfg").read_text() == files["resources.cfg"]
    groups = four.json("groupconfig")["groups"]
    want = parse_groups_cfg(files["groups.cfg"])[0].groups
    assert {g["group"]: g["nodes"] for g in groups} == {
        "prefer_node1": "node1", "mygroup1": "node1:2,node2:1,node3:1,node4", "mygroup2": "node1,node2",
    }  # fmt: skip
    assert [g["group"] for g in groups if g["restricted"]] == ["mygroup2"] and set(want) == {
        g["group"] for g in groups
    }
    # a later edit keeps the indented comment
    four.hm("set", "ct:102", "--comment", "edited")
    assert (
        "    # Note: use default settings for everything\n"
        in (four.dir / "store" / "resources.cfg").read_text()
    )
    # start again from nothing for the command examples
    for sid in res:
        four.hm("remove", sid)
    for g in want:
        four.hm("groupremove", g)
    assert resources(four) == {} and four.json("groupconfig")["groups"] == []


def test_every_command_of_the_chapter_on_a_live_cluster(four: Cluster) -> None:
    four.hm("add", "proc:seed", "--node", "node4", "--cmd", "sleep 600")  # a master needs a service
    four.up()
    four.wait_ready()
    four.hm("add", "vm:100", "--state", "stopped")  # the chapter's vm:100 exists already
    ran = []
    for argv in command_lines(chapter()):
        res = four.hm(*argv, code=None)
        assert res.returncode == 0, f"ha-manager {shlex.join(argv)}: exit {res.returncode}: {res.stderr}"
        ran.append(argv[0])
    assert ran == ["status", "add", "add", "groupadd", "groupadd", "groupadd", "set", "set"]
    res = resources(four)
    assert (res["vm:501"]["state"], res["vm:501"]["max_relocate"]) == ("started", 2)
    assert res["ct:102"]["state"] == "started" and res["vm:100"]["state"] == "stopped"
    # without --node each went where placement puts it: a cluster member, least loaded first
    assert res["vm:501"]["node"] in four.nodes and res["ct:102"]["node"] in four.nodes
    assert res["vm:501"]["node"] != "node4" and res["ct:102"]["node"] not in ("node4", res["vm:501"]["node"])
    # the groups are the chapter's groups.cfg (same groups and values; we write sorted)
    want = parse_groups_cfg(example_files(chapter())["groups.cfg"])[0].groups
    got = parse_groups_cfg(four.hm("groupconfig").stdout)[0].groups
    assert {k: (g.nodes, g.restricted, g.nofailback) for k, g in got.items()} == {
        k: (g.nodes, g.restricted, g.nofailback) for k, g in want.items()
    }
    # and they stay groups on a running cluster whose nodes are all online (no migration)
    st = four.hm("status").stdout
    assert "service vm:501 (" in st and "service ct:102 (" in st
    # the container really runs where it was placed: its init answers (pid 1 of its own namespace)
    node = res["ct:102"]["node"]
    four.wait_service("ct:102", "started", node=node, timeout=30)
    io = CtPlugin(ClusterConfig.load(four.dir).state_dir, cgroup_base=None).io_dir(node, "102")
    answer = ping_container(io, timeout=5.0)
    assert answer is not None and (answer.pid, answer.hostname) == (1, "ct102"), answer
    assert sorted(g["group"] for g in four.json("groupconfig")["groups"]) == sorted(want)


def test_status_after_down_says_nothing_runs(four: Cluster) -> None:
    if four.pid("node1") is None:  # run alone: a cluster that ran, with a master and a service
        four.hm("add", "proc:seed", "--node", "node4", "--cmd", "sleep 600", code=None)
        four.up()
        four.wait_ready()
    four.run("cli.ha_cluster", "down", str(four.dir), "--timeout", "15")
    out = four.hm("status").stdout.splitlines()
    assert out[0] == "quorum none: no node of this cluster runs (ha-cluster up starts them)"
    assert out[1].startswith("master node") and "(not running; stale, last known: active, " in out[1]
    assert "fencing none (no node runs)" in out
    services = [ln for ln in out if ln.startswith("service ")]
    assert services and all("(not running; stale, last known: " in ln for ln in services)
    assert not [ln for ln in out if "armed" in ln or "No quorum on node" in ln]
    assert four.json("status")["running"] is False
