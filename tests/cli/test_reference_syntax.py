"""The reference's command syntax (issue #13): ``-opt`` and ``--opt``, ``--opt=value``, bare
boolean flags, ``help [COMMAND] [--verbose]``, distinct exit codes, one-line errors.

Runs ``ha-manager`` as processes against a stopped cluster (the commands work on its store,
with the same validation as a running one): the syntax is the CLI's, not the nodes'.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli.conftest import PY, REPO, Cluster

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def offline() -> Iterator[Cluster]:
    root = Path(tempfile.mkdtemp(prefix="pyha-syntax-"))
    try:
        yield Cluster(root, nodes=4)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def resource(c: Cluster, sid: str) -> dict[str, Any]:
    found = [r for r in c.json("config")["resources"] if r["sid"] == sid]
    assert len(found) == 1, found
    return dict(found[0])


def one_error_line(res: subprocess.CompletedProcess[str]) -> str:
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    return lines[0]


def test_single_dash_options_and_equals(offline: Cluster) -> None:
    offline.hm("add", "proc:dash", "-node", "node1", "-cmd", "sleep 600", "-state", "stopped")
    offline.hm("set", "proc:dash", "-state", "disabled", "--max_relocate=3", "-comment=a b")
    r = resource(offline, "proc:dash")
    assert (r["state"], r["max_relocate"], r["comment"]) == ("disabled", 3, "a b")
    # a single-dash word that is no option of the command stays an error, as one line
    res = offline.hm("set", "proc:dash", "-bogus", "1", code=2)
    assert "No such option" in one_error_line(res)


def test_bare_boolean_flag_means_one(offline: Cluster) -> None:
    offline.hm("add", "proc:flag", "--node", "node2", "--cmd", "sleep 600", "-failback", "0")
    assert resource(offline, "proc:flag")["failback"] in (0, False)
    offline.hm("set", "proc:flag", "-failback", "-comment", "x")
    assert resource(offline, "proc:flag")["failback"] in (1, True)
    offline.hm("set", "proc:flag", "--failback=0")
    assert resource(offline, "proc:flag")["failback"] in (0, False)
    offline.hm("remove", "proc:flag", "-purge")
    assert "proc:flag" not in {r["sid"] for r in offline.json("config")["resources"]}


def test_help_command(offline: Cluster) -> None:
    out = offline.hm("help").stdout
    assert "Usage: ha-manager" in out and "groupadd" in out
    out = offline.hm("help", "rules", "add").stdout
    assert out.startswith("Usage: ha-manager rules add [OPTIONS] TYPE RULE")
    verbose = offline.hm("help", "--verbose").stdout
    # every command's own help, subcommands too
    for usage in ("ha-manager set [OPTIONS] SID", "ha-manager crm-command stop [OPTIONS] SID TIMEOUT",
                  "ha-manager rules remove"):  # fmt: skip
        assert usage in verbose, usage
    res = offline.hm("help", "frobnicate", code=2)
    assert "no such command 'frobnicate'" in one_error_line(res)


def test_exit_codes_usage_missing_cluster_unreachable_are_distinct(offline: Cluster, tmp_path: Path) -> None:
    usage = offline.hm("status", "--bogus", code=None).returncode
    missing = offline.hm("--cluster", str(tmp_path / "nothing"), "status", code=None)
    assert "no cluster in" in one_error_line(missing)
    # a cluster whose nodes do not answer: a copy of the stopped one with a node "running"
    # (a pid file of a live process that is no node) and unused ports
    copy = tmp_path / "copy"
    shutil.copytree(offline.dir, copy)
    (copy / "run" / "node1").mkdir(parents=True, exist_ok=True)
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        (copy / "run" / "node1" / "ha-node.pid").write_text(str(sleeper.pid))
        unreachable = offline.hm("--cluster", str(copy), "--timeout", "0.5", "status", code=None)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert (usage, missing.returncode, unreachable.returncode) == (2, 3, 6), unreachable.stderr


def test_crm_stop_negative_timeout_is_one_clear_line(offline: Cluster) -> None:
    res = offline.hm("crm-command", "stop", "proc:dash", "-1", code=2)
    line = one_error_line(res)
    assert "timeout must be 0 or more seconds" in line and "-1" in line
    assert "No such option" not in line


def test_node_maintenance_empty_node_names_no_internal_command(offline: Cluster) -> None:
    res = offline.hm("crm-command", "node-maintenance", "enable", "", code=3)
    line = one_error_line(res)
    assert "unknown node ''" in line and "enable-node-maintenance" not in line


def test_shell_unknown_command_is_one_line(offline: Cluster) -> None:
    import pexpect  # noqa: PLC0415 - dev dependency

    child = pexpect.spawn(
        sys.executable, ["-m", "cli.ha_manager", "shell"], cwd=str(REPO),
        env={**offline.env, "TERM": "dumb", "PROMPT_TOOLKIT_NO_CPR": "1", "PYHA_HISTORY": "/dev/null"},
        dimensions=(50, 200), encoding="utf-8", timeout=15,
    )  # fmt: skip
    try:
        child.expect_exact("ha-manager>")
        child.sendline("xyzzy")
        child.expect_exact("ha-manager>")
        reply = [ln for ln in child.before.replace("\r", "").splitlines() if ln.strip()][1:]
        assert reply == ["ha-manager: No such command 'xyzzy'."], reply
        child.sendline("help groupadd")
        child.expect_exact("Usage: ha-manager groupadd")
        child.expect_exact("ha-manager>")
        child.sendline("exit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)


def test_installed_console_script_takes_reference_syntax(offline: Cluster) -> None:
    script = Path(PY).with_name("ha-manager")
    assert script.exists(), script
    res = subprocess.run([str(script), "set", "proc:dash", "-state", "stopped"], capture_output=True,
                         text=True, env=offline.env, timeout=30, check=False)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert resource(offline, "proc:dash")["state"] == "stopped"


def complete(c: Cluster, line: str) -> list[str]:
    """What ``ha-manager completion bash`` answers for ``line`` as bash splits it (':' breaks words)."""
    words = line.replace(":", " : ").split()
    cword = len(words) if line.endswith(" ") else len(words) - 1
    env = {"COMP_WORDS": " ".join(["ha-manager", *words]), "COMP_CWORD": str(cword + 1),
           "_HA_MANAGER_COMPLETE": "bash_complete"}  # fmt: skip
    out = c.hm(env=env).stdout
    return [ln.split(",", 1)[1] for ln in out.splitlines() if ln.startswith("plain,")]


def test_bash_completion_of_type_name_ids(offline: Cluster) -> None:
    offline.hm("add", "proc:g1", "--node", "node1", "--cmd", "sleep 600")
    try:
        assert complete(offline, "migrate proc:g1 ") == offline.nodes  # nodes after a TYPE:NAME id
        assert complete(offline, "migrate proc:g") == ["g1"]  # bash replaces what follows the ':'
        assert "proc:g1" in complete(offline, "migrate pro")
    finally:
        offline.hm("remove", "proc:g1")
