"""``python -m bench chaos``: the options, the run with its signal handling and teardown, the result.

The user-facing description is the package's docstring (bench/chaos/__init__.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import tempfile
import traceback
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Final

from bench.chaos.nemesis import Chaos
from bench.chaos.observe import log
from bench.chaos.schedule import (
    BOTH_KILL_GAP_S,
    BOTH_STOP_GAP_S,
    COVER_LIMIT,
    DIR_KINDS,
    KINDS,
    STOP_HOLD_S,
    Options,
)
from bench.livecluster import LiveCluster

# --help's description: the first line of the package's docstring (bench/chaos/__init__.py)
DESCRIPTION: Final = "Live fault injection, in the spirit of Jepsen's nemesis: ``python -m bench chaos``."


class Interrupted(BaseException):
    """SIGTERM: tear down as on Ctrl-C."""


def parse_kinds(text: str, store: str) -> list[str]:
    allowed = KINDS if store == "etcd" else DIR_KINDS
    if text == "all":
        return list(allowed)
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    bad = [k for k in kinds if k not in allowed]
    if bad or not kinds:
        raise ValueError(f"unknown or unsupported kind(s) for the {store} store: {', '.join(bad) or '(none)'}"
                         f" (choose from {', '.join(allowed)})")  # fmt: skip
    return list(dict.fromkeys(kinds))


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """SIGTERM raises (like Ctrl-C) while the run goes on; both are ignored during the teardown."""

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise Interrupted

    old = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def report(chaos: Chaos, fault_time: float, settled: float | None, down: list[str]) -> dict[str, object]:
    """The result (the ``--json`` line) of CHAOS's run."""
    assert chaos.poller is not None
    answering = chaos.poller.answering()
    longest = chaos.poller.longest()
    worst_sid = max(longest, key=lambda s: longest[s][0]) if longest else None
    firings = sum(chaos.firings(n) for n in chaos.c.nodes)
    exits = sum(chaos.failure_exits(n) for n in chaos.c.nodes)
    unavailable = sorted(s for s, ok in answering.items() if not ok)
    return {
        "store": chaos.c.store_kind,
        "nodes": len(chaos.c.nodes),
        "services": len(chaos.sids),
        "seed": chaos.o.seed,
        "minutes": chaos.o.minutes,
        "kinds": chaos.o.kinds,
        "fault_time_s": round(fault_time, 1),
        "steps": len(chaos.steps),
        "faults": chaos.faults,
        "double_runs": [i.describe() for i in chaos.incidents.values()],
        "double_run_events": sum(i.events for i in chaos.incidents.values()),
        "unavailable_at_end": len(unavailable),
        "unavailable_services": unavailable,
        "nodes_down_at_end": down,
        "misplaced_at_end": chaos.inconsistent,
        "settled_after_s": settled,
        "longest_unavailability_s": round(longest[worst_sid][0], 2) if worst_sid else 0.0,
        "longest_unavailability": (
            {"service": worst_sid, "fault": longest[worst_sid][1]}
            if worst_sid and longest[worst_sid][0] > 0
            else None
        ),
        "unavailability_by_service": {
            s: {"longest_s": round(v, 2), "fault": f or None} for s, (v, f) in sorted(longest.items())
        },
        "nodes_self_fenced": chaos.self_fenced,
        "watchdog_firings": firings,
        "ha_node_failure_exits": exits,
        "collateral_fencing": chaos.collateral,
        "config_harm": chaos.config_harm,
        "gaps": {"both_kill_gap_s": chaos.o.both_kill_gap, "both_stop_gap_s": chaos.o.both_stop_gap},
        "stop_hold_s": list(STOP_HOLD_S),
        "settle_s": chaos.o.settle,
        "anomalies": chaos.anomalies,
        "schedule": chaos.steps,
    }


