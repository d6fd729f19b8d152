"""A real local cluster for the CLI tests, and ``ha-manager`` run as a subprocess per call.

One cluster is shared by the whole package (``cluster``, 3 nodes, all up);
modules that need a cluster in a special shape make their own
(``Cluster(...)`` in a module-scoped fixture). Every fixture tears its
cluster down, also when a test failed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from bench.livecluster import wait_for

PY = sys.executable
REPO = Path(__file__).resolve().parents[2]

__all__ = ["PY", "REPO", "Cluster", "wait_for"]


class Cluster:
    def __init__(self, root: Path, nodes: int = 3) -> None:
        self.root = root
        self.dir = root / "cluster"
        self.nodes = [f"node{i}" for i in range(1, nodes + 1)]
        self._api: Any = None
        self.env = {**os.environ, "PYHA_CLUSTER": str(self.dir), "PYTHONPATH": str(REPO)}
        for var in ("PYHA_NODE", "PYHA_KEY", "PYHA_OFFLINE"):
            self.env.pop(var, None)
        self.run("cli.ha_cluster", "init", str(self.dir), "--nodes", str(nodes))
        # `ha-cluster init` made keys "admin" and "readonly"; one more read-only key, before
        # the nodes start (they load the keys they accept at start); keygen refuses to overwrite
        assert (self.dir / "keys" / "clients" / "admin" / "admin.key_secret").exists()
        self.hm("keygen", "admin", "--role", "admin", code=2)
        self.hm("keygen", "viewer", "--role", "readonly")

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(
            [PY, "-m", *args], capture_output=True, text=True, timeout=timeout, env=self.env, cwd=REPO,
            check=False,
        )  # fmt: skip
        if res.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({res.returncode}): {res.stderr or res.stdout}")
        return res

    def hm(
        self, *args: str, code: int | None = 0, timeout: float = 30, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``ha-manager ARGS`` as a process; checks the exit code (``code=None``: any)."""
        res = subprocess.run(
            [PY, "-m", "cli.ha_manager", *args], capture_output=True, text=True, timeout=timeout,
            env={**self.env, **(env or {})}, cwd=REPO, check=False,
        )  # fmt: skip
        assert "Traceback" not in res.stderr, res.stderr
        if code is not None:
            assert res.returncode == code, (
                f"ha-manager {' '.join(args)}: exit {res.returncode}, expected {code}\n"
                f"stdout: {res.stdout}\nstderr: {res.stderr}"
            )
        return res

    def json(self, *args: str) -> Any:
        return json.loads(self.hm(*args, "--output-format", "json").stdout)

    # Observations go through an in-process API client (cheap); the commands under
    # test always run as ha-manager processes.
    def api(self, op: str, args: dict[str, Any] | None = None) -> Any:
        from admin.cluster import ClusterConfig  # noqa: PLC0415
        from cli.api_client import ApiClient, load_client_key  # noqa: PLC0415

        if self._api is None:
            conf = ClusterConfig.load(self.dir)
            # connect_timeout: a first CURVE handshake with a busy node may take over the default
            # 1 s on a loaded CI host (seen once: every node "no connection" after a master stop)
            key = load_client_key(conf, role="admin")
            self._api = ApiClient(conf, key=key, timeout=3, connect_timeout=3.0)
        return self._api.call(op, args)

    def status(self) -> dict[str, Any]:
        return dict(self.api("status", {"verbose": True}))

    def service(self, sid: str) -> dict[str, Any] | None:
        for ln in self.status()["lines"]:
            if ln.get("sid") == sid:
                return dict(ln)
        return None

    def wait_service(self, sid: str, state: str, node: str | None = None, timeout: float = 20) -> None:
        def ok() -> bool:
            ln = self.service(sid)
            return ln is not None and ln.get("state") == state and (node is None or ln.get("node") == node)

        wait_for(ok, timeout, f"{sid} {state}" + (f" on {node}" if node else ""), step=0.2)

    def node_state(self, node: str) -> str | None:
        ns = self.status()["full"]["manager_status"].get("node_status", {})
        state = ns.get(node)
        return None if state is None else str(state)

    def digest(self) -> str:
        return str(self.api("config")["digest"])

    def sids(self) -> set[str]:
        return {r["sid"] for r in self.api("config")["resources"]}

    def up(self, *nodes: str) -> None:
        self.run("cli.ha_cluster", "up", str(self.dir), *nodes)

    def wait_ready(self, nodes: Sequence[str] | None = None, timeout: float = 30) -> None:
        """Master active and every node in ``nodes`` online."""
        want = list(nodes or self.nodes)

        def ok() -> bool:
            try:
                st = self.status()
            except Exception:
                return False
            ns = st["full"]["manager_status"].get("node_status", {})
            master = [ln for ln in st["lines"] if ln["type"] == "master"]
            return (
                bool(master)
                and "(active," in master[0]["status"]
                and all(ns.get(n) == "online" for n in want)
            )

        wait_for(ok, timeout, "the cluster to be ready", step=0.3)

    def pid(self, node: str, what: str = "ha-node") -> int | None:
        try:
            return int((self.dir / "run" / node / f"{what}.pid").read_text())
        except (FileNotFoundError, ValueError):
            return None

    def close(self) -> None:
        if self._api is not None:
            self._api.close()
            self._api = None
        subprocess.run(
            [PY, "-m", "cli.ha_cluster", "down", str(self.dir), "--timeout", "15"],
            capture_output=True, timeout=60, env=self.env, cwd=REPO, check=False,
        )  # fmt: skip
        for n in self.nodes:
            for what in ("ha-node", "ha-watchdog"):
                pid = self.pid(n, what)
                if pid is not None:
                    for sig in (signal.SIGCONT, signal.SIGKILL):
                        try:
                            os.kill(pid, sig)
                        except ProcessLookupError:
                            break


@pytest.fixture(scope="package")
def cluster() -> Iterator[Cluster]:
    root = Path(tempfile.mkdtemp(prefix="pyha-cli-"))
    c = None
    try:
        c = Cluster(root)
        # a configured service makes a CRM take over as master (none does without one)
        c.hm("add", "proc:base", "--node", "node1", "--cmd", "sleep 600")
        c.up()
        c.wait_ready()
        yield c
    finally:
        if c is not None:
            c.close()
        shutil.rmtree(root, ignore_errors=True)
