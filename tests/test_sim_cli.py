"""``ha-sim`` as a user meets it: a real subprocess per call."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.sim import generate
from tests.conftest import ORACLE_DIR

SAMPLE = ORACLE_DIR / "gen-0002-3n5s-groups-affinity-faults"


def ha_sim(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sim.cli", *args], capture_output=True, text=True, timeout=120, check=False
    )


def tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        h.update(str(p.relative_to(root)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def test_run_writes_log_and_status_and_leaves_scenario_alone(tmp_path: Path) -> None:
    scen = tmp_path / "scen"
    shutil.copytree(SAMPLE, scen)
    before = tree_digest(scen)
    out = tmp_path / "out"
    res = ha_sim("run", str(scen), "--out", str(out), "--quiet")
    assert res.returncode == 0, res.stderr
    assert tree_digest(scen) == before
    assert (out / "log").read_text() == (scen / "log.expect").read_text()
    ms = json.loads((out / "manager_status").read_text())
    assert ms["master_node"] == "node1"
    assert set(ms["service_status"]) == {"ct:166", "ct:585", "ct:821", "vm:122", "vm:805"}
    assert (out / "lrm_status_node1").exists()


def test_run_prints_the_log_by_default() -> None:
    res = ha_sim("run", str(SAMPLE))
    assert res.returncode == 0
    assert res.stdout == (SAMPLE / "log.expect").read_text()


def test_check_passes_and_fails_with_a_diff(tmp_path: Path) -> None:
    assert ha_sim("check", str(SAMPLE)).returncode == 0
    scen = tmp_path / "scen"
    shutil.copytree(SAMPLE, scen)
    lines = (scen / "log.expect").read_text().splitlines(keepends=True)
    lines[5] = lines[5].replace("node2", "node9")
    (scen / "log.expect").write_text("".join(lines))
    res = ha_sim("check", str(scen))
    assert res.returncode == 1
    assert res.stdout.startswith("---") and "+++" in res.stdout and "node9" in res.stdout


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda d: (d / "cmdlist").unlink(), "cmdlist: missing"),
        (lambda d: (d / "cmdlist").write_text('[["power node1 on"'), "invalid JSON in cmdlist"),
        (lambda d: (d / "cmdlist").write_text('{"a": 1}'), "expected a JSON list of lists"),
        (lambda d: (d / "hardware_status").write_text("[]"), "hardware_status"),
        (lambda d: (d / "service_config").write_text('{"vm:1x": {"node": "node1"}}'), "invalid service id"),
        (
            lambda d: (d / "service_config").write_text('{"vm:100": {"node": "node7"}}'),
            "unknown node 'node7'",
        ),
        (
            lambda d: (d / "service_config").write_text('{"vm:100": {"state": "started"}}'),
            "without assigned node",
        ),
        (lambda d: (d / "datacenter.cfg").write_text("{nope"), "datacenter.cfg"),
        (lambda d: (d / "rules_config").write_text("node-affinity: r1\n\tnodes node1\n"), "resources"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_2(tmp_path: Path, mutate, needle: str) -> None:  # type: ignore[no-untyped-def]
    scen = tmp_path / "scen"
    shutil.copytree(SAMPLE, scen)
    mutate(scen)
    res = ha_sim("run", str(scen), "--quiet")
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert needle in res.stderr


def test_missing_directory_and_missing_expect(tmp_path: Path) -> None:
    res = ha_sim("run", str(tmp_path / "nope"))
    assert res.returncode == 2 and "not a scenario directory" in res.stderr
    scen = tmp_path / "scen"
    shutil.copytree(SAMPLE, scen)
    (scen / "log.expect").unlink()
    res = ha_sim("check", str(scen))
    assert res.returncode == 2 and "log.expect: missing" in res.stderr


def test_fatal_scenario_error_ends_the_log_like_the_reference(tmp_path: Path) -> None:
    scen = tmp_path / "scen"
    shutil.copytree(SAMPLE, scen)
    (scen / "cmdlist").write_text(json.dumps([["power node1 on"], ["power node9 on"]]))
    res = ha_sim("run", str(scen))
    assert res.returncode == 0
    assert (
        res.stdout.splitlines()[-1]
        == "err     120     hardware: exit simulation - sim_hardware_cmd: no such node 'node9' "
    )


def _write_failover_scenario(folder: Path, nodes: int, services: int) -> None:
    """The generated failover of ``bench sim`` (every node on, the last one's network cut) as a folder."""
    sc = generate(nodes, services)
    folder.mkdir()
    (folder / "cmdlist").write_text(json.dumps(sc.cmdlist))
    (folder / "hardware_status").write_text(json.dumps(sc.hardware))
    (folder / "manager_status").write_text("{}")
    (folder / "service_config").write_text(json.dumps(sc.service_config))


def test_run_scale_fences_only_the_cut_node_of_a_big_cluster(tmp_path: Path) -> None:
    """``--scale`` (issue #15): 40 nodes run in parallel virtual time; without it the run loop
    refuses (a sequential round of 80 s would outlast the watchdog), as the reference does."""
    scen = tmp_path / "scen"
    _write_failover_scenario(scen, 40, 400)
    res = ha_sim("run", str(scen), "--quiet", "--scale", "--out", str(tmp_path / "out"))
    assert res.returncode == 0, res.stderr
    log = (tmp_path / "out" / "log").read_text()
    assert log.endswith("hardware: exit simulation - done\n")
    assert log.count("SUCCEED: fencing: acknowledged - got agent lock for node") == 1
    assert "SUCCEED: fencing: acknowledged - got agent lock for node 'node40'" in log
    hw = json.loads((tmp_path / "out" / "hardware_status").read_text())
    assert [n for n, st in hw.items() if st["power"] == "off"] == ["node40"]
    ms = json.loads((tmp_path / "out" / "manager_status").read_text())
    assert len(ms["service_status"]) == 400
    assert all(sd["state"] == "started" and sd["node"] != "node40" for sd in ms["service_status"].values())

    plain = ha_sim("run", str(scen), "--quiet", "--out", str(tmp_path / "plain"))
    assert plain.returncode == 0
    refused = "unable to simulate so many nodes. You need to increase watchdog/lock timeouts. \n"
    assert (tmp_path / "plain" / "log").read_text().endswith(refused)
