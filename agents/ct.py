"""The ``ct`` resource type: a Linux container run by ``crun`` (issue #12; see docs/AGENTS.md).

resources.cfg properties (all optional):

``rootfs``        the container's root filesystem, a directory (mounted read-only);
                  default: the project's busybox tree (``agents/rootfs.py``, built offline)
``init``          the container's first process, a ``/bin/sh -c`` command line inside it;
                  default: ``/sbin/pyha-init`` (the built-in tree's health responder),
                  ``/sbin/init`` with your own ``rootfs``
``hostname``      its UTS host name (default ``ct<vmid>``)
``health``        ``guest``: the init answers ``ping NONCE`` on ``/run/pyha/ping`` (as
                  ``/sbin/pyha-init`` does); ``none``: ``crun state`` alone.
                  Default: ``guest`` for the built-in init, else ``none``
``stop_timeout``  seconds from SIGTERM of the container's init to the kill (default 45)

Each container has its own PID, mount, UTS, IPC and network namespaces (the
network one holds only ``lo``), a read-only root, tmpfs ``/tmp``, ``/run`` and
``/dev``, and the OCI runtime's default capability set (no
``CAP_SYS_ADMIN``). Its OCI bundle is ``<state_dir>/<node>/ct/<name>.bundle``
(``config.json``; the root is the rootfs directory itself) and crun's state
lives in ``<state_dir>/<node>/ct/crun`` (``crun --root``), one per node.

Processes: ``crun run`` (in the foreground: it stays the container's parent)
is started exactly like a ``proc`` service (:class:`agents.proc.ProcPlugin`:
``agents/launcher.py``, the cgroup ``<cgroup_base>/<node>/ct:<name>`` below
the node's, state file ``<state_dir>/<node>/ct/<name>.json``, the container's
output in ``<name>.log``). crun runs with ``--cgroup-manager=disabled``, so
the container stays in that cgroup: fencing the node (``cgroup.kill`` of its
cgroup) kills the container with it. A container therefore needs a writable
cgroup v2 (without one the start is refused: a container in its own session
would escape the process-group kill). On a hybrid cgroup host (v1
controllers plus ``/sys/fs/cgroup/unified``) crun refuses to start any
container; it is then run in a private mount namespace (``unshare``) where
``/sys/fs/cgroup`` is the v2 hierarchy (crun manages no cgroup anyway).

* ``check_running``: some process of the container (crun or anything inside)
  is alive, as for ``proc``. SAFETY: a stop is never skipped while one is.
* ``start``: ``crun run``, then wait (``start_timeout``, 30 s) until ``crun
  state`` says ``running`` and the health check answers; else kill it. Without
  a health check (``health none``) the container must also stay up for
  ``START_SETTLE`` s (supervisord's ``startsecs``): an init that exits at once
  fails the start instead of being reported started for a moment.
* ``shutdown(timeout)``: ``crun kill <id> SIGTERM``, wait up to ``timeout`` (the
  request's, else ``stop_timeout``, else 45 s; 0 = hard stop), then
  ``cgroup.kill`` and SIGKILL; ``crun delete --force`` of what crun remembers.
* ``migrate``: a relocation (BEHAVIOUR.md §3.3.3 and §9.6: a running container
  cannot migrate live): stop here, the target starts it from the same config.
* :meth:`CtPlugin.status`: ``crun state`` plus the health answer.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from agents import procutil
from agents.guestimage import GuestError
from agents.proc import ProcConfigError, ProcPlugin, ProcState
from agents.rootfs import HEALTH_DIR, INIT_PATH, default_ct_rootfs
from ha.config.resources import ResourceConfig
from ha.env import Env

CRUN: Final = "crun"
DEFAULT_CT_STOP_TIMEOUT: Final = 45.0  # below the node's 60 s command timeout, as for vm
DEFAULT_CT_START_TIMEOUT: Final = 30.0
START_SETTLE: Final = 0.5  # s a container without a health check must stay up to count as started
HEALTH_CHOICES: Final = ("guest", "none")
_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9\-]{0,61}[A-Za-z0-9])?$")


class CtConfigError(ProcConfigError):
    """A ct property is malformed; the start is refused with this message."""


@dataclass(frozen=True, slots=True)
class CtSpec:
    """What one container is made of (its resources.cfg properties, checked)."""

    rootfs: str | None = None
    init: str | None = None
    hostname: str | None = None
    health: str = "guest"


def parse_spec(props: Mapping[str, str]) -> CtSpec:
    """The container of a resource's extra properties; CtConfigError when malformed."""
    rootfs = (props.get("rootfs") or "").strip() or None
    if rootfs is not None and not os.path.isabs(rootfs):
        raise CtConfigError(f"property 'rootfs': '{rootfs}' is not an absolute path")
    init = (props.get("init") or "").strip() or None
    hostname = (props.get("hostname") or "").strip() or None
    if hostname is not None and not _HOSTNAME.match(hostname):
        raise CtConfigError(f"property 'hostname': '{hostname}' is not a host name")
    default_health = "guest" if init is None and rootfs is None else "none"
    health = (props.get("health") or "").strip() or default_health
    if health not in HEALTH_CHOICES:
        raise CtConfigError(f"property 'health': '{health}' is not one of {', '.join(HEALTH_CHOICES)}")
    return CtSpec(rootfs=rootfs, init=init, hostname=hostname, health=health)


