"""``ha-manager datacenter get|set`` on the live cluster, and the CRS mode ``status`` shows (issue #14).

Reuses the package's cluster; datacenter.cfg and the capacity record a test changes are
put back as they were, whatever happens.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from admin.cluster import ClusterConfig
from store import records as rec
from store.base import Store
from tests.cli.conftest import Cluster, wait_for

pytestmark = pytest.mark.timeout(120)


def one_line_error(res: subprocess.CompletedProcess[str], *needles: str) -> None:
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("ha-manager"), res.stderr
    for n in needles:
        assert n in lines[0], f"{n!r} not in {lines[0]!r}"


@pytest.fixture
def store(cluster: Cluster) -> Iterator[Store]:
    """The cluster's store, with datacenter.cfg as it was put back afterwards."""
    s = ClusterConfig.load(cluster.dir).open_store()
    before = s.read(rec.DATACENTER_CFG)
    try:
        yield s
    finally:
        now = s.read(rec.DATACENTER_CFG)
        if before is not None and (now is None or now.data != before.data):
            s.write(rec.DATACENTER_CFG, before.data)
        s.close()


def master(cluster: Cluster) -> dict[str, Any]:
    return next(ln for ln in cluster.status()["lines"] if ln["type"] == "master")


def wait_master(cluster: Cluster, suffix: str, crs: str, timeout: float = 20) -> None:
    def ok() -> bool:
        ln = master(cluster)
        return str(ln["text"]).endswith(suffix) and ln.get("crs") == crs

    wait_for(ok, timeout, f"status master line ending '{suffix}'", step=0.3)


def test_get_and_set_through_the_api_keep_the_rest_of_the_file(cluster: Cluster, store: Store) -> None:
    store.write(rec.DATACENTER_CFG, b"# ours\nkeyboard: de\nha: shutdown_policy=conditional\n")
    assert cluster.hm("datacenter", "get", "ha.shutdown_policy").stdout == "conditional\n"
    cluster.hm("datacenter", "set", "-ha", "shutdown_policy=freeze", "crs.ha-auto-rebalance-method=topsis")
    data = store.read(rec.DATACENTER_CFG)
    assert data is not None
    assert (
        data.data
        == b"# ours\nkeyboard: de\nha: shutdown_policy=freeze\ncrs: ha-auto-rebalance-method=topsis\n"
    )
    got = cluster.json("datacenter", "get")
    assert got["set"] == ["ha.shutdown_policy", "crs.ha-auto-rebalance-method"] and got["errors"] == []
    assert got["options"]["crs.ha"] == "basic"
    text = cluster.hm("datacenter", "get").stdout.splitlines()
    assert "ha.shutdown_policy freeze" in text and "crs.ha basic (default)" in text
    one = json.loads(cluster.hm("datacenter", "get", "crs", "--output-format", "json").stdout)
    assert one["value"] == "ha-auto-rebalance-method=topsis"
    assert "crs.ha-auto-rebalance:" in cluster.hm("datacenter", "get", "--output-format", "yaml").stdout


def test_refusals_are_one_line_with_their_exit_code_and_change_nothing(
    cluster: Cluster, store: Store
) -> None:
    before = store.read(rec.DATACENTER_CFG)
    one_line_error(cluster.hm("datacenter", "set", "crs.ha=fancy", code=2), "invalid value 'fancy'")
    one_line_error(cluster.hm("datacenter", "set", "--crs", "ha=fancy", code=2), "invalid value 'fancy'")
    one_line_error(cluster.hm("datacenter", "set", "crs.mode=static", code=2), "unknown datacenter option")
    one_line_error(cluster.hm("datacenter", "set", "static", code=2), "expected KEY=VALUE")
    one_line_error(cluster.hm("datacenter", "get", "crs.nope", code=2), "unknown datacenter option")
    one_line_error(
        cluster.hm("--role", "readonly", "datacenter", "set", "crs.ha=static", code=7), "permission denied"
    )
    one_line_error(
        cluster.hm("datacenter", "set", "crs.ha=static", "--digest", "0" * 32, code=5), "digest mismatch"
    )
    assert store.read(rec.DATACENTER_CFG) == before
    assert cluster.hm("--role", "readonly", "datacenter", "get", "crs.ha").stdout.strip() in (
        "basic", "static", "dynamic",
    )  # fmt: skip


def test_status_shows_the_mode_in_use_not_only_the_configured_one(cluster: Cluster, store: Store) -> None:
    node = cluster.nodes[-1]
    capacity = store.read(rec.capacity_name(node))
    assert capacity is not None, "every ha-node publishes its capacity at start"
    try:
        cluster.hm("datacenter", "set", "crs.ha=static")
        wait_master(cluster, ") - static load CRS", "static")
        assert master(cluster)["crs_configured"] == "static"
        # the static init fails without this node's capacity: the master places with basic
        store.delete(rec.capacity_name(node))
        why = f"no static node stats for node '{node}'"
        wait_master(cluster, f" - basic load CRS instead of static: {why}", "basic")
        ms = cluster.status()["full"]["manager_status"]
        assert ms["crs"] == {"mode": "basic", "configured": "static", "error": why}
        assert f"basic load CRS instead of static: {why}" in cluster.hm("status").stdout
    finally:
        store.write(rec.capacity_name(node), capacity.data)
    wait_master(cluster, ") - static load CRS", "static")
    cluster.hm("datacenter", "set", "--delete", "crs.ha")
    wait_master(cluster, ")", "basic")
    assert "crs" not in cluster.status()["full"]["manager_status"]


def test_bash_completes_the_option_names(cluster: Cluster) -> None:
    def complete(words: str) -> list[str]:
        cword = len(words.split()) - (0 if words.endswith(" ") else 1)
        env = {"_HA_MANAGER_COMPLETE": "bash_complete", "COMP_WORDS": words, "COMP_CWORD": str(cword)}
        return [ln.split(",", 1)[1] for ln in cluster.hm(env=env).stdout.splitlines()]

    assert "datacenter" in complete("ha-manager data")
    assert complete("ha-manager datacenter set crs.ha-r") == ["crs.ha-rebalance-on-start="]
    assert complete("ha-manager datacenter get ha") == ["ha", "ha.shutdown_policy"]
