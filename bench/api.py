"""API benchmark: latency of ``status`` over the node API, and of ``ha-manager status`` as a process.

    python -m bench api [--json] [--calls 500] [--procs 30] [--cluster DIR]

Starts a local 3-node cluster (CURVE on, one service configured) unless
``--cluster`` names a running one, then measures

* ``api_status``: one ``status`` request/reply from an already connected
  client (what the shell and the watch view pay per refresh);
* ``api_status_verbose``: the same with the full cluster state;
* ``cli_status``: a whole ``ha-manager status`` process (interpreter start,
  imports, key loading, CURVE handshake, request, output), what a script
  pays per call.

The last line with --json is one JSON object (milliseconds).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PY = sys.executable
REPO = Path(__file__).resolve().parents[1]


def _pct(samples: list[float], p: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def _summary(samples_s: list[float]) -> dict[str, float]:
    ms = [x * 1000 for x in samples_s]
    return {
        "n": len(ms),
        "p50_ms": round(_pct(ms, 50), 3),
        "p99_ms": round(_pct(ms, 99), 3),
        "mean_ms": round(statistics.fmean(ms), 3),
        "max_ms": round(max(ms), 3),
    }


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([PY, "-m", *args], capture_output=True, text=True, env=env, cwd=REPO, check=False,
                         timeout=120)  # fmt: skip
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {res.stderr or res.stdout}")
    return res


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench api", description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="end with one JSON line")
    ap.add_argument("--calls", type=int, default=500, help="API requests per measurement")
    ap.add_argument("--procs", type=int, default=30, help="ha-manager processes")
    ap.add_argument("--cluster", help="use this running cluster instead of starting one")
    args = ap.parse_args(argv)

    from admin.cluster import ClusterConfig  # noqa: PLC0415
    from cli.api_client import ApiClient, load_client_key  # noqa: PLC0415

    own = args.cluster is None
    root = Path(tempfile.mkdtemp(prefix="pyha-bench-api-")) if own else None
    cdir = Path(args.cluster) if args.cluster else root / "cluster"  # type: ignore[operator]
    env = {**os.environ, "PYHA_CLUSTER": str(cdir), "PYTHONPATH": str(REPO)}
    result: dict[str, Any] = {}
    try:
        if own:
            print(f"starting a 3-node cluster in {cdir}", flush=True)
            _run(env, "cli.ha_cluster", "init", str(cdir), "--nodes", "3")
            _run(env, "cli.ha_manager", "keygen", "bench", "--role", "admin")
            _run(env, "cli.ha_manager", "add", "proc:bench", "--node", "node1", "--cmd", "sleep 3600")
            _run(env, "cli.ha_cluster", "up", str(cdir))
        conf = ClusterConfig.load(cdir)
        client = ApiClient(conf, key=load_client_key(conf, role="admin") if conf.curve else None)
        try:
            deadline = time.monotonic() + 30
            while True:  # wait until a master published its status
                st = client.call("status")
                if st.get("master") or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            for name, op_args in (("api_status", {}), ("api_status_verbose", {"verbose": True})):
                for _ in range(20):  # warm-up
                    client.call("status", op_args)
                samples = []
                for _ in range(args.calls):
                    t0 = time.perf_counter()
                    client.call("status", op_args)
                    samples.append(time.perf_counter() - t0)
                result[name] = _summary(samples)
                print(f"{name:20s} {result[name]}", flush=True)
            result["api_node"] = client.node
        finally:
            client.close()
        samples = []
        for _ in range(args.procs):
            t0 = time.perf_counter()
            _run(env, "cli.ha_manager", "status")
            samples.append(time.perf_counter() - t0)
        result["cli_status"] = _summary(samples)
        print(f"{'cli_status':20s} {result['cli_status']}", flush=True)
        t0 = time.perf_counter()
        subprocess.run([PY, "-c", "pass"], check=True, env=env)
        result["python_startup_ms"] = round((time.perf_counter() - t0) * 1000, 3)
        result["load_avg"] = [round(x, 2) for x in os.getloadavg()]
    finally:
        if own:
            subprocess.run([PY, "-m", "cli.ha_cluster", "down", str(cdir), "--timeout", "20"],
                           capture_output=True, env=env, cwd=REPO, check=False, timeout=120)  # fmt: skip
            shutil.rmtree(root, ignore_errors=True)  # type: ignore[arg-type]
    if args.json:
        print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
