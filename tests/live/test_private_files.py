"""Private files (issue #11): no other local user can read the cluster's records or block its leases."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.livecluster import LiveCluster
from cli.cluster_procs import START_TIMEOUT

pytestmark = pytest.mark.timeout(120)

NOBODY = 65534

PROBE = r"""
import fcntl, os, sys
os.setgid(65534); os.setuid(65534)
out = []
for path in sys.argv[1:]:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        out.append(f"{path}: refused ({e.strerror})")
        continue
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        out.append(f"{path}: OPENED AND LOCKED")
    except OSError:
        out.append(f"{path}: OPENED")
print("\n".join(out))
"""


def as_nobody(*paths: Path) -> list[str]:
    res = subprocess.run(
        [sys.executable, "-c", PROBE, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    )
    return res.stdout.splitlines()


def test_another_user_can_neither_read_records_nor_lock_leases(cluster: LiveCluster) -> None:
    cluster.add_service("proc:a", "node1", "--env", "TOKEN=secret")
    cluster.up()
    cluster.wait_serving("proc:a", 30, on="node1")
    store = cluster.dir / "store"
    leases = sorted(p for p in store.rglob("*") if p.is_file() and "lock" in p.name)
    targets = [store / "resources.cfg", *leases[:3], cluster.dir / "logs" / "node1.log"]
    assert all(p.exists() for p in targets), targets
    seen = as_nobody(*targets)
    assert all(line.endswith("refused (Permission denied)") for line in seen), seen
    mode = os.stat(cluster.dir).st_mode & 0o777
    assert mode == 0o700, f"cluster directory mode {mode:o}"


def test_ha_node_refuses_to_start_when_the_cluster_directory_is_exposed(cluster: LiveCluster) -> None:
    os.chmod(cluster.dir, 0o755)
    res = subprocess.run(
        [sys.executable, "-m", "cli.ha_node", "--node", "node1", "--cluster", str(cluster.dir)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert res.returncode == 1
    assert res.stderr.strip() == (
        f"ha-node: not starting: {cluster.dir} can be reached by other users (mode 0755):"
        f" chmod go-rwx {cluster.dir}"
    )
    os.chmod(cluster.dir, 0o700)


def test_up_reports_a_node_that_exits_at_start_at_once(cluster: LiveCluster) -> None:
    """`ha-cluster up` waits up to START_TIMEOUT (60 s) for a slow start on a loaded host, but a
    node process that has already exited is reported at once."""
    os.chmod(cluster.dir, 0o755)  # every ha-node refuses to start (see above)
    try:
        t0 = time.monotonic()
        res = subprocess.run(
            [sys.executable, "-m", "cli.ha_cluster", "up", str(cluster.dir)],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        took = time.monotonic() - t0
    finally:
        os.chmod(cluster.dir, 0o700)
    assert res.returncode == 1 and "did not come up: node1, node2, node3" in res.stderr, res.stderr
    assert took < START_TIMEOUT / 2, f"took {took:.1f}s"
