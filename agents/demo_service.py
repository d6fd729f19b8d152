"""A tiny HTTP service for demos and end-to-end tests.

    python -m agents.demo_service --port 8001 --markers DIR

Answers ``GET /`` with ``{"sid", "node", "pid", "fencing_token"}`` (node and sid
from the proc agent's ``PYHA_NODE``/``PYHA_SID``, the token from
``HA_FENCING_TOKEN``). With ``--markers DIR`` it appends to
``DIR/<sid>.markers`` one line per event, with CLOCK_MONOTONIC nanoseconds
(system-wide on one host, so lines of different nodes compare)::

    start <t> <node> <pid>      when it begins serving
    alive <t> <node> <pid>      every 50 ms while serving
    stop  <t> <node> <pid>      on SIGTERM (a SIGKILLed copy just stops writing)

and holds an exclusive ``flock`` on ``DIR/<sid>.lock`` while running: a second
copy that starts while the first still runs writes ``overlap`` and exits 1.
The kernel drops the lock when a process dies, even by SIGKILL, so this
detects two live copies exactly.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ALIVE_EVERY = 0.05


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="demo_service")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--bind", default="127.0.0.1")
    ap.add_argument("--markers", help="directory for start/alive/stop markers and the overlap lock")
    args = ap.parse_args(argv)
    sid = os.environ.get("PYHA_SID", "demo")
    node = os.environ.get("PYHA_NODE", "?")
    pid = os.getpid()
    mfile = None
    if args.markers:
        mdir = Path(args.markers)
        mdir.mkdir(parents=True, exist_ok=True)
        safe = sid.replace(":", "_")
        mfile = open(mdir / f"{safe}.markers", "a", buffering=1)  # noqa: SIM115
        lock = open(mdir / f"{safe}.lock", "w")  # noqa: SIM115 - held for the process lifetime
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            mfile.write(f"overlap {time.monotonic_ns()} {node} {pid}\n")
            return 1

    def mark(what: str) -> None:
        if mfile is not None:
            mfile.write(f"{what} {time.monotonic_ns()} {node} {pid}\n")

    token = os.environ.get("HA_FENCING_TOKEN")
    body = json.dumps({"sid": sid, "node": node, "pid": pid, "fencing_token": token}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *a: object) -> None:
            pass

    server = ThreadingHTTPServer((args.bind, args.port), Handler)
    stop = threading.Event()

    def on_term(signum: int, frame: object) -> None:
        stop.set()
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)

    def heartbeat() -> None:
        while not stop.wait(ALIVE_EVERY):
            mark("alive")

    mark("start")
    threading.Thread(target=heartbeat, daemon=True).start()
    server.serve_forever(poll_interval=0.1)
    mark("stop")
    return 0


if __name__ == "__main__":
    sys.exit(main())