def check_rootfs(path: str) -> None:
    """CtConfigError unless ``path`` is a directory with a ``/bin/sh`` (the init runs through it)."""
    if not os.path.isdir(path):
        raise CtConfigError(f"property 'rootfs': no directory '{path}' (on this node)")
    if not os.path.lexists(os.path.join(path, "bin", "sh")):
        raise CtConfigError(f"property 'rootfs': '{path}' has no /bin/sh")


@dataclass(frozen=True, slots=True)
class CtAnswer:
    """The built-in init's answer to a health check."""

    id: str  # drawn at the container's start
    pid: int  # the init's pid inside the container (1: its own PID namespace)
    hostname: str
    netdevs: str  # the network devices it sees, comma-separated


@dataclass(frozen=True, slots=True)
class CtStatus:
    """What :meth:`CtPlugin.status` found."""

    running: bool  # some process of the container is alive (check_running)
    crun_status: str | None  # ``crun state``: "running", "stopped", ...; None: unknown to crun
    answer: CtAnswer | None  # the health check's answer; None: no answer or no check

    @property
    def healthy(self) -> bool:
        return self.running and self.crun_status == "running"


def ping_container(io_dir: Path, timeout: float = 3.0) -> CtAnswer | None:
    """Ask the init listening on ``io_dir/ping`` (``ping NONCE``); its answer from ``io_dir/pong``.

    Opening the FIFO fails at once (ENXIO) while no reader waits on it: between
    two answers, or no init at all. Both are retried until ``timeout``; a ping
    lost to a concurrent one (the reader takes one line per open) is sent again.
    """
    nonce = secrets.token_hex(6)
    deadline = time.monotonic() + timeout
    sent_at = -1.0
    while time.monotonic() < deadline:
        if time.monotonic() - sent_at > 0.5:
            try:
                fd = os.open(io_dir / "ping", os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                time.sleep(0.01)  # no reader right now (ENXIO), or no FIFO
                continue
            try:
                os.write(fd, f"ping {nonce}\n".encode())
                sent_at = time.monotonic()
            except OSError:
                pass
            finally:
                os.close(fd)
        with contextlib.suppress(OSError, ValueError):
            parts = (io_dir / "pong").read_text().split()
            if len(parts) == 6 and parts[0] == "pong" and parts[1] == nonce:
                return CtAnswer(parts[2], int(parts[3]), parts[4], parts[5])
        time.sleep(0.005)
    return None


def _mount(destination: str, fstype: str, source: str, *options: str) -> dict[str, object]:
    return {"destination": destination, "type": fstype, "source": source, "options": list(options)}


def hybrid_cgroups() -> bool:
    """True on a hybrid host: ``/sys/fs/cgroup`` is not cgroup2 and its ``unified`` v2 has controllers."""
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        return False  # cgroup v2 only ("unified" mode): crun is happy
    try:
        return bool(Path("/sys/fs/cgroup/unified/cgroup.controllers").read_text().strip())
    except OSError:
        return False


# -- the plugin ------------------------------------------------------------------------------------


class CtPlugin(ProcPlugin):
    """:class:`ha.env.ResourcePlugin` for ``ct:<vmid>`` services (processes handled as ``proc`` does)."""

    type_name = "ct"
    cgroup_prefix = "ct:"

    def __init__(
        self,
        state_dir: str | Path,
        *,
        cgroup_base: str | Path | Literal["auto"] | None = "auto",
        start_timeout: float = DEFAULT_CT_START_TIMEOUT,
        kill_wait: float = 5.0,
        default_stop_timeout: float = DEFAULT_CT_STOP_TIMEOUT,
        rootfs_cache: Path | None = None,
    ) -> None:
        super().__init__(
            state_dir,
            cgroup_base=cgroup_base,
            start_timeout=start_timeout,
            kill_wait=kill_wait,
            default_stop_timeout=default_stop_timeout,
        )
        self.rootfs_cache = rootfs_cache

    # -- paths ---------------------------------------------------------------------------------------

    def crun_root(self, node: str) -> Path:
        return self._dir(node) / "crun"

    def bundle_dir(self, node: str, name: str) -> Path:
        return self._dir(node) / f"{name}.bundle"

    def io_dir(self, node: str, name: str) -> Path:
        """The host folder mounted at ``/run/pyha`` in the container (the health FIFO and answer)."""
        return self._dir(node) / f"{name}.io"

    @staticmethod
    def container_id(name: str) -> str:
        return f"ct{name}"

    # -- crun ----------------------------------------------------------------------------------------

    def _crun(self, node: str, *args: str, timeout: float = 10.0) -> subprocess.CompletedProcess[str] | None:
        crun = shutil.which(CRUN)
        if crun is None:
            return None
        try:
            return subprocess.run(
                [crun, "--root", str(self.crun_root(node)), *args],
                capture_output=True, text=True, timeout=timeout, check=False,
            )  # fmt: skip
        except (OSError, subprocess.SubprocessError):
            return None

    def crun_state(self, node: str, name: str) -> dict[str, object] | None:
        """``crun state`` of the container (``status``, ``pid``...), None when crun does not know it."""
        res = self._crun(node, "state", self.container_id(name), timeout=5.0)
        if res is None or res.returncode != 0:
            return None
        try:
            out = json.loads(res.stdout)
        except ValueError:
            return None
        return out if isinstance(out, dict) else None

    def _crun_delete(self, node: str, name: str) -> None:
        if (self.crun_root(node) / self.container_id(name)).exists():
            self._crun(node, "delete", "--force", self.container_id(name))

    def command(self, node: str, name: str) -> list[str]:
        """``crun run`` of the container, in a private mount namespace on a hybrid cgroup host."""
        crun = shutil.which(CRUN)  # the launcher execs without a PATH search
        if crun is None:
            raise GuestError(f"{CRUN} not found (apt-get install crun)")
        argv = [crun, "--root", str(self.crun_root(node)), "--cgroup-manager=disabled", "run",
                "--bundle", str(self.bundle_dir(node, name)), self.container_id(name)]  # fmt: skip
        if not hybrid_cgroups():
            return argv
        unshare, sh = shutil.which("unshare"), shutil.which("sh")
        if unshare is None or sh is None:
            raise GuestError("unshare not found (apt-get install util-linux)")
        script = 'mount --bind /sys/fs/cgroup/unified /sys/fs/cgroup && exec "$@"'
        return [unshare, "--mount", "--propagation", "private", sh, "-c", script, "pyha-ct", *argv]

    def oci_config(
        self, env: Env, sid: str, node: str, name: str, spec: CtSpec, rootfs: str
    ) -> dict[str, object]:
        """The bundle's ``config.json`` (OCI runtime spec 1.0)."""
        init = spec.init or (INIT_PATH if spec.rootfs is None else "/sbin/init")
        penv = procutil.service_env(env, sid, node, {})
        penv["PATH"] = procutil.DEFAULT_PATH
        penv["HOME"] = "/root"
        penv["container"] = "crun"
        caps = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
        mounts = [
            _mount("/proc", "proc", "proc"),
            _mount("/dev", "tmpfs", "tmpfs", "nosuid", "strictatime", "mode=755", "size=65536k"),
            _mount("/dev/pts", "devpts", "devpts", "nosuid", "noexec", "newinstance", "ptmxmode=0666",
                   "mode=0620"),
            _mount("/dev/shm", "tmpfs", "shm", "nosuid", "noexec", "nodev", "mode=1777", "size=65536k"),
            _mount("/dev/mqueue", "mqueue", "mqueue", "nosuid", "noexec", "nodev"),
            _mount("/sys", "sysfs", "sysfs", "nosuid", "noexec", "nodev", "ro"),
            _mount("/tmp", "tmpfs", "tmpfs", "nosuid", "nodev", "mode=1777"),
            _mount("/run", "tmpfs", "tmpfs", "nosuid", "nodev", "mode=755"),
        ]  # fmt: skip
        if spec.health == "guest":
            io = str(self.io_dir(node, name))
            mounts.append(_mount(HEALTH_DIR, "bind", io, "rbind", "rw", "nosuid", "nodev", "noexec"))
        return {
            "ociVersion": "1.0.0",
            "process": {
                "terminal": False,
                "user": {"uid": 0, "gid": 0},
                "args": [init] if spec.init is None else ["/bin/sh", "-c", init],
                "env": [f"{k}={v}" for k, v in penv.items()],
                "cwd": "/",
                "capabilities": {k: caps for k in ("bounding", "effective", "permitted", "ambient")},
                "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
                "noNewPrivileges": True,
            },
            "root": {"path": rootfs, "readonly": True},
            "hostname": spec.hostname or f"ct{name}",
            "mounts": mounts,
            "linux": {
                "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
                "maskedPaths": ["/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                                "/proc/timer_list", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
                "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
            },
        }  # fmt: skip

    def _prepare(self, env: Env, sid: str, node: str, name: str, spec: CtSpec) -> list[str]:
        """Bundle, health folder and crun's memory of an older run made ready; the launch command."""
        if self.cgroup_base is None:
            raise CtConfigError("containers need a writable cgroup v2 (none found)")
        if spec.rootfs is not None:
            check_rootfs(spec.rootfs)
            rootfs = spec.rootfs
        else:
            rootfs = str(default_ct_rootfs(self.rootfs_cache))
        argv = self.command(node, name)
        self._crun_delete(node, name)  # a container killed with its node is still in crun's state
        bundle, io = self.bundle_dir(node, name), self.io_dir(node, name)
        bundle.mkdir(parents=True, exist_ok=True)
        self.crun_root(node).mkdir(parents=True, exist_ok=True)
        config = json.dumps(self.oci_config(env, sid, node, name, spec, rootfs), indent=1)
        (bundle / "config.json").write_text(config)
        if spec.health == "guest":
            io.mkdir(exist_ok=True)
            os.chmod(io, 0o700)
            with contextlib.suppress(FileNotFoundError):
                (io / "pong").unlink()
            fifo = io / "ping"
            try:
                if not stat.S_ISFIFO(fifo.lstat().st_mode):
                    fifo.unlink()
                    os.mkfifo(fifo, 0o600)
            except FileNotFoundError:
                os.mkfifo(fifo, 0o600)
        return argv

    # -- the plugin protocol -------------------------------------------------------------------------

    def start(self, env: Env, sid: str, conf: ResourceConfig) -> None:
        node, name = env.nodename(), conf.name
        if self._running_or_forgotten(node, name):
            return  # already running: nothing to do
        try:
            spec = parse_spec(conf.extra)
            self._dir(node).mkdir(parents=True, exist_ok=True)
            argv = self._prepare(env, sid, node, name, spec)
        except (CtConfigError, GuestError, OSError) as e:
            env.log("err", f"service {sid}: {e}")
            return
        st = self._launch(env, sid, node, name, argv, "/", {}, " ".join(argv))
        if st is None:
            return
        if st.cgroup is None:
            env.log("err", f"service {sid}: no cgroup for the container, stopping it")
            self._terminate(env, sid, node, name, st, 0)
            return
        self._await_up(env, sid, node, name, spec, st)

    def _await_up(self, env: Env, sid: str, node: str, name: str, spec: CtSpec, st: ProcState) -> None:
        """Until crun says running and the health check answers; kill the container when not in time."""
        deadline = time.monotonic() + self.start_timeout
        pause = 0.02
        while True:
            if not self.any_alive(st):
                env.log("err", f"service {sid}: container exited during start{self._log_tail(node, name)}")
                self._forget(node, name, st)
                return
            left = deadline - time.monotonic()
            if self._probe(node, name, spec, max(0.2, min(left, 2.0))):
                if spec.health == "guest" or self._stays_up(st):
                    return
                continue  # it exited meanwhile: said above, on the next turn
            if left <= 0:
                break
            time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(pause * 2, 0.25)
        env.log("err", f"service {sid}: container not up within {self.start_timeout:g}s, stopping it")
        self._terminate(env, sid, node, name, st, 0)

    def _stays_up(self, st: ProcState) -> bool:
        """Still alive START_SETTLE s after crun first said running (health ``none``)."""
        until = time.monotonic() + START_SETTLE
        while time.monotonic() < until:
            if not self.any_alive(st):
                return False
            time.sleep(0.05)
        return self.any_alive(st)

    def _probe(self, node: str, name: str, spec: CtSpec, timeout: float) -> bool:
        state = self.crun_state(node, name)
        if state is None or state.get("status") != "running":
            return False
        return spec.health != "guest" or ping_container(self.io_dir(node, name), timeout) is not None

    def status(self, env: Env, sid: str, conf: ResourceConfig, timeout: float = 3.0) -> CtStatus:
        """Is the container running, what ``crun state`` says, the init's health answer."""
        node, name = env.nodename(), conf.name
        if not self.check_running(env, sid, conf):
            return CtStatus(False, None, None)
        try:
            spec = parse_spec(conf.extra)
        except CtConfigError:
            spec = CtSpec(health="none")
        state = self.crun_state(node, name)
        crun_status = str(state["status"]) if state is not None and "status" in state else None
        answer = ping_container(self.io_dir(node, name), timeout) if spec.health == "guest" else None
        return CtStatus(True, crun_status, answer)

    def healthy(self, env: Env, sid: str, conf: ResourceConfig) -> bool:
        """Running, crun ``running``, and (health ``guest``) the init answering."""
        try:
            spec = parse_spec(conf.extra)
        except CtConfigError:
            return False
        st = self.status(env, sid, conf)
        return st.healthy and (spec.health != "guest" or st.answer is not None)

    def shutdown(self, env: Env, sid: str, conf: ResourceConfig, timeout: int | None) -> None:
        node, name = env.nodename(), conf.name
        st = self.current(node, name)
        if st is None:
            return
        grace = self._grace(env, sid, conf, timeout)
        if grace > 0 and self.any_alive(st):
            res = self._crun(node, "kill", self.container_id(name), "TERM", timeout=5.0)
            if res is None or res.returncode != 0:
                # crun does not know it (its state is gone): SIGTERM the init ourselves
                self._signal_init(node, name, st)
            if procutil.poll_until(lambda: not self.any_alive(st), grace, cap=0.1):
                self._forget(node, name, st)
                return
            env.log("warning", f"service {sid}: container still running {grace:g}s after SIGTERM, killing it")
        self._terminate(env, sid, node, name, st, 0)  # cgroup.kill + SIGKILL of the group

    def _signal_init(self, node: str, name: str, st: ProcState) -> None:
        """SIGTERM to the processes of the cgroup that crun did not start itself (the container's)."""
        for pid in self.live_pids(st):
            if pid != st.pid:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGTERM)

    def _forget(self, node: str, name: str, st: ProcState | None) -> None:
        super()._forget(node, name, st)
        self._crun_delete(node, name)
        with contextlib.suppress(FileNotFoundError):
            (self.io_dir(node, name) / "pong").unlink()

    def migrate(self, env: Env, sid: str, conf: ResourceConfig, target: str, online: bool) -> bool:
        """Relocate (stop here; the target starts it from the same config): no live migration (§9.6)."""
        running = self.check_running(env, sid, conf)
        if online and running:
            env.log("warning", "unable to live migrate running container, fallback to relocate")
        if running:
            env.log("info", f"stopping service {sid} (relocate to node '{target}')")
            self.shutdown(env, sid, conf, None)
        return not self.check_running(env, sid, conf)
