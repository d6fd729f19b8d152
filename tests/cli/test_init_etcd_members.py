"""``ha-cluster init --etcd-members``: how many nodes run an etcd member (docs/ETCD.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from admin.errors import AdminError
from cli import cluster_init
from cli.ha_cluster import main


@pytest.mark.parametrize(("nodes", "members"), [(1, 1), (2, 2), (3, 3), (4, 3), (5, 3), (20, 3), (32, 3)])
def test_default_follows_etcds_advice(nodes: int, members: int) -> None:
    assert cluster_init.default_etcd_members(nodes) == members


def plan(tmp_path: Path, **kw: object) -> cluster_init.InitPlan:
    args: dict[str, object] = {
        "count": 20, "base_port": None, "curve": False, "name": "pyha", "timing_kv": (), "cgroups": False,
        "watchdog": "userspace", "force": False, "netns": True, "store_kind": "etcd", "endpoints": None,
        "store_timeout": 1.0, "insecure": True,
    }  # fmt: skip
    args.update(kw)
    return cluster_init.plan(str(tmp_path / "c"), **args)  # type: ignore[arg-type]


def test_the_plan_takes_the_count_or_the_default(tmp_path: Path) -> None:
    assert plan(tmp_path).etcd_members == 3
    assert plan(tmp_path, etcd_members=5).etcd_members == 5
    assert plan(tmp_path, etcd_members=20).etcd_members == 20


@pytest.mark.parametrize("bad", [0, 21])
def test_a_count_outside_the_nodes_is_refused(tmp_path: Path, bad: int) -> None:
    with pytest.raises(AdminError, match="--etcd-members must be 1 to 20"):
        plan(tmp_path, etcd_members=bad)


def test_only_for_members_ha_cluster_runs(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["init", str(tmp_path / "c"), "--nodes", "3", "--etcd-members", "3"])
    assert res.exit_code == 2
    assert "--etcd-members needs --store etcd --netns" in res.output
    assert not (tmp_path / "c" / "cluster.json").exists()
