"""Bus benchmark: raw pyzmq DEALER/ROUTER versus our bus, same payload, same run.

    python -m bench bus [--json] [--size 256] [--rtt 5000] [--msgs 100000] [--curve]

Both sides use a server in a separate process and a client here:

* RTT: one request in flight; the server echoes. Raw: the client thread
  sends on a DEALER and blocks on recv. Bus: the client thread calls
  ``Transport.send`` and waits on a queue fed by its subscriber callback,
  which is the path an actor sees (send from its thread, receive via tell).
  The bus server replies from inside its delivery callback.
* Throughput: one-way stream, flow-controlled by an ack per ``--window``
  messages with at most two windows in flight (no drops on either side).

Raw frames carry the payload bytes alone; bus frames carry the same bytes as
a field of an ApiRequest, inside the msgpack envelope, validated on arrival.
By default the client process runs on one CPU and both servers on another
(``--pin``): on a small machine the scheduler otherwise flips between putting
the two ends on one core (cheap wake-ups) and on two (expensive ones), which
moves every latency by a factor of up to four from run to run. Apart is the
production shape (nodes are separate hosts); ``--pin 0/0`` measures the
same-core case, ``--pin none`` leaves placement alone. Raw and bus rounds are
interleaved so that whatever else the machine does hits both alike.

The goals (same run, same payload): bus RTT p50 at most ``RTT_GOAL`` x raw,
throughput at least ``THROUGHPUT_GOAL`` x raw; the result says whether this
run met them.

The last line with --json is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq
from loguru import logger

from admin.ports import free_port
from bus.codec import Envelope
from bus.keys import CurveKeys, generate
from bus.membership import Membership
from bus.messages import ApiReply, ApiRequest
from bus.transport import Transport, TransportConfig

REPO = Path(__file__).resolve().parents[1]
RTT_GOAL = 1.5
THROUGHPUT_GOAL = 0.5


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ------------------------------------------------------------------ servers


def _serve_raw(port: int, window: int) -> int:
    ctx = zmq.Context()
    r = ctx.socket(zmq.ROUTER)
    r.setsockopt(zmq.LINGER, 0)
    r.setsockopt(zmq.RCVHWM, 0)
    r.bind(f"tcp://127.0.0.1:{port}")
    print("ready", flush=True)
    count = 0
    try:
        while True:
            ident, payload = r.recv_multipart()
            tag = payload[:1]
            if tag == b"P":
                r.send_multipart((ident, payload))
            elif tag == b"T":
                count += 1
                if count % window == 0:
                    r.send_multipart((ident, b"A"))
            elif tag == b"Q":
                return 0
    finally:
        r.close(0)
        ctx.term()


def _bus_transport(node: str, ports: dict[str, int], curve: bool, key_dir: str | None) -> Transport:

    membership = Membership.of((n, f"tcp://127.0.0.1:{p}") for n, p in ports.items())
    keys = CurveKeys.load(key_dir, node, membership.names) if curve and key_dir else None
    # recv/send HWM 0 (unbounded) on both sides, like the raw run: flow
    # control comes from the ack window, not from drops.
    config = TransportConfig(send_hwm=0, recv_hwm=0)
    return Transport(node, membership, cluster="bench", curve=curve, keys=keys, config=config)


def _serve_bus(ports: dict[str, int], window: int, curve: bool, key_dir: str | None) -> int:
    logger.remove()
    t = _bus_transport("s", ports, curve, key_dir)
    done = threading.Event()
    count = 0

    def on_request(env: Envelope) -> None:
        nonlocal count
        body = env.body
        assert isinstance(body, ApiRequest)
        if body.op == "ping":
            t.send("c", ApiReply(body.request_id, True, body.args["b"]))
        elif body.op == "tput":
            count += 1
            if count % window == 0:
                t.send("c", ApiReply("ack", True, count))
        elif body.op == "quit":
            done.set()

    t.subscribe(on_request, [ApiRequest])
    t.start()
    print("ready", flush=True)
    try:
        done.wait(120)
    finally:
        t.stop()
    return 0


# ------------------------------------------------------------------ clients


PIN: dict[str, set[int]] = {}


def _spawn(args: list[str]) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if PIN.get("server"):
        env["BENCH_PIN"] = ",".join(map(str, sorted(PIN["server"])))
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.bus", *args], stdout=subprocess.PIPE, text=True, env=env, cwd=REPO
    )
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        proc.kill()
        raise RuntimeError(f"server {args} did not start")
    return proc


def _reap(proc: subprocess.Popen[str]) -> None:
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    if proc.stdout is not None:
        proc.stdout.close()


def _stream(n: int, window: int, send_one: Callable[[], object], wait_ack: Callable[[], object]) -> float:
    """Send ``n`` messages keeping at most two windows unacknowledged; seconds taken."""
    acked = 0
    start = time.perf_counter()
    for i in range(1, n + 1):
        send_one()
        while i - acked * window >= 2 * window:
            wait_ack()
            acked += 1
    while acked < n // window:
        wait_ack()
        acked += 1
    return time.perf_counter() - start


class RawClient:
    def __init__(self, size: int, window: int) -> None:
        self.port = free_port()
        self.proc = _spawn(["--serve-raw", str(self.port), "--window", str(window)])
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.d = self.ctx.socket(zmq.DEALER)
        self.d.setsockopt(zmq.LINGER, 0)
        self.d.setsockopt(zmq.SNDHWM, 0)
        self.d.connect(f"tcp://127.0.0.1:{self.port}")
        self.ping = b"P" + os.urandom(size)
        self.blob = b"T" + os.urandom(size)
        self.window = window

    def rtt(self, n: int) -> list[float]:
        d, ping, out = self.d, self.ping, []
        for _ in range(n):
            t0 = time.perf_counter_ns()
            d.send(ping)
            d.recv()
            out.append((time.perf_counter_ns() - t0) / 1000)
        return out

    def stream(self, n: int) -> float:
        d, blob = self.d, self.blob
        return _stream(n, self.window, lambda: d.send(blob), d.recv)

    def close(self) -> None:
        self.d.send(b"Q")
        self.d.close(0)
        self.ctx.term()
        _reap(self.proc)


class BusClient:
    def __init__(self, size: int, window: int, curve: bool, key_dir: str) -> None:
        ports = {"s": free_port(), "c": free_port()}
        extra: list[str] = []
        if curve:
            generate(key_dir, "s")
            generate(key_dir, "c")
            extra = ["--curve", "--keys", key_dir]
        self.proc = _spawn(["--serve-bus", json.dumps(ports), "--window", str(window), *extra])
        self.t = _bus_transport("c", ports, curve, key_dir)
        # SimpleQueue: what a thin actor inbox costs, without pykka's extras.
        self.replies: queue.SimpleQueue[Envelope] = queue.SimpleQueue()
        self.mode = "queue"
        self.direct: list[float] = []
        self.direct_left = 0
        self.direct_done = threading.Event()
        self.last = 0
        self.t.subscribe(self._on_reply, [ApiReply])
        self.t.start()
        deadline = time.monotonic() + 10
        while "s" not in self.t.peers_up():
            if time.monotonic() > deadline:
                raise RuntimeError("bus peer did not come up")
            time.sleep(0.01)
        self.payload = {"b": os.urandom(size)}
        self.window = window

    def _on_reply(self, env: Envelope) -> None:
        if self.mode == "queue":
            self.replies.put(env)
            return
        # "direct": the next ping goes out from the delivery callback itself,
        # as a handler on the bus thread would answer: no thread hand-off.
        now = time.perf_counter_ns()
        self.direct.append((now - self.last) / 1000)
        self.direct_left -= 1
        if self.direct_left <= 0:
            self.direct_done.set()
            return
        self.last = time.perf_counter_ns()
        self.t.send("s", ApiRequest("d", "ping", self.payload))

    def rtt_via_queue(self, n: int) -> list[float]:
        """Round trips from an application thread, replies handed over through a queue."""
        self.mode = "queue"
        t, req, get, out = self.t, ApiRequest("q", "ping", self.payload), self.replies.get, []
        for _ in range(n):
            t0 = time.perf_counter_ns()
            t.send("s", req)
            get(timeout=5)
            out.append((time.perf_counter_ns() - t0) / 1000)
        return out

    def rtt_direct(self, n: int) -> list[float]:
        self.mode = "direct"
        self.direct, self.direct_left = [], n
        self.direct_done.clear()
        self.last = time.perf_counter_ns()
        self.t.send("s", ApiRequest("d", "ping", self.payload))
        if not self.direct_done.wait(30):
            raise RuntimeError("direct ping-pong stalled")
        self.mode = "queue"
        return self.direct

    def stream(self, n: int) -> float:
        t, req, get = self.t, ApiRequest("", "tput", self.payload), self.replies.get
        return _stream(n, self.window, lambda: t.send("s", req), lambda: get(timeout=10))

    def close(self) -> None:
        dropped = {k: v for k, v in self.t.stats().items() if k.startswith("dropped.")}
        self.t.send("s", ApiRequest("", "quit"))
        time.sleep(0.05)
        self.t.stop()
        _reap(self.proc)
        if dropped:
            raise RuntimeError(f"bus dropped frames during the benchmark: {dropped}")


def _cpu_seconds(pid: int) -> float:
    """User+system CPU time of another process (all its threads)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _measured(fn: Callable[[int], float], n: int, server_pid: int, cpu: dict[str, float], key: str) -> float:
    """Run a throughput round, adding client+server CPU seconds to ``cpu[key]``."""
    c0, s0 = time.process_time(), _cpu_seconds(server_pid)
    took = fn(n)
    cpu[key] += time.process_time() - c0 + _cpu_seconds(server_pid) - s0
    return took


