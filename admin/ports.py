"""Ports for long-lived listeners of a local cluster, chosen outside the kernel's ephemeral range.

``bind(("127.0.0.1", 0))`` hands out a port from the ephemeral range
(``net.ipv4.ip_local_port_range``, 32768-60999 by default), the same range the
kernel draws the local port of every outgoing connection from. A port chosen
that way at ``ha-cluster init`` and bound later at ``up`` can meanwhile be taken
by any outgoing connection on the host (a node's bus link, an HTTP check, a
test's client): the listener then fails with EADDRINUSE. Ports outside that
range are only ever taken by an explicit bind, which the check here sees.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST = 10000  # below: ports that well-known services use


def ephemeral_range(path: Path = RANGE_FILE) -> tuple[int, int]:
    """The kernel's ephemeral port range; Linux's default where it cannot be read."""
    try:
        lo, hi = (int(x) for x in path.read_text().split()[:2])
    except (OSError, ValueError):
        return 32768, 60999
    return lo, hi


def listener_ranges(ephemeral: tuple[int, int]) -> list[range]:
    """The port ranges outside the ephemeral one (and above LOWEST), largest first."""
    lo, hi = ephemeral
    out = [range(LOWEST, lo), range(hi + 1, 65536)]
    out = [r for r in out if len(r) > 0]
    return sorted(out, key=len, reverse=True) or [range(LOWEST, 65536)]


def free_ports(n: int, host: str = "127.0.0.1", *, rng: random.Random | None = None) -> list[int]:
    """N distinct ports free on HOST right now, none from the ephemeral range where that is possible.

    Each port is bound while the others are chosen (no port twice); they are
    released on return, so the caller binds them soon after.
    """
    rng = rng or random.SystemRandom()
    pool = [p for r in listener_ranges(ephemeral_range()) for p in r]
    socks: list[socket.socket] = []
    try:
        for _ in range(200 * max(n, 1)):
            if len(socks) == n:
                break
            s = socket.socket()
            try:
                s.bind((host, rng.choice(pool)))
            except OSError:
                s.close()
                continue
            socks.append(s)
        else:
            if len(socks) < n:
                raise OSError(f"no {n} free ports found on {host}")
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port(host: str = "127.0.0.1") -> int:
    return free_ports(1, host)[0]
