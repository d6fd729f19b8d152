"""Closing the link monitors never hangs, even while link events arrive.

libzmq sends a socket's monitor events on an internal PAIR socket, blocking,
under the socket's monitor lock; once our reading end is closed such a send
never completes, and ``disable_monitor()`` then waits for that lock forever.
A node stopping while its peers stop too (``ha-cluster down``) sees exactly
that: its I/O thread hung in ``disable_monitor`` and the node had to be
killed. Found by the chapter test in CI (a 1-in-10 race).

The race is made certain here: the peer goes away inside ``close_monitors``,
right before the first ``disable_monitor``, and its DISCONNECTED event is
given time to be sent. Runs in a child process: a hung libzmq
thread must not wedge the test run.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import time
    import zmq
    from bus.config import TransportConfig
    from bus.links import LINK_EVENTS, LinkMonitor
    from bus.membership import Membership
    from bus.ratelog import RateLimitedLog

    slow = zmq.Socket.disable_monitor
    peers = []

    def slowed(self):  # the peer goes away right before the monitor is disabled
        while peers:
            peers.pop().close(linger=0)
            time.sleep(0.2)  # its DISCONNECTED event is sent meanwhile
        return slow(self)

    zmq.Socket.disable_monitor = slowed
    ctx = zmq.Context()
    for round_ in range(3):
        router = ctx.socket(zmq.ROUTER)
        port = router.bind_to_random_port("tcp://127.0.0.1")
        dealer = ctx.socket(zmq.DEALER)
        lm = LinkMonitor(
            "a", Membership.of([("a", "tcp://127.0.0.1:1"), ("b", f"tcp://127.0.0.1:{port}")]),
            TransportConfig(), 1, frame=lambda m: b"", emit=lambda m: None, count=lambda k: None,
            rlog=RateLimitedLog(), clock=time.monotonic, wall_clock=time.time,
        )
        lm.watch(dealer, LINK_EVENTS)
        dealer.connect(f"tcp://127.0.0.1:{port}")
        dealer.send(b"hello")
        assert router.poll(5000), "no connection"
        peers.append(router)
        lm.close_monitors()
        dealer.close(linger=0)
    ctx.term()
    print("closed")
    """
)


def test_close_monitors_while_the_peer_goes_away_does_not_hang() -> None:
    assert _run() == "closed"


def _run() -> str:
    try:
        res = subprocess.run(
            [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=20, cwd=REPO,
            check=False, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return "hung"
    return res.stdout.strip() or res.stderr
