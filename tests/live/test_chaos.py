"""Chaos (bench/chaos/) in the suite: short seeded fault schedules on live clusters.

Each test runs ``python -m bench chaos`` as a process (it installs signal handlers
and tears its cluster down itself) and checks its JSON line: no service ever ran
twice, every service answers after the settle period, every enabled fault kind
was injected at least once (``--cover``), and nothing of the cluster is left
running afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bench.livecluster import process_cmdline

pytestmark = pytest.mark.timeout(300)

REPO = Path(__file__).resolve().parents[2]


def _need_tools(etcd: bool = False) -> None:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.fail("chaos tests need root and iproute2 (network namespaces; 'make deps')")
    if etcd and shutil.which("etcd") is None:
        pytest.fail("etcd not installed: run 'make deps' (installs the Debian package etcd-server)")


def _leftovers(root: Path) -> list[str]:
    needle = str(root) + "/"
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            cmd = process_cmdline(int(d.name))
            if needle in cmd:
                out.append(f"{d.name}: {cmd[:200]}")
    return out


def run_chaos(root: Path, limit: float, *args: str) -> tuple[dict[str, object], str]:
    """Run the checker with a hard time limit (SIGTERM: it tears down, then reports)."""
    cmd = [sys.executable, "-m", "bench", "chaos", "--json", "--fail-fast", "--dir", str(root), *args]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=40)
        pytest.fail(f"chaos did not finish within {limit:g}s:\n{err[-4000:]}")
    lines = out.strip().splitlines()
    assert lines, f"no output (exit {proc.returncode}):\n{err[-4000:]}"
    result = json.loads(lines[-1])
    assert isinstance(result, dict)
    return result, err


def check(result: dict[str, object], err: str, kinds: list[str], root: Path) -> None:
    tail = err[-6000:]
    assert "error" not in result, f"{result['error']}\n{tail}"
    assert result["double_runs"] == [], f"a service ran twice: {result['double_runs']}\n{tail}"
    assert result["unavailable_at_end"] == 0, f"not answering: {result['unavailable_services']}\n{tail}"
    assert result["config_harm"] == [], f"a config corruption did harm: {result['config_harm']}\n{tail}"
    faults = result["faults"]
    assert isinstance(faults, dict)
    missing = [k for k in kinds if not faults.get(k)]
    assert missing == [], f"fault kinds never injected: {missing}\n{tail}"
    assert _leftovers(root) == [], "the chaos run left processes behind"


# The seeds are chosen so that the first round through the kinds (what --cover guarantees) holds
# its faults long enough to matter: the watchdog and daemon faults outlast the lease (5 s), so the
# cluster fences and recovers while the faulted node's services may still run.
# The dir-store run takes the kinds no other chaos run has (about 10 s each); node_kill, daemon_stop,
# watchdog_kill, partition and migrate are in the etcd run below, and on the dir store in their own
# tests (tests/live/test_e2e.py, test_fencing.py). `python -m bench chaos` runs every kind for as
# long as one likes (README, "Numbers": 30 minutes per store).
DIR_KINDS = [
    "daemon_kill", "watchdog_stop", "both_kill", "both_stop", "service_kill", "lrm_restart", "config_corrupt",
]  # fmt: skip


def test_chaos_dir_store_own_kinds(tmp_path: Path) -> None:
    """About 1 minute, 3 nodes, dir store, the kinds of no other chaos run."""
    _need_tools()
    result, err = run_chaos(
        tmp_path / "chaos", 250,
        "--minutes", "1.0", "--seed", "251", "--cover", "--settle", "40", "--kinds", ",".join(DIR_KINDS),
    )  # fmt: skip
    check(result, err, DIR_KINDS, tmp_path)
    assert result["gaps"] == {"both_kill_gap_s": 0.5, "both_stop_gap_s": 2.0}


ETCD_KINDS = ["etcd_kill", "node_kill", "partition", "daemon_stop", "watchdog_kill", "migrate"]


def test_chaos_etcd_store(tmp_path: Path) -> None:
    """About 1 minute on the etcd store (a namespace and an etcd member per node)."""
    _need_tools(etcd=True)
    result, err = run_chaos(
        tmp_path / "chaos", 200,
        "--store", "etcd", "--minutes", "0.75", "--seed", "117", "--cover", "--settle", "40",
        "--kinds", ",".join(ETCD_KINDS),
    )  # fmt: skip
    check(result, err, ETCD_KINDS, tmp_path)
