"""Shared helpers of the store tests: bounded waits and worker processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def wait_until(pred: Callable[[], object], timeout: float = 5.0, interval: float = 0.005) -> float:
    """Poll ``pred`` until true; return the elapsed time or fail the test."""
    start = time.monotonic()
    while True:
        if pred():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def worker(*args: str) -> subprocess.Popen[str]:
    """Start ``python -m tests.store.worker ARGS`` (a separate process using the store)."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen(
        [sys.executable, "-m", "tests.store.worker", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(procs: list[subprocess.Popen[str]], timeout: float = 20.0) -> list[str]:
    """Wait for every worker (bounded); return their stdouts; fail on a non-zero exit."""
    deadline = time.monotonic() + timeout
    outs: list[str] = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=max(0.1, deadline - time.monotonic()))
            assert p.returncode == 0, f"worker {p.args!r} failed ({p.returncode}): {err}"
            outs.append(out)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(5)
    return outs
