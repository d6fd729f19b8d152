"""``ha-watchdog``: the user-space watchdog driver of one node.

Machines here have no ``/dev/watchdog`` and no softdog, so self-fencing is
done by a separate small process, the way watchdog-mux multiplexes the kernel
device in the reference (BEHAVIOUR.md §1.1, §2.1):

- The node daemon connects to a UNIX socket (mode 0600) and keeps the
  connection for its lifetime. Any byte other than ``V`` is a pet; a pet
  arms the watchdog. ``V`` (the magic close) disarms it: the node has no
  watchdog client any more (no HA service active, not master).
- If no pet arrives for ``--timeout`` seconds while armed, or the client
  disconnects while armed, the watchdog *fires*: it kills every process of
  the node's services (``cgroup.kill`` on the node's cgroup, then SIGKILL to
  each recorded process group) and the node daemon (the client's pid from
  SO_PEERCRED, plus ``--kill-pid``), then exits 3.
- A disconnect while disarmed is an orderly end: with ``--exit-on-disarm``
  the watchdog exits 0, otherwise it waits for the next client.
- With ``--device /dev/watchdog`` (where it exists) every pet is also written
  to the device, so a hung *machine* is reset by the kernel as well.

SAFETY: this process never stops on its own while armed, except by firing.
It ignores SIGTERM/SIGINT while armed (only a disarm via the socket ends it
quietly); SIGKILL of this process together with the node daemon is the only
way to end it without firing, which is exactly a dead node.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import struct
import sys
import time
from pathlib import Path

EXIT_FIRED = 3
MAGIC_CLOSE = b"V"


def kill_cgroup(path: Path) -> int:
    """Kill every process in ``path`` and below; returns how many pids were signalled."""
    if not path.is_dir():
        return 0
    killed = 0
    kill_file = path / "cgroup.kill"
    if kill_file.exists():
        with contextlib.suppress(OSError):
            kill_file.write_text("1")
            killed += 1
    # fall back (and double check) with the member lists
    for procs in path.rglob("cgroup.procs"):
        with contextlib.suppress(OSError):
            for line in procs.read_text().split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(line), signal.SIGKILL)
                    killed += 1
    return killed


def kill_pgid_dir(path: Path) -> int:
    """Kill the process groups recorded under ``path`` (services without a cgroup).

    Two record shapes: ``*.pgid`` files holding the number, and the proc
    agent's ``*.json`` state files with a ``pgid`` key (agents/proc.py).
    """
    if not path.is_dir():
        return 0
    killed = 0
    for f in sorted(path.rglob("*.pgid")) + sorted(path.rglob("*.json")):
        with contextlib.suppress(OSError, ValueError, ProcessLookupError, TypeError, KeyError):
            text = f.read_text().strip()
            pgid = int(json.loads(text)["pgid"]) if f.suffix == ".json" else int(text)
            if pgid > 1:
                os.killpg(pgid, signal.SIGKILL)
                killed += 1
    return killed


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
        self.client_pids: set[int] = set()
        self.device = None
        if args.device and os.path.exists(args.device):
            self.device = open(args.device, "wb", buffering=0)  # noqa: SIM115 - held open while running

    def log(self, msg: str) -> None:
        print(f"ha-watchdog[{self.args.node}]: {msg}", file=sys.stderr, flush=True)

    def pet(self) -> None:
        if not self.armed:
            self.log(f"armed (timeout {self.timeout:g}s)")
        self.armed = True
        self.last_pet = time.monotonic()
        if self.device is not None:
            self.device.write(b"\0")

    def fire(self, reason: str) -> int:
        self.log(f"FIRING: {reason}; killing the node's services and daemon")
        n = 0
        for cg in self.args.cgroup or []:
            n += kill_cgroup(Path(cg))
        for d in self.args.pgid_dir or []:
            n += kill_pgid_dir(Path(d))
        for pid in {*self.client_pids, *(self.args.kill_pid or [])}:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                n += 1
        self.log(f"fired: {n} kill(s) sent")
        return EXIT_FIRED

    def run(self) -> int:
        path = Path(self.args.socket)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            srv.bind(str(path))
        finally:
            os.umask(old_umask)
        os.chmod(path, 0o600)
        srv.listen(4)
        srv.settimeout(0.05)
        conns: list[socket.socket] = []
        stopping = False

        def on_term(signum: int, frame: object) -> None:
            nonlocal stopping
            if self.armed:
                self.log("ignoring termination signal while armed (disarm through the socket first)")
            else:
                stopping = True

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)
        self.log(f"listening on {path}")
        if self.args.ready_fd is not None:
            os.write(self.args.ready_fd, b"ready\n")
            os.close(self.args.ready_fd)
        try:
            while not stopping:
                with contextlib.suppress(TimeoutError, BlockingIOError):
                    conn, _ = srv.accept()
                    conn.setblocking(False)
                    pid = peer_pid(conn)
                    if pid is not None:
                        self.client_pids.add(pid)
                    conns.append(conn)
                for conn in list(conns):
                    try:
                        data = conn.recv(4096)
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    if data:
                        if data.endswith(MAGIC_CLOSE):
                            if self.armed:
                                self.log("magic close: disarmed")
                            self.armed = False
                        else:
                            self.pet()
                        continue
                    conns.remove(conn)
                    conn.close()
                    if self.armed:
                        return self.fire("client disconnected while armed")
                    self.log("client disconnected while disarmed")
                    if self.args.exit_on_disarm and not conns:
                        return 0
                if self.armed and time.monotonic() - self.last_pet > self.timeout:
                    return self.fire(f"no pet for more than {self.timeout:g}s")
                time.sleep(0.02)
        finally:
            srv.close()
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="ha-watchdog", description=__doc__.split("\n")[0])
    ap.add_argument("--node", required=True)
    ap.add_argument("--socket", required=True, help="UNIX socket path (created with mode 0600)")
    ap.add_argument("--timeout", type=float, default=2.0, help="seconds without a pet before firing")
    ap.add_argument("--cgroup", action="append", help="cgroup dir to kill when firing (repeatable)")
    ap.add_argument(
        "--pgid-dir", action="append", help="dir of *.pgid / agent *.json state files whose groups to kill"
    )
    ap.add_argument("--kill-pid", action="append", type=int, help="extra pid to SIGKILL when firing")
    ap.add_argument("--device", default="/dev/watchdog", help="kernel watchdog device, used where it exists")
    ap.add_argument("--exit-on-disarm", action="store_true", help="exit 0 after a magic close")
    ap.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.timeout <= 0:
        ap.error("--timeout must be positive")
    return Watchdog(args).run()


if __name__ == "__main__":
    sys.exit(main())
