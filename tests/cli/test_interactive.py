"""The interactive pieces through a pseudo-terminal: ``ha-manager shell`` and ``status --watch``."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.cli.conftest import REPO, Cluster

pytestmark = pytest.mark.timeout(90)

# optional dependencies of the shell and the watch view (pyproject: cli extras)
import pexpect  # noqa: E402 - dev dependency, installed by `make venv`

PROMPT = "ha-manager>"


def spawn(cluster: Cluster, *args: str, env: dict[str, str] | None = None) -> Any:
    child = pexpect.spawn(
        sys.executable, ["-m", "cli.ha_manager", *args], cwd=str(REPO),
        env={**cluster.env, "TERM": "xterm", "PROMPT_TOOLKIT_NO_CPR": "1", "COLUMNS": "120", **(env or {})},
        dimensions=(50, 120), encoding="utf-8", timeout=15,
    )  # fmt: skip
    return child


def test_shell_runs_commands_completes_and_keeps_history(cluster: Cluster, tmp_path: Path) -> None:
    history = tmp_path / "history"
    cluster.hm("add", "proc:shellsvc", "--node", "node2", "--cmd", "sleep 600", "--state", "stopped")
    child = spawn(cluster, "shell", env={"PYHA_HISTORY": str(history)})
    try:
        child.expect_exact(PROMPT)
        child.sendline("status")
        child.expect_exact("quorum OK")
        child.expect_exact(PROMPT)
        # completion of a subcommand and of a resource id (one match: inserted)
        # (the terminal shows the typed part and the completed rest as separate writes)
        child.send("conf\t")
        child.expect_exact("ig")
        child.sendline("")
        child.expect_exact("proc:shellsvc")
        child.expect_exact(PROMPT)
        child.send("set proc:shel\t")
        child.expect_exact("lsvc")
        child.sendline(" --comment from-the-shell")
        child.expect_exact(PROMPT)
        # node names complete (several matches: a menu)
        child.send("migrate proc:shellsvc no\t")
        child.expect("node1.*node2.*node3", timeout=10)
        child.send("\x15")  # Ctrl-U: clear the line
        # an error is one line and the shell goes on
        child.sendline("set proc:nope --state stopped")
        child.expect_exact("ha-manager: no such resource 'proc:nope'")
        child.expect_exact(PROMPT)
        child.sendline("frobnicate")
        child.expect_exact("No such command 'frobnicate'")
        child.expect_exact(PROMPT)
        child.sendline("help")
        child.expect_exact("crm-command")
        child.expect_exact(PROMPT)
        child.sendline("exit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert [r.get("comment") for r in cluster.json("config")["resources"] if r["sid"] == "proc:shellsvc"] == [
        "from-the-shell"
    ]
    lines = [ln[1:] for ln in history.read_text().splitlines() if ln.startswith("+")]
    assert lines[:3] == ["status", "config", "set proc:shellsvc --comment from-the-shell"]

    # the history is there in the next session: Up recalls the last command
    child = spawn(cluster, "shell", env={"PYHA_HISTORY": str(history)})
    try:
        child.expect_exact(PROMPT)
        child.send("\x1b[A")  # Up: the last line of the previous session
        child.expect_exact("exit")
        child.send("\x1b[A")
        child.expect_exact("help")
        child.send("\x15")
        child.sendeof()
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    cluster.hm("remove", "proc:shellsvc")


def test_watch_view_renders_tables_and_events(cluster: Cluster) -> None:
    sid = "proc:watched"
    cluster.hm("add", sid, "--node", "node3", "--cmd", "sleep 600")
    cluster.wait_service(sid, "started", "node3")
    # long enough for a loaded machine: the view ends by itself after --duration
    child = spawn(cluster, "status", "--watch", "--interval", "0.5", "--duration", "20")
    try:
        child.expect_exact("subscribed to the events of", timeout=20)
        child.expect_exact("services", timeout=20)
        child.expect_exact(sid, timeout=20)
        cluster.hm("set", sid, "--state", "stopped")
        # a node that is not the master diffs the records, so a short-lived request_stop
        # may be folded into the next state: accept both shapes, in order
        first = child.expect(
            [
                rf"service {sid}: started -> request_stop \(node3\)",
                rf"service {sid}: started -> stopped \(node3\)",
            ],
            timeout=15,
        )
        if first == 0:
            child.expect(rf"service {sid}: request_stop -> stopped \(node3\)", timeout=15)
        child.sendintr()  # Ctrl-C ends the view (cleanly: exit 0); --duration is the upper bound
        child.expect(pexpect.EOF, timeout=30)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    cluster.hm("remove", sid)


def test_watch_without_a_terminal_prints_plain_blocks_on_change(cluster: Cluster) -> None:
    """Issue #13: piped into a file or another program, --watch prints lines, not screen updates."""
    res = cluster.hm("status", "--watch", "--interval", "0.3", "--duration", "3", timeout=30)
    lines = res.stdout.splitlines()
    assert lines and lines[0].startswith("-- ") and "\x1b[" not in res.stdout
    assert "quorum OK" in lines
    blocks: list[list[str]] = []
    for ln in lines:
        if ln.startswith("-- "):
            blocks.append([])
        else:
            blocks[-1].append(ln)
    # one block at start, a new one only on a change (the cluster may still be settling
    # from the test before, and the status lines carry the nodes' timestamps): never the
    # same block twice in a row, as one per 0.3 s refresh would print
    assert 1 <= len(blocks) <= 11, lines
    for before, after in itertools.pairwise(blocks):
        assert after != before or any(ln.startswith("event ") for ln in after), lines


def test_the_events_stay_in_view_above_a_long_services_table() -> None:
    """A services table taller than the screen is cropped; the recent events must not be."""
    import io  # noqa: PLC0415

    from rich.console import Console  # noqa: PLC0415

    from cli.watch import render  # noqa: PLC0415

    lines = [{"type": "quorum", "text": "quorum OK", "status": "OK"}]
    lines += [{"type": "lrm", "node": f"node{i}", "status": f"node{i} (active)"} for i in (1, 2, 3)]
    lines += [
        {"type": "service", "sid": f"proc:s{i}", "node": "node1", "state": "started"} for i in range(60)
    ]
    status = {"lines": lines, "master": "node1", "full": {"manager_status": {}}}
    out = io.StringIO()
    console = Console(file=out, width=120, height=30, force_terminal=True, color_system=None)
    events = [
        "12:00:00 subscribed to the events of node1",
        "12:00:01 service proc:s7: started -> stopped (node1)",
    ]
    with console.capture() as cap:
        console.print(render("pyha", "node1", status, None, events), crop=True)
    shown = cap.get().splitlines()[:30]  # what a 30-row screen shows
    assert any("proc:s7: started -> stopped" in ln for ln in shown)
    assert not any("proc:s59" in ln for ln in shown)  # the table is what is cropped
