"""A bare bus node as a process: prints its membership/quorum view as JSON lines.

Used by the network-namespace partition tests and handy for poking at a
cluster by hand::

    python -m bus.runner --node a --cluster demo \\
        --member a=tcp://10.0.0.1:7000 --member b=tcp://10.0.0.2:7000 \\
        --member c=tcp://10.0.0.3:7000 --keys /etc/pyha/keys

Each line on stdout is one JSON object with an ``event`` key:
``ready`` (once bound), ``peer_up``, ``peer_down``, ``quorum`` (with
``quorate`` and ``members``) and ``stopped``. ``t`` is ``time.monotonic()``
of this process. The node runs until SIGTERM/SIGINT or for at most ``--duration``
seconds (so a test that dies cannot leave it behind forever).
"""

from __future__ import annotations

import argparse
import json
import queue
import signal
import sys
import threading
import time
from typing import Any

from loguru import logger

from bus.codec import Envelope
from bus.errors import BusError
from bus.keys import CurveKeys
from bus.membership import Membership
from bus.messages import PeerDown, PeerUp, QuorumLost, QuorumRegained
from bus.transport import Transport, TransportConfig


def _parse_member(text: str) -> tuple[str, str]:
    name, sep, endpoint = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected NAME=ENDPOINT, got {text!r}")
    return name, endpoint


def _event(env: Envelope) -> dict[str, Any]:
    body = env.body
    out: dict[str, Any] = {"t": time.monotonic()}
    if isinstance(body, PeerUp):
        out.update(event="peer_up", peer=body.node)
    elif isinstance(body, PeerDown):
        out.update(event="peer_down", peer=body.node)
    elif isinstance(body, QuorumLost | QuorumRegained):
        out.update(event="quorum", quorate=isinstance(body, QuorumRegained), members=list(body.members))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bus.runner", description=__doc__.splitlines()[0])
    p.add_argument("--node", required=True)
    p.add_argument("--cluster", required=True)
    p.add_argument("--member", action="append", type=_parse_member, required=True, metavar="NAME=ENDPOINT")
    p.add_argument("--keys", help="key directory (CURVE on)")
    p.add_argument("--no-curve", action="store_true", help="plain TCP, for tests only")
    p.add_argument("--heartbeat", type=float, default=TransportConfig.heartbeat_interval)
    p.add_argument("--timeout", type=float, default=TransportConfig.peer_timeout)
    p.add_argument("--expected-votes", type=int)
    p.add_argument("--tie-breaker", action="store_true")
    p.add_argument("--duration", type=float, default=3600.0, help="exit after this many seconds")
    p.add_argument("--log-level", default="WARNING")
    args = p.parse_args(argv)

    logger.remove()
    logger.add(sys.stderr, level=args.log_level)
    if not args.no_curve and not args.keys:
        p.error("give --keys DIR, or --no-curve")
    try:
        membership = Membership.of(args.member)
        keys = None if args.no_curve else CurveKeys.load(args.keys, args.node, membership.names)
        config = TransportConfig(
            heartbeat_interval=args.heartbeat,
            peer_timeout=args.timeout,
            expected_votes=args.expected_votes,
            tie_breaker=args.tie_breaker,
        )
        transport = Transport(
            args.node, membership, cluster=args.cluster, curve=not args.no_curve, keys=keys, config=config
        )
    except BusError as exc:
        print(f"bus.runner: {exc}", file=sys.stderr)
        return 2

    events: queue.Queue[dict[str, Any] | None] = queue.Queue()
    # The callback runs on the bus I/O thread: only enqueue, print elsewhere.
    transport.subscribe(lambda env: events.put(_event(env)), [PeerUp, PeerDown, QuorumLost, QuorumRegained])
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()
        events.put(None)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def emit(obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
        sys.stdout.flush()

    try:
        transport.start()
    except BusError as exc:
        print(f"bus.runner: {exc}", file=sys.stderr)
        return 2
    try:
        emit({"event": "ready", "node": args.node, "endpoint": transport.endpoint, "t": time.monotonic()})
        deadline = time.monotonic() + args.duration
        while not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                item = events.get(timeout=left)
            except queue.Empty:
                break
            if item is not None:
                emit(item)
    finally:
        transport.stop()
        emit({"event": "stopped", "node": args.node, "stats": transport.stats(), "t": time.monotonic()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
