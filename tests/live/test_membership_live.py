"""Membership changes on a running cluster (issue #15): ``ha-cluster add-node`` and ``remove-node``.

Real node processes, real zmq: a fourth node joins a running 3-node cluster and
takes a migrated service; then it is removed while it runs one (and holds a
stopped one): the services move away first, it is dropped without being
fenced, no service ever runs twice (the ``cluster`` fixture checks the overlap
markers) and no member loses quorum.
"""

from __future__ import annotations

import re
from pathlib import Path

from bench.livecluster import LiveCluster, wait_for


def _quorum_losses(c: LiveCluster, nodes: list[str]) -> list[str]:
    return [f"{n}: {line}" for n in nodes for line in c.log(n).splitlines()
            if "quorum lost" in line or "not quorate" in line]  # fmt: skip


def test_add_a_fourth_node_migrate_to_it_then_remove_it_with_services(
    cluster: LiveCluster, tmp_path: Path
) -> None:
    c = cluster
    three = ["node1", "node2", "node3"]
    c.add_service("proc:a", "node3")
    c.up()
    c.wait_serving("proc:a", 30, on="node3")

    out = c.cli("cli.ha_cluster", "add-node", str(c.dir)).stdout
    c.nodes.append("node4")  # LiveCluster.close() stops what is left of it
    assert "node4 added" in out and "followed by node1, node2, node3" in out and "node4 up (quorate)" in out
    conf = c.config()
    assert sorted(conf.nodes) == [*three, "node4"] and conf.config_version == 2
    assert (conf.keys_dir / "node4.key_secret").exists()
    for n in three:
        assert "membership version 2: 4 members, node4 added (quorum needs 3)" in c.log(n)
    wait_for(lambda: c.manager_status().node_status.get("node4") == "online", 15, "node4 online (master)")

    c.manager("migrate", "proc:a", "node4")
    c.wait_serving("proc:a", 30, on="node4")
    c.wait_state("proc:a", "started", 15, node="node4")
    # a stopped service placed on node4 too: remove-node moves it with the running one
    c.add_service("proc:b", "node4", "--state", "stopped")
    c.wait_state("proc:b", "stopped", 15, node="node4")

    # node4's key is a member's (an admin's); a copy kept elsewhere must stop working once it left
    kept = tmp_path / "node4.key_secret"
    kept.write_bytes((conf.keys_dir / "node4.key_secret").read_bytes())
    kept.chmod(0o600)
    c.manager("--key", str(kept), "--timeout", "2", "status")

    out = c.cli("cli.ha_cluster", "remove-node", str(c.dir), "node4", "--timeout", "30").stdout
    assert "node4: maintenance enabled" in out and "node4 stopped" in out
    # the service left node4 before node4 stopped: it answers elsewhere right away
    assert out.index("node4: no services left") < out.index("node4 stopped")
    c.wait_serving("proc:a", 5, not_on="node4")
    ms = c.manager_status()
    assert ms.service_status["proc:a"].node in three and ms.service_status["proc:b"].node in three
    conf = c.config()
    assert sorted(conf.nodes) == three and conf.config_version == 3
    assert not (conf.keys_dir / "node4.key").exists() and not (conf.keys_dir / "node4.key_secret").exists()
    for n in three:
        assert "membership version 3: 3 members, node4 removed (quorum needs 2)" in c.log(n)

    # the master drops node4 (unknown, then gone) and never fences it
    wait_for(lambda: c.manager_status().node_status.get("node4") == "gone", 15, "node4 gone for the master")
    fenced = [n for n in three if re.search(r"node 'node4'.*'fence'|fence.*node4", c.log(n))]
    assert fenced == [], f"node4 was fenced: {fenced}"
    assert _quorum_losses(c, three) == []
    status = c.cli("cli.ha_cluster", "status", str(c.dir)).stdout
    assert status.count("running pid") == 3 and "membership: version 3, 3 members" in status
    refused = c.manager("--key", str(kept), "--timeout", "1", "status", check=False)
    assert refused.returncode == 7 and "refused the client key" in refused.stderr, refused.stderr