def _summary(samples: list[float]) -> tuple[float, float]:
    return round(statistics.median(samples), 1), round(_pct(samples, 0.99), 1)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench bus", description="raw pyzmq vs bus")
    p.add_argument("--json", action="store_true")
    p.add_argument("--size", type=int, default=256, help="payload bytes per message")
    p.add_argument("--rounds", type=int, default=8, help="interleaved raw/bus rounds")
    p.add_argument("--rtt", type=int, default=600, help="round trips per variant per round")
    p.add_argument("--msgs", type=int, default=20_000, help="messages per variant per round")
    p.add_argument("--window", type=int, default=500)
    p.add_argument("--curve", action="store_true", help="also measure the bus with CURVE on")
    p.add_argument("--budget", type=float, default=30.0, help="stop starting new rounds after this")
    p.add_argument("--serve-raw", type=int, help=argparse.SUPPRESS)
    p.add_argument("--serve-bus", help=argparse.SUPPRESS)
    p.add_argument("--keys", help=argparse.SUPPRESS)
    p.add_argument(
        "--pin",
        default="auto",
        help="CPU placement CLIENT/SERVER, e.g. 0/1 or 0/0; 'auto' = first two CPUs apart "
        "when there are two or more; 'none' = leave it to the scheduler",
    )
    args = p.parse_args(argv)
    if os.environ.get("BENCH_PIN"):
        os.sched_setaffinity(0, {int(c) for c in os.environ["BENCH_PIN"].split(",")})
    if args.pin == "auto":
        cpus = sorted(os.sched_getaffinity(0))
        args.pin = f"{cpus[0]}/{cpus[1]}" if len(cpus) >= 2 else "none"
    if args.pin != "none" and not (args.serve_raw or args.serve_bus):
        client_cpus, server_cpus = args.pin.split("/")
        PIN["server"] = {int(c) for c in server_cpus.split(",")}
        os.sched_setaffinity(0, {int(c) for c in client_cpus.split(",")})
    if args.serve_raw:
        return _serve_raw(args.serve_raw, args.window)
    if args.serve_bus:
        return _serve_bus(json.loads(args.serve_bus), args.window, args.curve, args.keys)

    logger.remove()
    started = time.monotonic()
    samples: dict[str, list[float]] = {k: [] for k in ("raw", "bus", "bus_queue", "bus_curve")}
    seconds: dict[str, float] = {k: 0.0 for k in ("raw", "bus", "bus_curve")}
    sent: dict[str, int] = {k: 0 for k in seconds}
    # CPU time is what load elsewhere on the machine cannot distort much.
    cpu: dict[str, float] = {k: 0.0 for k in seconds}
    with tempfile.TemporaryDirectory() as plain_dir, tempfile.TemporaryDirectory() as curve_dir:
        raw = RawClient(args.size, args.window)
        bus = BusClient(args.size, args.window, False, plain_dir)
        cur = BusClient(args.size, args.window, True, curve_dir) if args.curve else None
        try:
            for variant in (raw.rtt, bus.rtt_direct, bus.rtt_via_queue):  # warm-up
                variant(200)
            rounds = 0
            # Interleaved rounds: load from elsewhere on the machine (CPU
            # frequency, other processes) then hits every variant alike.
            while rounds < args.rounds and time.monotonic() - started < args.budget:
                rounds += 1
                samples["raw"] += raw.rtt(args.rtt)
                samples["bus"] += bus.rtt_direct(args.rtt)
                samples["bus_queue"] += bus.rtt_via_queue(args.rtt)
                seconds["raw"] += _measured(raw.stream, args.msgs, raw.proc.pid, cpu, "raw")
                seconds["bus"] += _measured(bus.stream, args.msgs, bus.proc.pid, cpu, "bus")
                sent["raw"] += args.msgs
                sent["bus"] += args.msgs
                if cur is not None:
                    samples["bus_curve"] += cur.rtt_direct(args.rtt)
                    seconds["bus_curve"] += _measured(cur.stream, args.msgs, cur.proc.pid, cpu, "bus_curve")
                    sent["bus_curve"] += args.msgs
        finally:
            raw.close()
            bus.close()
            if cur is not None:
                cur.close()

    result: dict[str, Any] = {"payload_bytes": args.size, "rounds": rounds}
    result["raw_rtt_p50_us"], result["raw_rtt_p99_us"] = _summary(samples["raw"])
    result["bus_rtt_p50_us"], result["bus_rtt_p99_us"] = _summary(samples["bus"])
    result["raw_msgs_per_s"] = round(sent["raw"] / seconds["raw"])
    result["bus_msgs_per_s"] = round(sent["bus"] / seconds["bus"])
    result["raw_cpu_us_per_msg"] = round(cpu["raw"] / sent["raw"] * 1e6, 2)
    result["bus_cpu_us_per_msg"] = round(cpu["bus"] / sent["bus"] * 1e6, 2)
    result["bus_queue_rtt_p50_us"], result["bus_queue_rtt_p99_us"] = _summary(samples["bus_queue"])
    if cur is not None:
        result["bus_curve_rtt_p50_us"], result["bus_curve_rtt_p99_us"] = _summary(samples["bus_curve"])
        result["bus_curve_msgs_per_s"] = round(sent["bus_curve"] / seconds["bus_curve"])
        result["bus_curve_cpu_us_per_msg"] = round(cpu["bus_curve"] / sent["bus_curve"] * 1e6, 2)
    result["rtt_ratio"] = round(result["bus_rtt_p50_us"] / result["raw_rtt_p50_us"], 2)
    result["throughput_ratio"] = round(result["bus_msgs_per_s"] / result["raw_msgs_per_s"], 2)
    result["goals_met"] = result["rtt_ratio"] <= RTT_GOAL and result["throughput_ratio"] >= THROUGHPUT_GOAL
    result["seconds"] = round(time.monotonic() - started, 1)

    result["pin"] = args.pin
    print(f"payload {args.size} B, {rounds} interleaved rounds, CPUs client/server: {args.pin}")
    print(
        f"raw pyzmq      : rtt p50 {result['raw_rtt_p50_us']} us, p99 {result['raw_rtt_p99_us']} us, "
        f"{result['raw_msgs_per_s']} msgs/s"
    )
    print(
        f"bus            : rtt p50 {result['bus_rtt_p50_us']} us, p99 {result['bus_rtt_p99_us']} us, "
        f"{result['bus_msgs_per_s']} msgs/s"
    )
    print(
        f"bus, via queue : rtt p50 {result['bus_queue_rtt_p50_us']} us, "
        f"p99 {result['bus_queue_rtt_p99_us']} us (reply handed to another thread, like an actor)"
    )
    if cur is not None:
        print(
            f"bus + CURVE    : rtt p50 {result['bus_curve_rtt_p50_us']} us, "
            f"p99 {result['bus_curve_rtt_p99_us']} us, {result['bus_curve_msgs_per_s']} msgs/s"
        )
    print(
        f"CPU per message (client + server, throughput runs): raw {result['raw_cpu_us_per_msg']} us, "
        f"bus {result['bus_cpu_us_per_msg']} us"
    )
    print(f"bus/raw        : rtt x{result['rtt_ratio']}, throughput x{result['throughput_ratio']}")
    print(
        f"goals          : rtt <= x{RTT_GOAL}, throughput >= x{THROUGHPUT_GOAL}: "
        + ("met" if result["goals_met"] else "NOT met")
    )
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
