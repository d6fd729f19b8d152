"""A separate process that uses a store, for the multi-process contract tests.

Run as ``python -m tests.store.worker URL OP ARGS...``; prints results on stdout.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
import time
from collections.abc import Callable

from store import VersionConflict, open_store
from store.base import Store


def op_append(st: Store, name: str, count: str, tag: str) -> None:
    for i in range(int(count)):
        st.append(name, f"{tag}-{i}")


def op_take(st: Store, name: str, seconds: str) -> None:
    deadline = time.monotonic() + float(seconds)
    while time.monotonic() < deadline:
        data = st.take(name)
        if data:
            sys.stdout.write(data.decode())
        time.sleep(0.002)


def op_cas_incr(st: Store, name: str, count: str) -> None:
    conflicts = 0
    done = 0
    while done < int(count):
        rec = st.read(name)
        n = int(rec.data) if rec is not None else 0
        try:
            st.write(name, str(n + 1).encode(), rec.version if rec is not None else "")
            done += 1
        except VersionConflict:
            conflicts += 1
    print(conflicts)


def op_mutex(st: Store, lease: str, holder: str, ttl: str, seconds: str, owner: str) -> None:
    """Enter a critical section guarded by the lease; count overlaps seen."""
    acquired = violations = 0
    deadline = time.monotonic() + float(seconds)
    while time.monotonic() < deadline:
        t0 = time.monotonic()
        if st.acquire_lease(lease, holder, float(ttl)):
            acquired += 1
            st.write(owner, holder.encode())
            time.sleep(0.003)
            rec = st.read(owner)
            if rec is None or rec.data != holder.encode():
                violations += 1
            if time.monotonic() - t0 >= float(ttl):
                violations += 1000  # held past its own ttl: the test's premise broke
            st.release_lease(lease, holder)
        time.sleep(0.001)
    print(json.dumps({"acquired": acquired, "violations": violations}))


def op_hold(st: Store, lease: str, holder: str, ttl: str) -> None:
    """Take the lease, say so, then never renew (the parent kills us)."""
    deadline = time.monotonic() + 10
    while not st.acquire_lease(lease, holder, float(ttl)):
        if time.monotonic() > deadline:
            sys.exit(3)
        time.sleep(0.005)
    print("held", flush=True)
    time.sleep(60)


def payload(seq: int, size: int) -> bytes:
    pad = "x" * size
    return json.dumps({"seq": seq, "pad": pad, "sum": hashlib.sha256(pad.encode()).hexdigest()}).encode()


def op_write_loop(st: Store, name: str) -> None:
    """Write ever-increasing seqs of varying size; print each seq once acknowledged."""
    rnd = random.Random()
    seq = 0
    while True:
        seq += 1
        st.write(name, payload(seq, rnd.choice((10, 5000, 70000, 300000))))
        print(seq, flush=True)


OPS: dict[str, Callable[..., None]] = {
    "append": op_append,
    "take": op_take,
    "cas-incr": op_cas_incr,
    "mutex": op_mutex,
    "hold": op_hold,
    "write-loop": op_write_loop,
}


def main(argv: list[str]) -> None:
    url, op, *args = argv
    st = open_store(url)
    try:
        OPS[op](st, *args)
    finally:
        st.close()


if __name__ == "__main__":
    main(sys.argv[1:])
