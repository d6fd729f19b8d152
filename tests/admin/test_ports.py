"""Listener ports come from outside the kernel's ephemeral range (where outgoing connections draw theirs)."""

from __future__ import annotations

import random
import socket
from pathlib import Path

from admin.ports import ephemeral_range, free_ports, listener_ranges


def test_ephemeral_range_read_and_defaulted(tmp_path: Path) -> None:
    f = tmp_path / "range"
    f.write_text("40000\t50000\n")
    assert ephemeral_range(f) == (40000, 50000)
    assert ephemeral_range(tmp_path / "missing") == (32768, 60999)
    f.write_text("garbage")
    assert ephemeral_range(f) == (32768, 60999)


def test_listener_ranges_leave_out_the_ephemeral_range() -> None:
    assert listener_ranges((32768, 60999)) == [range(10000, 32768), range(61000, 65536)]
    # an ephemeral range that starts low: only the ports above it
    assert listener_ranges((1024, 60999)) == [range(61000, 65536)]
    # everything ephemeral: fall back to any port above LOWEST rather than fail
    assert listener_ranges((1024, 65535)) == [range(10000, 65536)]


def test_free_ports_distinct_bindable_and_not_ephemeral() -> None:
    lo, hi = ephemeral_range()
    ports = free_ports(20, rng=random.Random(7))
    assert len(set(ports)) == 20
    if lo > 11000:
        assert all(not (lo <= p <= hi) for p in ports), ports
    for p in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", p))  # free indeed: released on return


def test_free_ports_skip_a_port_in_use() -> None:
    held = socket.socket()
    try:
        taken = free_ports(1, rng=random.Random(1))[0]
        held.bind(("127.0.0.1", taken))
        # the same seed tries the same port first: it must step past it
        again = free_ports(1, rng=random.Random(1))[0]
        assert again != taken
    finally:
        held.close()
