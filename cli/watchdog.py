"""``ha-watchdog``: the watchdog of one node, a process of its own beside ``ha-node``.

It plays the part of watchdog-mux in the reference (BEHAVIOUR.md §1.1, §2.1):

- The node daemon connects to a UNIX socket (mode 0600) and keeps the
  connection for its lifetime. Any byte other than ``V`` is a pet; a pet
  arms the watchdog. ``V`` (the magic close) disarms it: the node has no
  watchdog client any more (no HA service active, not master).
- Every ``STATUS_EVERY`` seconds (and at once after a change) it answers each
  client with one status byte, ``a`` (armed) or ``d`` (disarmed). The node
  daemon's guard (actors/watchdog.py) takes silence as a dead or stalled
  watchdog and fences the node itself: no services without a working watchdog.
- If no pet arrives for ``--timeout`` seconds while armed, or the client
  disconnects while armed, it *fires*: one ``write(2)`` to the pre-opened
  ``cgroup.kill`` of the node's cgroup kills the node daemon, every service
  and any launch in flight together; then the recorded process groups that
  provably belong to this boot, and the client's pid, are killed
  (fence/kill.py). Then it exits 3.
- Drivers (``--driver``): ``userspace`` (the kill above is the fence) or
  ``device``: a Linux watchdog device (``/dev/watchdog``: softdog or
  hardware) is opened when armed, its timeout set to ``--timeout`` (read back
  and logged), kept alive on every pet and closed with the magic ``V`` only on
  an orderly disarm. On firing, on a crash of this process or when this
  process is frozen the device is never disarmed: the machine resets when it
  expires. That is the one answer to faults no user-space process survives
  (both daemons frozen, the host suspended); docs/RUNTIME.md lists them.
- A disconnect while disarmed is an orderly end: with ``--exit-on-disarm``
  the watchdog exits 0, otherwise it waits for the next client.

All deadlines are measured on CLOCK_BOOTTIME, which keeps counting while the
host is suspended: a host that resumes after its deadline fires at once.

SAFETY: this process never stops on its own while armed, except by firing.
It ignores SIGTERM/SIGINT while armed (only a disarm via the socket ends it
quietly). It locks its memory, leaves the OOM killer alone (-1000) and runs
at a real-time priority where the host allows (fence/hardening.py). One
``ha-watchdog`` per node: a second one refuses to start (lock file).

Standard library and ``fence`` only: the QEMU guest test runs this very
program against a real watchdog device.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import math
import os
import select
import signal
import socket
import struct
import sys
from collections.abc import Callable
from pathlib import Path

from fence.clock import boottime
from fence.device import DeviceError, WatchdogDevice, device_problem
from fence.hardening import harden
from fence.kill import NodeKiller
from fence.unixpath import reachable

EXIT_FIRED = 3
EXIT_USAGE = 1
MAGIC_CLOSE = b"V"
STATUS_ARMED = b"a"
STATUS_DISARMED = b"d"
STATUS_EVERY = 0.25  # s between status bytes to each client (the guard's sign of life; 0.1 before 2026-12-02)
DRIVERS = ("userspace", "device")


def peer_pid(conn: socket.socket) -> int | None:
    try:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    pid, _, _ = struct.unpack("3i", creds)
    return pid or None


class Watchdog:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.timeout: float = args.timeout
        self.armed = False
        self.last_pet = 0.0
        self.device: WatchdogDevice | None = None
        self.killer = NodeKiller(
            [Path(c) for c in args.cgroup or []],
            [Path(d) for d in args.pgid_dir or []],
            args.kill_pid or [],
            create_cgroups=True,
        )
        for p in self.killer.problems:
            self.log(f"WARNING: cannot prepare the kill of {p}; falling back to killing listed members")

    def log(self, msg: str) -> None:
        print(f"ha-watchdog[{self.args.node}]: {msg}", file=sys.stderr, flush=True)

    # -- arm, pet, disarm -----------------------------------------------------------
    def pet(self) -> str | None:
        """A pet from the client; a reason to fire when the device cannot be kept alive."""
        if not self.armed:
            if self.args.driver == "device":
                self._open_device()
            self.log(f"armed (timeout {self.timeout:g}s, {self.args.driver})")
        self.armed = True
        self.last_pet = boottime()
        if self.device is not None:
            try:
                self.device.keepalive()
            except DeviceError as e:
                # SAFETY: the device will reset the machine, but when is up to it: fence now
                return f"keepalive on {self.args.device} failed ({e})"
        return None

    def _open_device(self) -> None:
        want = max(1, math.ceil(self.timeout))
        self.device = WatchdogDevice.open(self.args.device, want)
        note = f"; {self.device.timeout_note}" if self.device.timeout_note else ""
        self.log(
            f"device {self.args.device} ({self.device.identity or 'unknown'}) opened,"
            f" timeout {self.device.timeout}s{note}"
        )

    def disarm(self) -> None:
        if self.armed:
            self.log("magic close: disarmed")
        self.armed = False
        if self.device is not None:
            # SAFETY: the magic close only here, on the client's orderly disarm
            try:
                self.device.disarm()
            except DeviceError as e:
                self.log(f"ERROR: cannot disarm {self.args.device} ({e}): the machine resets when it expires")
            self.device = None

    def fire(self, reason: str, client_pids: set[int]) -> int:
        for pid in client_pids:
            self.killer.add_pid(pid)
        # kill first, talk afterwards: the firing path is one write(2) per cgroup
        rep = self.killer.fire()
        self.log(f"FIRING: {reason}; killed the node's services and daemon")
        for note in rep.skipped:
            self.log(f"not killed: {note}")
        self.log(f"fired: {rep.kills} kill(s) sent ({rep.describe()})")
        if self.device is not None:
            self.log(f"device {self.args.device} left armed: the machine resets when it expires")
        # SAFETY: no magic close on this path; exit keeps the device counting down
        return EXIT_FIRED

    # -- the loop -------------------------------------------------------------------
    def run(self) -> int:
        path = Path(self.args.socket)
        lock_fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.log(f"another ha-watchdog serves {path}; refusing to start a second one")
            return EXIT_USAGE
        if not self.args.no_harden:
            self.log("; ".join(harden()))
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # we hold the lock: whoever made it is gone
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            with reachable(path) as name:  # any length (fence/unixpath.py)
                srv.bind(name)
        finally:
            os.umask(old_umask)
        os.chmod(path, 0o600)
        srv.listen(4)
        srv.setblocking(False)
        stopping = False

        def on_term(signum: int, frame: object) -> None:
            nonlocal stopping
            if self.armed:
                self.log("ignoring termination signal while armed (disarm through the socket first)")
            else:
                stopping = True

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)
        self.log(f"listening on {path} ({self.args.driver} driver)")
        if self.args.ready_fd is not None:
            os.write(self.args.ready_fd, b"ready\n")
            os.close(self.args.ready_fd)
        try:
            return self._loop(srv, lambda: stopping)
        finally:
            srv.close()
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def _loop(self, srv: socket.socket, stopping: Callable[[], bool]) -> int:
        conns: dict[int, socket.socket] = {}
        pids: dict[int, int] = {}
        poller = select.poll()
        poller.register(srv, select.POLLIN)
        next_status = 0.0
        while not stopping():
            now = boottime()
            wait = next_status - now
            if self.armed:
                wait = min(wait, self.last_pet + self.timeout - now)
            events: list[tuple[int, int]] = []
            with contextlib.suppress(InterruptedError):
                events = poller.poll(max(0, math.ceil(wait * 1000)))
            changed = petted = False
            for fd, _ in events:
                if fd == srv.fileno():
                    with contextlib.suppress(BlockingIOError):
                        conn, _ = srv.accept()
                        conn.setblocking(False)
                        conns[conn.fileno()] = conn
                        pid = peer_pid(conn)
                        if pid is not None:
                            pids[conn.fileno()] = pid
                        poller.register(conn, select.POLLIN)
                    continue
                conn = conns[fd]
                try:
                    data = conn.recv(4096)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if data:
                    was = self.armed
                    if data.endswith(MAGIC_CLOSE):
                        self.disarm()
                    else:
                        why = self.pet()
                        if why is not None:
                            return self.fire(why, set(pids.values()))
                        petted = True
                    changed = changed or was != self.armed
                    continue
                poller.unregister(fd)
                del conns[fd]
                gone_pid = pids.pop(fd, None)
                conn.close()
                if self.armed:
                    left = {*pids.values(), *([gone_pid] if gone_pid else [])}
                    return self.fire("client disconnected while armed", left)
                self.log("client disconnected while disarmed")
                if self.args.exit_on_disarm and not conns:
                    return 0
            now = boottime()
            if self.armed and now - self.last_pet > self.timeout:
                return self.fire(f"no pet for more than {self.timeout:g}s", set(pids.values()))
            # A pet in the second half of a status period is answered at once, and the period
            # starts again from there: the status rides on the wake-up the pet caused instead
            # of one of its own (issue #17). Status bytes only ever come earlier than the timer.
            early = petted and now >= next_status - self.args.status_every / 2
            if changed or early or now >= next_status:
                next_status = now + self.args.status_every
                status = STATUS_ARMED if self.armed else STATUS_DISARMED
                for conn in conns.values():
                    # a full buffer (a stopped client) or a closed peer: its recv() will tell
                    with contextlib.suppress(OSError):
                        conn.send(status)
        return 0


def main(argv: list[str] | None = None) -> int:
    os.umask(0o077)  # its socket and logs are root's alone (admin/private.py; stdlib only here)
    ap = argparse.ArgumentParser(prog="ha-watchdog", description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--node", required=True)
    ap.add_argument("--socket", required=True, help="UNIX socket path (created with mode 0600)")
    ap.add_argument("--timeout", type=float, default=2.0, help="seconds without a pet before firing")
    ap.add_argument(
        "--status-every", type=float, default=STATUS_EVERY, help="seconds between status bytes to the client"
    )
    ap.add_argument(
        "--driver",
        choices=DRIVERS,
        default="userspace",
        help="userspace: firing kills the node's processes; device: also arm a Linux watchdog device",
    )
    ap.add_argument("--device", default="/dev/watchdog", help="watchdog device for --driver device")
    ap.add_argument("--cgroup", action="append", help="cgroup dir to kill when firing (repeatable)")
    ap.add_argument(
        "--pgid-dir", action="append", help="dir of agent *.json state files whose process groups to kill"
    )
    ap.add_argument("--kill-pid", action="append", type=int, help="extra pid to SIGKILL when firing")
    ap.add_argument("--exit-on-disarm", action="store_true", help="exit 0 after a magic close")
    ap.add_argument("--no-harden", action="store_true", help="skip mlockall/oom_score_adj/priority (tests)")
    ap.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if not (args.timeout > 0 and math.isfinite(args.timeout)):
        ap.error("--timeout must be a positive number of seconds")
    if not (0 < args.status_every <= 1 and math.isfinite(args.status_every)):
        ap.error("--status-every must be a number of seconds in (0, 1]")
    if args.driver == "device":
        problem = device_problem(args.device)
        if problem is not None:
            print(f"ha-watchdog[{args.node}]: {problem}", file=sys.stderr, flush=True)
            return EXIT_USAGE
    try:
        return Watchdog(args).run()
    except DeviceError as e:
        print(f"ha-watchdog[{args.node}]: cannot arm the watchdog device: {e}", file=sys.stderr, flush=True)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
