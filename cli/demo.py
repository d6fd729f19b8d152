"""``make demo``: a local 3-node cluster, three real services, a node killed, failover timed.

1. ``ha-cluster init`` a cluster in a temporary directory and start 3 nodes.
2. ``ha-manager add`` three HTTP services (agents/demo_service.py): two on
   node2, one on node3.
3. Wait until all answer, then SIGKILL node2's whole process tree.
4. Poll the services; print when each answers again and from which node.
5. Check from the services' own markers that no service ever ran twice.
6. Shut everything down and remove the directory.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from admin.ports import free_port
from agents.markers import find_overlaps

PY = sys.executable


def run(*args: str, cluster: Path | None = None) -> str:
    cmd = [PY, "-m", *args]
    if cluster is not None:
        cmd[3:3] = []
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise SystemExit(f"demo: {' '.join(args)} failed: {res.stderr.strip() or res.stdout.strip()}")
    return res.stdout


def ask(port: int) -> dict[str, object] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=0.3) as r:
            data = json.loads(r.read())
            return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def wait_all(ports: dict[str, int], timeout: float) -> dict[str, dict[str, object]]:
    deadline = time.monotonic() + timeout
    seen: dict[str, dict[str, object]] = {}
    while time.monotonic() < deadline and len(seen) < len(ports):
        for sid, port in ports.items():
            if sid not in seen and (ans := ask(port)) is not None:
                seen[sid] = ans
        time.sleep(0.05)
    return seen


def main() -> int:
    root = Path(tempfile.mkdtemp(prefix="pyha-demo-"))
    cluster = root / "cluster"
    markers = root / "markers"
    print(f"== demo cluster in {cluster}")
    try:
        print(run("cli.ha_cluster", "init", str(cluster), "--nodes", "3"), end="")
        placement = {"proc:web1": "node2", "proc:web2": "node2", "proc:web3": "node3"}
        ports = {sid: free_port() for sid in placement}
        for sid, node in placement.items():
            cmd = f"{PY} -m agents.demo_service --port {ports[sid]} --markers {markers}"
            run("cli.ha_manager", "--cluster", str(cluster), "add", sid, "--node", node, "--cmd", cmd,
                "--check-tcp", f"127.0.0.1:{ports[sid]}")  # fmt: skip
        t0 = time.monotonic()
        print(run("cli.ha_cluster", "up", str(cluster)), end="")
        seen = wait_all(ports, 30)
        if len(seen) < len(ports):
            print(f"demo: services did not all come up: {sorted(set(ports) - set(seen))}")
            return 1
        print(f"== all services answer after {time.monotonic() - t0:.1f} s:")
        for sid in sorted(seen):
            print(f"   {sid} on {seen[sid]['node']} (port {ports[sid]})")
        print(run("cli.ha_manager", "--cluster", str(cluster), "status"), end="")

        victim = "node2"
        print(f"== SIGKILL of {victim}'s whole process tree (daemon, watchdog, services)")
        t_kill = time.monotonic()
        run("cli.ha_cluster", "kill", str(cluster), victim)
        back: dict[str, tuple[float, str]] = {}
        moved = [sid for sid, n in placement.items() if n == victim]
        while time.monotonic() - t_kill < 60 and len(back) < len(moved):
            for sid in moved:
                port = ports[sid]
                if sid in back:
                    continue
                ans = ask(port)
                if ans is not None and ans["node"] != victim:
                    back[sid] = (time.monotonic() - t_kill, str(ans["node"]))
                    print(f"   {sid} answers again from {ans['node']} after {back[sid][0]:.2f} s")
            time.sleep(0.05)
        times = [back[s][0] for s in moved if s in back]
        if len(times) < len(moved):
            print(f"demo: not recovered: {sorted(set(moved) - set(back))}")
            return 1
        print(f"== failover: {len(moved)} services of {victim} answering again after "
              f"{min(times):.2f}-{max(times):.2f} s (the reference needs about 2 minutes)")  # fmt: skip
        time.sleep(1)
        print(run("cli.ha_manager", "--cluster", str(cluster), "status"), end="")
        overlaps = find_overlaps(markers)
        print(
            "== no service ever ran on two nodes at once"
            if not overlaps
            else "== OVERLAPS:\n" + "\n".join(overlaps)
        )
        return 0 if not overlaps else 1
    finally:
        subprocess.run([PY, "-m", "cli.ha_cluster", "down", str(cluster), "--timeout", "30"],
                       capture_output=True, check=False)  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
