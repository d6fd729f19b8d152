"""A real local cluster for end-to-end tests: ha-node processes, demo services, markers.

Everything goes through the user-facing commands (``ha-cluster``,
``ha-manager``) as subprocesses; the test reads the store and the services'
own answers and markers. ``close()`` always tears everything down.

``store="etcd"``: the cluster keeps its records and leases in etcd, one
member per node, each node and its member in the node's own network
namespace (``ha-cluster init --store etcd --netns``): a simulated host per
node. ``kill(node, with_etcd=True)`` is a host crash, ``partition`` cuts a
node and its member off together, ``etcd_kill``/``etcd_start`` act on the
members only.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from admin.cluster import ClusterConfig
from admin.ports import free_port
from bench.markers import find_overlaps, read_copies
from fence.procfs import read_stat
from ha.records import ManagerStatus
from store.base import Store
from store.records import read_manager_status

PY = sys.executable


def wait_for(pred: Callable[[], object], timeout: float, what: str, step: float = 0.05) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(step)


class LiveCluster:
    def __init__(
        self,
        root: Path,
        nodes: int = 3,
        *,
        policy: str = "conditional",
        netns: bool = False,
        store: str = "dir",
        etcd_members: int | None = None,
    ) -> None:
        if store not in ("dir", "etcd"):
            raise ValueError(f"store must be 'dir' or 'etcd', not {store!r}")
        self.root = root
        self.dir = root / "cluster"
        self.markers = root / "markers"
        self.ports: dict[str, int] = {}
        self.store_kind = store
        self.netns = netns or store == "etcd"  # etcd mode: a namespace ("host") per node
        self.nodes = [f"node{i}" for i in range(1, nodes + 1)]
        extra = ["--store", "etcd"] if store == "etcd" else []
        if etcd_members is not None:
            extra += ["--etcd-members", str(etcd_members)]
        self.cli(
            "cli.ha_cluster", "init", str(self.dir), "--nodes", str(nodes),
            *(["--netns"] if self.netns else []), *extra,
        )  # fmt: skip
        try:
            # where to reach a service: loopback, or each node's namespace address
            self.hosts = ["127.0.0.1"]
            if self.netns:
                net = json.loads((self.dir / "cluster.json").read_text())["network"]
                self.hosts = [v[3] for _, v in sorted(net["nodes"].items())]
            st = self.open_store()
            try:
                st.write("datacenter.cfg", f"ha: shutdown_policy={policy}\n".encode())
            finally:
                st.close()
        except BaseException:
            self.close()
            raise

    def config(self) -> ClusterConfig:
        return ClusterConfig.load(self.dir)

    def open_store(self) -> Store:
        """The cluster's store, opened as every tool opens it (cluster.json)."""
        return self.config().open_store()

    # -- commands -----------------------------------------------------------
    def cli(self, *args: str, check: bool = True, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        res = subprocess.run([PY, "-m", *args], capture_output=True, text=True, timeout=timeout, check=False)
        if check and res.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({res.returncode}): {res.stderr or res.stdout}")
        return res

    def manager(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.cli("cli.ha_manager", "--cluster", str(self.dir), *args, check=check)

    def add_service(self, sid: str, node: str, *extra: str, cmd: str | None = None) -> int:
        port = free_port()
        self.ports[sid] = port
        bind = "0.0.0.0" if self.netns else "127.0.0.1"
        cmd = cmd or f"{PY} -m agents.demo_service --port {port} --bind {bind} --markers {self.markers}"
        self.manager("add", sid, "--node", node, "--cmd", cmd, "--check-tcp", f"127.0.0.1:{port}", *extra)
        return port

    def up(self, *nodes: str) -> None:
        self.cli("cli.ha_cluster", "up", str(self.dir), *nodes)

    def kill(self, node: str, *, with_etcd: bool = False) -> None:
        self.cli("cli.ha_cluster", "kill", str(self.dir), node, *(["--with-etcd"] if with_etcd else []))

    # -- etcd members (store="etcd") ----------------------------------------------
    def etcd_kill(self, *nodes: str) -> None:
        self.cli("cli.ha_cluster", "etcd-kill", str(self.dir), *nodes)

    def etcd_start(self, *nodes: str) -> None:
        self.cli("cli.ha_cluster", "etcd-start", str(self.dir), *nodes)

    def etcd_leader(self) -> str | None:
        """The node whose etcd member leads, if the running members agree."""
        from cli.cluster_etcd import etcd_leader  # noqa: PLC0415

        return etcd_leader(self.config())

    def stop(self, node: str, kind: str = "shutdown", timeout: float = 60) -> None:
        self.cli("cli.ha_cluster", "stop", str(self.dir), node, "--kind", kind, "--timeout", str(timeout))

    def pid(self, node: str, what: str = "ha-node") -> int | None:
        try:
            return int((self.dir / "run" / node / f"{what}.pid").read_text())
        except (FileNotFoundError, ValueError):
            return None

    def signal(self, node: str, sig: int) -> None:
        pid = self.pid(node)
        assert pid is not None, f"{node} is not running"
        os.kill(pid, sig)

    # -- observations ----------------------------------------------------------
    def ask(self, sid: str) -> dict[str, object] | None:
        for host in self.hosts:
            try:
                with urllib.request.urlopen(f"http://{host}:{self.ports[sid]}/", timeout=0.3) as r:
                    data = json.loads(r.read())
                    if isinstance(data, dict):
                        return data
            except (OSError, ValueError):
                continue
        return None

    def serving_node(self, sid: str) -> str | None:
        ans = self.ask(sid)
        return str(ans["node"]) if ans else None

    def wait_serving(
        self, sid: str, timeout: float = 30, *, on: str | None = None, not_on: str | None = None
    ) -> str:
        def ok() -> str | None:
            n = self.serving_node(sid)
            if n is None or (on is not None and n != on) or (not_on is not None and n == not_on):
                return None
            return n

        return str(wait_for(ok, timeout, f"{sid} answering" + (f" on {on}" if on else "") +
                            (f" not on {not_on}" if not_on else "")))  # fmt: skip

    def manager_status(self) -> ManagerStatus:
        store = self.open_store()
        try:
            return read_manager_status(store)[0]
        finally:
            store.close()

    def service_state(self, sid: str) -> tuple[str | None, str | None]:
        sd = self.manager_status().service_status.get(sid)
        return (sd.state, sd.node) if sd else (None, None)

    def wait_state(self, sid: str, state: str, timeout: float = 30, node: str | None = None) -> None:
        def ok() -> bool:
            st, n = self.service_state(sid)
            return st == state and (node is None or n == node)

        wait_for(ok, timeout, f"{sid} in state {state}" + (f" on {node}" if node else ""))

    def log(self, node: str) -> str:
        try:
            return (self.dir / "logs" / f"{node}.log").read_text()
        except FileNotFoundError:
            return ""

    def diagnostics(self, lines: int = 40) -> str:
        """What a failed test should show: ``ha-manager status`` and each node's last log lines."""
        parts = []
        try:
            res = self.manager("status", check=False)
            parts.append(f"$ ha-manager status (exit {res.returncode})\n{res.stdout}{res.stderr}")
        except Exception as e:
            parts.append(f"$ ha-manager status: {e!r}")
        for n in self.nodes:
            for name, text in ((f"{n}.log", self.log(n)), (f"{n}.watchdog.log", self.watchdog_log(n))):
                tail = text.splitlines()[-lines:]
                parts.append(f"--- {name} (last {len(tail)} lines)\n" + "\n".join(tail))
        return "\n".join(parts)

    def watchdog_log(self, node: str) -> str:
        try:
            return (self.dir / "logs" / f"{node}.watchdog.log").read_text()
        except FileNotFoundError:
            return ""

    def overlaps(self) -> list[str]:
        return find_overlaps(self.markers) if self.markers.exists() else []

    def copies(self, sid: str) -> list[tuple[str, int]]:
        copies, _ = read_copies(self.markers)
        return [(c.node, c.pid) for c in copies.get(sid, [])]

    def partition(self, node: str) -> None:
        self.cli("cli.ha_cluster", "partition", str(self.dir), node)

    def heal(self, node: str) -> str:
        return self.cli("cli.ha_cluster", "heal", str(self.dir), node).stdout

    def close(self) -> None:
        if not (self.dir / "cluster.json").exists():
            return  # init failed and cleaned up after itself
        self.cli("cli.ha_cluster", "down", str(self.dir), "--timeout", "20", check=False)
        # whatever survived (a test that stopped a process with SIGSTOP): kill it for good
        for n in self.nodes:
            for what in ("ha-node", "ha-watchdog"):
                pid = self.pid(n, what)
                if pid is not None:
                    for sig in (signal.SIGCONT, signal.SIGKILL):
                        try:
                            os.kill(pid, sig)
                        except ProcessLookupError:
                            break
        self.cli("cli.ha_cluster", "down", str(self.dir), "--timeout", "5", check=False)
        if self.netns or self.store_kind == "etcd":
            self.cli("cli.ha_cluster", "destroy", str(self.dir), check=False)

    # -- processes, for fault injection (bench/chaos/) ----------------------------------
    def running_pid(self, node: str, what: str = "ha-node") -> int | None:
        """The pid of NODE's WHAT (``ha-node``, ``ha-watchdog``) if that process is alive.

        A stopped (SIGSTOPped) process counts as alive, a zombie does not; a pid
        recycled by another process is not ours (its command line must name the
        cluster directory).
        """
        pid = self.pid(node, what)
        if pid is None or process_state(pid) in (None, "Z", "X"):
            return None
        return pid if str(self.dir) in process_cmdline(pid) else None

    def leftover_pids(self) -> list[int]:
        """Processes whose command line names a path inside this cluster's root (nodes, watchdogs,
        services, etcd members), apart from this process and its ancestors."""
        mine = set(ancestors())
        needle = str(self.root).rstrip("/") + "/"
        out = []
        for d in Path("/proc").iterdir():
            if d.name.isdigit() and int(d.name) not in mine and process_state(int(d.name)) not in (None, "Z"):
                if needle in process_cmdline(int(d.name)):
                    out.append(int(d.name))
        return sorted(out)

    def kill_leftovers(self) -> list[int]:
        """SIGCONT + SIGKILL whatever :meth:`leftover_pids` finds (after ``close()``); their pids."""
        pids = self.leftover_pids()
        for pid in pids:
            for sig in (signal.SIGCONT, signal.SIGKILL):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    break
        return pids


def process_state(pid: int) -> str | None:
    """The state letter of /proc/PID/stat (R, S, T, Z, ...), None when there is no such process."""
    st = read_stat(pid)
    return st.state if st is not None else None


def process_cmdline(pid: int) -> str:
    """The command line of PID, arguments joined by spaces ("" when gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def ancestors() -> list[int]:
    """This process and its parents up to init."""
    out, pid = [], os.getpid()
    while pid > 1 and pid not in out:
        out.append(pid)
        try:
            raw = Path(f"/proc/{pid}/stat").read_text()
            pid = int(raw[raw.rindex(")") + 2 :].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return out