def run(opts: Options, root: Path) -> tuple[dict[str, object], int]:
    netns = opts.store == "etcd" or "partition" in opts.kinds
    result: dict[str, object] = {}
    code = 1
    c: LiveCluster | None = None
    chaos: Chaos | None = None
    with signals_raise():
        try:
            c = LiveCluster(root, opts.nodes, netns=netns, store=opts.store)
            chaos = Chaos(c, opts)
            result = report(chaos, *chaos.run())
            ok = not result["double_runs"] and result["unavailable_at_end"] == 0 and not result["config_harm"]
            code = 0 if ok else 1
        except (KeyboardInterrupt, Interrupted):
            log("interrupted: tearing down")
            result = report(chaos, 0.0, None, []) if chaos is not None and chaos.poller else {}
            result["error"] = "interrupted"
            code = 130
        except Exception as e:
            log(traceback.format_exc())
            result = report(chaos, 0.0, None, []) if chaos is not None and chaos.poller else {}
            result["error"] = f"{type(e).__name__}: {e}"
            code = 1
        finally:
            # the teardown must finish: Ctrl-C and SIGTERM wait until it did
            old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
            old_term = signal.signal(signal.SIGTERM, signal.SIG_IGN)
            try:
                left: list[int] = []
                if chaos is not None:
                    left = chaos.teardown()
                elif c is not None:
                    c.close()
                    left = c.kill_leftovers()
                if left:
                    log(f"teardown: killed {len(left)} leftover process(es): {left}")
                result["leftover_processes"] = len(left)
            finally:
                signal.signal(signal.SIGINT, old_int)
                signal.signal(signal.SIGTERM, old_term)
    return result, code


def as_list(value: object) -> list[object]:
    return list(value) if isinstance(value, list) else []


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench chaos", description=DESCRIPTION)
    ap.add_argument("--minutes", type=float, required=True, help="inject faults for this long")
    ap.add_argument("--seed", type=int, required=True, help="the schedule's random seed")
    ap.add_argument("--nodes", type=int, choices=[3, 5], default=3)
    ap.add_argument("--store", choices=["dir", "etcd"], default="dir")
    ap.add_argument("--services", type=int, default=3, help="demo services (default 3)")
    ap.add_argument(
        "--kinds",
        default="all",
        help=f"comma-separated fault kinds (default all of the store's: {', '.join(KINDS)})",
    )
    ap.add_argument(
        "--settle",
        type=float,
        default=60.0,
        help="at the end: seconds to wait for every service to answer (default 60)",
    )
    ap.add_argument(
        "--cover",
        action="store_true",
        help=f"inject every enabled kind at least once, even past --minutes (at most {COVER_LIMIT:g} x)",
    )
    ap.add_argument(
        "--fail-fast",
        action="store_true",
        help="no more faults after the first double run (then heal, settle, report)",
    )
    ap.add_argument(
        "--both-kill-gap",
        type=float,
        default=BOTH_KILL_GAP_S,
        help=f"both_kill: seconds between the watchdog's and ha-node's SIGKILL ({BOTH_KILL_GAP_S})",
    )
    ap.add_argument(
        "--both-stop-gap",
        type=float,
        default=BOTH_STOP_GAP_S,
        help=f"both_stop: seconds between the watchdog's and ha-node's SIGSTOP ({BOTH_STOP_GAP_S})",
    )
    ap.add_argument("--dir", help="run the cluster in DIR and keep it (logs, markers); default: a temp dir")
    ap.add_argument("--json", action="store_true", help="end with one line holding a JSON object")
    args = ap.parse_args(argv)  # fmt: skip
    try:
        kinds = parse_kinds(args.kinds, args.store)
    except ValueError as e:
        ap.error(str(e))
    if args.services < 1 or args.minutes < 0 or args.settle < 0:
        ap.error("--services must be >= 1, --minutes and --settle >= 0")
    if args.both_kill_gap < 0.5 or args.both_stop_gap < 2.0:
        log("warning: gaps below 0.5 s (both_kill) / 2 s (both_stop) are beyond what a user-space "
            "watchdog can survive")  # fmt: skip
    if (args.store == "etcd" or "partition" in kinds) and (os.geteuid() != 0 or shutil.which("ip") is None):
        ap.error("network namespaces (partition, --store etcd) need root and iproute2")
    opts = Options(
        minutes=args.minutes, seed=args.seed, nodes=args.nodes, store=args.store, services=args.services,
        kinds=kinds, settle=args.settle, cover=args.cover, fail_fast=args.fail_fast,
        both_kill_gap=args.both_kill_gap, both_stop_gap=args.both_stop_gap,
    )  # fmt: skip
    if args.dir:
        root = Path(args.dir).absolute()
        root.mkdir(parents=True, exist_ok=True)
        result, code = run(opts, root)
        log(f"cluster directory kept: {root}")
    else:
        with tempfile.TemporaryDirectory(prefix="pyha-chaos-") as tmp:
            result, code = run(opts, Path(tmp))
    summary = (
        f"faults {result.get('faults')}, double runs {len(as_list(result.get('double_runs')))}, "
        f"unavailable at end {result.get('unavailable_at_end')}, "
        f"longest unavailability {result.get('longest_unavailability_s')} s "
        f"({result.get('longest_unavailability')}), self-fenced {result.get('nodes_self_fenced')}"
    )
    print(summary)
    if args.json:
        print(json.dumps(result))
    return code
