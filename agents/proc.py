"""The ``proc`` resource type: a supervised command line (see docs/AGENTS.md).

resources.cfg properties (BEHAVIOUR.md §7.1 plus the registry's extras):

``cmd``           shell command line (``/bin/sh -c``), required
``check_tcp``     ``host:port`` that accepts a TCP connection when healthy
``check_cmd``     shell command that exits 0 when healthy
``stop_timeout``  seconds between SIGTERM and SIGKILL (default 10)
``cwd``           working directory (default ``/``)
``env``           ``KEY=VALUE KEY2='with space'`` added to the environment

Each service runs in its own session and process group and, where cgroup v2
is writable, its own cgroup ``<cgroup_base>/<node>/<name>``. It is started
through ``agents/shspawn.py`` (or ``agents/launcher.py``) so that it is not our child: it survives a
restart of the LRM. Its pid, process group, start time, boot id and cgroup
are kept in ``<state_dir>/<node>/proc/<name>.json``, so any later process
(a fresh LRM) can check and stop it. Output goes to ``<name>.log`` beside it.

``check_running`` answers "is any process of the service alive" (process
group members and cgroup members, zombies excluded). While the service runs
that costs O(1): its cgroup's ``populated`` flag, else its leader's
``/proc/<pid>/stat``; the scan of every process in ``/proc`` for its process
group runs only when neither shows a live process (:meth:`ProcPlugin.any_alive`).
It does NOT include the health check. SAFETY: a stop must never be skipped because a health check
failed while processes still run, or a relocated service would run twice.
The health check gates ``start`` (bounded by ``start_timeout``; a service
that does not become healthy in time is killed and the start fails) and is
available to callers as :meth:`ProcPlugin.healthy`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final, Literal

from agents import procutil, shspawn
from ha.config.resources import ResourceConfig
from ha.env import Env

DEFAULT_STOP_TIMEOUT: Final = 10.0
LAUNCHER: Final = Path(__file__).with_name("launcher.py")


@dataclass(slots=True)
class ProcState:
    """What we remember about a started service (the state file)."""

    pid: int
    pgid: int
    starttime: int
    boot_id: str
    cgroup: str | None
    cmd: str
    started_at: float


class ProcConfigError(ValueError):
    """A proc property is malformed; the start is refused with this message."""


def parse_env(value: str | None) -> dict[str, str]:
    try:
        return procutil.parse_assignments(value, "env", "KEY=VALUE")
    except ValueError as e:
        raise ProcConfigError(str(e)) from None


def parse_tcp(value: str) -> tuple[str, int]:
    host, sep, port = value.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ProcConfigError(f"property 'check_tcp': '{value}' is not host:port")
    return host, int(port)


def parse_seconds(value: str | None, key: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        v = float(value)
    except ValueError:
        raise ProcConfigError(f"property '{key}': '{value}' is not a number of seconds") from None
    if not math.isfinite(v) or v < 0:
        raise ProcConfigError(f"property '{key}': must be >= 0")
    return v


class ProcPlugin:
    """:class:`ha.env.ResourcePlugin` for ``proc:<name>`` services."""

    type_name = "proc"
    cgroup_prefix = ""  # of the service's cgroup name below the node's (cgroup_path)
    # check_running reads two small files and never blocks: the LRM may ask it on its own
    # thread for a re-check (actors/lrm.py PacedLRM._probe_rechecks)
    quick_check = True
    # the service starts with room for this many file descriptors (0: the kernel's default, 64);
    # see agents/shspawn.py "The file table"
    fd_table = 0

    def __init__(
        self,
        state_dir: str | Path,
        *,
        cgroup_base: str | Path | Literal["auto"] | None = "auto",
        start_timeout: float = 30.0,
        settle: float = 0.2,
        kill_wait: float = 5.0,
        default_stop_timeout: float = DEFAULT_STOP_TIMEOUT,
    ) -> None:
        """``cgroup_base``: "auto" = ``<cgroup2 mount>/pyha``; None = process groups only.

        ``settle``: after a start without health check, the service must still be
        alive this long (catches commands that fail at once).
        ``kill_wait``: how long to wait for processes to vanish after SIGKILL.
        """
        self.state_dir = Path(state_dir).absolute()
        self.cgroup_base = procutil.resolve_cgroup_base(cgroup_base)
        self.start_timeout = start_timeout
        self.settle = settle
        self.kill_wait = kill_wait
        self.default_stop_timeout = default_stop_timeout
        self.boot_id = procutil.read_boot_id()
        self._cgroup_warned = False

    # -- paths and state -------------------------------------------------------------------

    def _dir(self, node: str) -> Path:
        return self.state_dir / node / self.type_name

    def state_path(self, node: str, name: str) -> Path:
        return self._dir(node) / f"{name}.json"

    def log_path(self, node: str, name: str) -> Path:
        return self._dir(node) / f"{name}.log"

    def cgroup_path(self, node: str, name: str) -> Path | None:
        # guests are "<type>:<name>", as ocf's "ocf:<name>" (proc names cannot contain ':')
        return None if self.cgroup_base is None else self.cgroup_base / node / f"{self.cgroup_prefix}{name}"

    def load_state(self, node: str, name: str) -> ProcState | None:
        try:
            d = json.loads(self.state_path(node, name).read_bytes())
            return ProcState(**d)
        except FileNotFoundError:
            return None
        except (ValueError, TypeError, OSError):
            return None  # unreadable: written by rename, so only after a host crash

    def current(self, node: str, name: str) -> ProcState | None:
        """The state file, or a service found in its cgroup without one.

        SAFETY: an LRM that died between launching a service and writing its
        state file leaves an untracked process; its cgroup still names it, so
        it is adopted here (counted as running, stopped by shutdown) instead of
        being started a second time.
        """
        st = self.load_state(node, name)
        if st is not None:
            return st
        cg = self.cgroup_path(node, name)
        if cg is None:
            return None
        for pid in procutil.cgroup_procs(cg):
            ps = procutil.read_stat(pid)
            if ps is None or not ps.alive:
                continue
            leader = procutil.read_stat(ps.pgrp)
            start = leader.starttime if leader is not None else -1
            return ProcState(pid, ps.pgrp, start, self.boot_id, str(cg), "(adopted from cgroup)", 0.0)
        return None

    def _save_state(self, node: str, name: str, st: ProcState) -> None:
        path = self.state_path(node, name)
        tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(asdict(st), f)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)

    def _forget(self, node: str, name: str, st: ProcState | None) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.state_path(node, name).unlink()
        if st is not None and st.cgroup:
            procutil.remove_cgroup(Path(st.cgroup))

    def live_pids(self, st: ProcState) -> list[int]:
        """Alive processes of the service: its process group plus its cgroup."""
        if st.boot_id != self.boot_id:
            return []  # started before a reboot: long gone
        pids = set(procutil.pgroup_members(st.pgid))
        leader = procutil.read_stat(st.pgid)
        if leader is not None and leader.pgrp == st.pgid and leader.starttime != st.starttime:
            # SAFETY: the pid was reused by an unrelated group leader, which is only
            # possible once every process of our group is gone: do not claim (or kill) it.
            pids = set()
        if st.cgroup:
            pids.update(procutil.cgroup_procs(Path(st.cgroup)))
        return sorted(p for p in pids if procutil.pid_alive(p))

    # -- the plugin protocol ---------------------------------------------------------------------

    def any_alive(self, st: ProcState) -> bool:
        """Is any process of the service alive? O(1) while it runs; a /proc scan only when in doubt.

        1. Its cgroup is populated (``cgroup.events``: a live process in it or below).
        2. Its leader (pid = pgid, same start time) is alive.
        Either is proof that the service runs. Only when neither holds (the service
        died, or there is no cgroup and the leader exited) does the full
        :meth:`live_pids` scan of the process group run. SAFETY: so "not running" is
        always the answer of the full scan: a child that outlived the leader, or
        left the cgroup, still counts (a relocated service must never run twice).
        """
        if st.boot_id != self.boot_id:
            return False  # started before a reboot: long gone
        if st.cgroup and procutil.cgroup_populated(Path(st.cgroup)):
            return True
        leader = procutil.read_stat(st.pgid)
        if (
            leader is not None
            and leader.alive
            and leader.pgrp == st.pgid
            and leader.starttime == st.starttime
        ):
            return True
        return bool(self.live_pids(st))

    def check_running(self, env: Env, sid: str, conf: ResourceConfig) -> bool:
        st = self.current(env.nodename(), conf.name)
        return st is not None and self.any_alive(st)

    def _running_or_forgotten(self, node: str, name: str) -> bool:
        """True when the service's recorded process still runs; a dead record is forgotten."""
        old = self.current(node, name)
        if old is None:
            return False
        if self.any_alive(old):
            return True
        self._forget(node, name, old)
        return False

    def start(self, env: Env, sid: str, conf: ResourceConfig) -> None:
        node, name = env.nodename(), conf.name
        if self._running_or_forgotten(node, name):
            return  # already running: nothing to do
        try:
            cmd = conf.extra.get("cmd", "").strip()
            if not cmd:
                raise ProcConfigError("property 'cmd' is empty")
            extra_env = parse_env(conf.extra.get("env"))
            tcp = parse_tcp(conf.extra["check_tcp"]) if conf.extra.get("check_tcp") else None
            cwd = conf.extra.get("cwd") or "/"
        except ProcConfigError as e:
            env.log("err", f"service {sid}: {e}")
            return

        self._dir(node).mkdir(parents=True, exist_ok=True)
        st = self._launch(env, sid, node, name, ["/bin/sh", "-c", cmd], cwd, extra_env, cmd)
        if st is not None:
            self._await_ready(env, sid, conf, st, tcp, cwd, extra_env)

    def _launch(
        self, env: Env, sid: str, node: str, name: str, argv: list[str], cwd: str, extra_env: dict[str, str],
        shown: str,
    ) -> ProcState | None:  # fmt: skip
        """Start ARGV through the launcher in the service's own cgroup; its recorded state, or None
        (logged) when it did not start. ``shown`` is the command line the state records."""
        cgroup = self._make_cgroup(env, node, name)
        cg_str = str(cgroup) if cgroup is not None else None
        spec: dict[str, Any] = {
            "argv": argv,
            "cwd": cwd,
            "env": procutil.service_env(env, sid, node, extra_env),
            "cgroup": cg_str,
            "log": str(self.log_path(node, name)),
        }
        if self.fd_table:
            spec["fd_table"] = self.fd_table
        try:
            out = self._spawn(spec)
        except (subprocess.TimeoutExpired, ValueError, OSError) as e:
            env.log("err", f"service {sid}: launcher failed: {e}")
            self._drop_cgroup(cgroup)
            return None
        if "pid" not in out:
            env.log("err", f"service {sid}: cannot start: {out.get('error')}")
            self._drop_cgroup(cgroup)
            return None
        pid = int(out["pid"])
        st = ProcState(pid, pid, int(out["starttime"]), self.boot_id, cg_str, shown, time.time())
        self._save_state(node, name, st)
        return st

    def _spawn(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Start the service detached: ``{"pid", "starttime"}`` or ``{"error"}``.

        Through the shell (``agents/shspawn.py``) where it can: about 2 ms of CPU a start
        against about 35 ms for the Python launcher (``agents/launcher.py``, the fallback).
        A failover starts every service of the lost node at once on the others (issue #15:
        100 of them at 20 nodes, on two cores, 3.5 s of CPU in launchers alone).
        """
        if shspawn.available():
            return shspawn.spawn(spec)
        return self._spawn_launcher(spec)

    def _spawn_launcher(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Run the launcher (``agents/launcher.py``): ``{"pid", "starttime"}`` or ``{"error"}``."""
        res = subprocess.run(
            [sys.executable, "-I", "-S", str(LAUNCHER), json.dumps(spec)],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        out = json.loads(res.stdout or "{}")
        if not isinstance(out, dict):
            raise ValueError(f"launcher said {res.stdout!r}")
        if "pid" not in out and not out.get("error"):
            out["error"] = res.stderr.strip()
        return out

    def _make_cgroup(self, env: Env, node: str, name: str) -> Path | None:
        cg = self.cgroup_path(node, name)
        if cg is None:
            return None
        try:
            cg.mkdir(parents=True, exist_ok=True)
            if procutil.is_cgroup_dir(cg) and os.access(cg / "cgroup.procs", os.W_OK):
                return cg
            with contextlib.suppress(OSError):
                cg.rmdir()
            reason = "not a cgroup v2 directory"
        except OSError as e:
            reason = str(e)
        if not self._cgroup_warned:
            self._cgroup_warned = True
            env.log("warning", f"cgroup {cg} not usable ({reason}); using process groups only")
        return None

    @staticmethod
    def _drop_cgroup(cg: Path | None) -> None:
        if cg is not None:
            procutil.remove_cgroup(cg)

    def _await_ready(
        self,
        env: Env,
        sid: str,
        conf: ResourceConfig,
        st: ProcState,
        tcp: tuple[str, int] | None,
        cwd: str,
        extra_env: dict[str, str],
    ) -> None:
        check_cmd = conf.extra.get("check_cmd") or None
        node = env.nodename()
        if tcp is None and check_cmd is None:
            deadline = time.monotonic() + self.settle
            while time.monotonic() < deadline:
                if not self.any_alive(st):
                    break
                time.sleep(0.02)
            if self.any_alive(st):
                return
            env.log("err", f"service {sid} exited right after start{self._log_tail(node, conf.name)}")
            self._forget(node, conf.name, st)
            return

        deadline = time.monotonic() + self.start_timeout
        pause = 0.02
        while True:
            if not self.any_alive(st):
                env.log("err", f"service {sid} exited during start{self._log_tail(node, conf.name)}")
                self._forget(node, conf.name, st)
                return
            left = deadline - time.monotonic()
            if self._health(sid, node, tcp, check_cmd, cwd, extra_env, max(0.1, min(left, 5.0))):
                return
            if left <= 0:
                break
            time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(pause * 2, 0.25)
        env.log("err", f"service {sid} not healthy within {self.start_timeout:g}s, stopping it")
        self._terminate(env, sid, node, conf.name, st, 0)

    def _health(
        self,
        sid: str,
        node: str,
        tcp: tuple[str, int] | None,
        check_cmd: str | None,
        cwd: str,
        extra_env: dict[str, str],
        timeout: float,
    ) -> bool:
        if tcp is not None:
            try:
                with socket.create_connection(tcp, timeout=min(timeout, 1.0)):
                    pass
            except OSError:
                return False
        if check_cmd is not None:
            env = procutil.service_env(None, sid, node, extra_env)
            rc = procutil.run_bounded(["/bin/sh", "-c", check_cmd], timeout, env=env, cwd=cwd)
            if rc != 0:
                return False
        return True

    def healthy(self, env: Env, sid: str, conf: ResourceConfig) -> bool:
        """Running and, if a health check is configured, passing it (for monitors)."""
        if not self.check_running(env, sid, conf):
            return False
        try:
            tcp = parse_tcp(conf.extra["check_tcp"]) if conf.extra.get("check_tcp") else None
            extra_env = parse_env(conf.extra.get("env"))
        except ProcConfigError:
            return False
        cwd = conf.extra.get("cwd") or "/"
        return self._health(
            sid, env.nodename(), tcp, conf.extra.get("check_cmd") or None, cwd, extra_env, 5.0
        )

    def _log_tail(self, node: str, name: str, limit: int = 300) -> str:
        try:
            with open(self.log_path(node, name), "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - limit))
                tail = f.read().decode(errors="replace").strip()
        except OSError:
            return ""
        return f": {tail.splitlines()[-1]}" if tail else ""

    def _grace(self, env: Env, sid: str, conf: ResourceConfig, timeout: int | None) -> float:
        """Seconds a stop waits after SIGTERM: the command's timeout, else the service's
        ``stop_timeout``, else the default (a bad ``stop_timeout`` is logged)."""
        if timeout is not None:
            return float(timeout)
        try:
            grace = parse_seconds(conf.extra.get("stop_timeout"), "stop_timeout")
        except ProcConfigError as e:
            env.log("warning", f"service {sid}: {e}; using {self.default_stop_timeout:g}s")
            grace = None
        return self.default_stop_timeout if grace is None else grace

    def shutdown(self, env: Env, sid: str, conf: ResourceConfig, timeout: int | None) -> None:
        node, name = env.nodename(), conf.name
        st = self.current(node, name)
        if st is None:
            return
        grace = self._grace(env, sid, conf, timeout)
        self._terminate(env, sid, node, name, st, grace)

    def _signal(self, st: ProcState, sig: int) -> None:
        pids = self.live_pids(st)
        if not pids:
            return
        stats = [procutil.read_stat(p) for p in pids]
        if any(ps is not None and ps.pgrp == st.pgid for ps in stats):
            procutil.kill_group(st.pgid, sig)  # whole group at once, incl. children forked meanwhile
        for p in pids:  # members that left the process group (setsid) but not the cgroup
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(p, sig)

    def _terminate(self, env: Env, sid: str, node: str, name: str, st: ProcState, grace: float) -> None:
        """SIGTERM, wait ``grace`` s, then SIGKILL (cgroup.kill); forget the service once gone."""
        if grace > 0 and self.any_alive(st):
            self._signal(st, signal.SIGTERM)
            if procutil.poll_until(lambda: not self.any_alive(st), grace):
                self._forget(node, name, st)
                return
            env.log("warning", f"service {sid} still running {grace:g}s after SIGTERM, killing it")
        if st.cgroup:
            procutil.cgroup_kill(Path(st.cgroup))
        self._signal(st, signal.SIGKILL)
        if procutil.poll_until(lambda: not self.any_alive(st), self.kill_wait):
            # Killed processes are re-parented to init, which reaps them (late, if PID 1 is lazy);
            # until then they are zombies, which we do not count as running.
            self._forget(node, name, st)
            return
        env.log("err", f"service {sid}: processes {self.live_pids(st)} survive SIGKILL")

    def migrate(self, env: Env, sid: str, conf: ResourceConfig, target: str, online: bool) -> bool:
        """No live migration for processes: stop here (relocate); the caller moves the location."""
        if online:
            env.log("info", f"service {sid}: proc services cannot migrate live, relocating instead")
        if self.check_running(env, sid, conf):
            env.log("info", f"stopping service {sid} (relocate to node '{target}')")
            self.shutdown(env, sid, conf, None)
        return not self.check_running(env, sid, conf)

    def remove_locks(self, env: Env, sid: str, locks: list[str]) -> str | None:
        return None  # proc services have no guest locks
