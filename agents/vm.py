"""The ``vm`` resource type: a QEMU virtual machine (issue #12; see docs/AGENTS.md).

resources.cfg properties (all optional):

``memory``        guest RAM in MiB (default 256)
``cores``         virtual CPUs (default 1)
``kernel``        a kernel image to boot directly (``-kernel``)
``initrd``        its initramfs (``-initrd``; only with ``kernel``)
``append``        its command line (``-append``; default: serial console, quiet)
``disk``          a disk image (virtio; ``.qcow2`` is qcow2, anything else raw);
                  without ``kernel`` the guest boots from it (firmware)
``health``        ``guest``: the guest answers ``ping NONCE`` on the virtio-serial port
                  ``org.pyha.health``; ``none``: QMP ``query-status`` alone.
                  Default: ``guest`` for the built-in guest, ``none`` for your own
``stop_timeout``  seconds from the ACPI power-down request to the kill (default 45)

Without ``kernel`` and ``disk`` the service boots the project's default guest
(``agents/guestimage.py``: the host's Debian kernel and a busybox initramfs,
built offline and cached), whose health check reports the guest's boot id.

Each VM is one ``qemu-system-x86_64`` process, started exactly like a
``proc`` service (:class:`agents.proc.ProcPlugin`: ``agents/launcher.py``,
its own session and process group, the cgroup ``<cgroup_base>/<node>/vm:<name>``
below the node's, so fencing the node kills its guests; state file
``<state_dir>/<node>/vm/<name>.json``, console and QEMU messages in
``<name>.log`` beside it). It is controlled over QMP with the QEMU project's
``qemu.qmp`` client (a unix socket ``<name>.qmp``; the health port is
``<name>.health``).

Accelerator: TCG unless ``PYHA_VM_ACCEL=kvm`` is in ha-node's environment
(``/dev/kvm`` exists on the development machines but hangs nested, so KVM is
never picked on its own).

* ``check_running``: some process of the VM is alive (as for ``proc``). A paused
  or hung guest is still running. SAFETY: a stop must never be skipped while
  QEMU runs, or a relocated VM would run twice.
* ``start``: launch QEMU, then wait (``start_timeout``, 45 s) until QMP says
  ``running`` and the health check answers; else kill it (start failed).
* ``shutdown(timeout)``: the reference's stop (BEHAVIOUR.md §3.3.3): ACPI
  power-down (QMP ``system_powerdown``), wait up to ``timeout`` (the request's,
  else ``stop_timeout``, else 45 s; 0 = hard stop), then QMP ``quit`` and the
  ``proc`` kill (``cgroup.kill``, SIGKILL of the group).
* ``migrate`` (online): a QEMU live migration to the target node
  (:meth:`VmPlugin.migrate_live`, the QMP driver in ``agents/vmqmp.py``);
  the guest keeps running (same boot id, its uptime goes on). A migration that
  fails leaves the guest running here. ``relocate`` (and ``migrate`` without a
  way to reach the target) stops it here; the target boots it again.
* :meth:`VmPlugin.status`: QMP ``query-status`` plus the guest's answer (boot id,
  uptime); :meth:`VmPlugin.healthy` for monitors.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from qemu.qmp import QMPError

from agents import procutil, vmqmp
from agents.guestimage import HEALTH_PORT, QEMU, VM_APPEND, GuestError, default_vm_guest
from agents.proc import ProcState
from agents.vmqmp import GuestAnswer, Peer, ping_guest, qmp
from agents.vmsource import SourceSide
from agents.vmspec import (
    DEFAULT_CORES,
    DEFAULT_MEMORY_MB,
    HEALTH_CHOICES,
    VmConfigError,
    VmSpec,
    check_files,
    parse_spec,
    vm_uint,
)
from ha.config.resources import ResourceConfig
from ha.env import Env

# The reference's VM shutdown waits 60 s (BEHAVIOUR.md §3.3.3); ours stays below the node's 60 s
# command timeout so that a guest ignoring the power button is killed by us, not abandoned as hung.
DEFAULT_VM_STOP_TIMEOUT: Final = 45.0
DEFAULT_VM_START_TIMEOUT: Final = 45.0
_SUN_PATH_MAX: Final = 100  # sockaddr_un.sun_path is 108 bytes on Linux; keep a margin

# qemu.qmp logs every refused connection at ERROR (each poll while QEMU boots); what matters is
# reported through env.log by this agent instead.
logging.getLogger("qemu.qmp").setLevel(logging.CRITICAL)


@dataclass(frozen=True, slots=True)
class VmStatus:
    """What :meth:`VmPlugin.status` found."""

    running: bool  # some QEMU process of the VM is alive (check_running)
    qmp_status: str | None  # QMP query-status "status" ("running", "paused", ...); None: no answer
    guest: GuestAnswer | None  # the health check's answer; None: no answer or no check

    @property
    def healthy(self) -> bool:
        return self.running and self.qmp_status == "running"


def kvm_requested() -> bool:
    return os.environ.get("PYHA_VM_ACCEL", "tcg").strip().lower() == "kvm"


# -- the plugin ------------------------------------------------------------------------------------


class VmPlugin(SourceSide):
    """:class:`ha.env.ResourcePlugin` for ``vm:<vmid>`` services (processes handled as ``proc`` does)."""

    type_name = "vm"
    cgroup_prefix = "vm:"
    quick_check = False  # its check asks QEMU over QMP: on a worker
    # a running QEMU holds about 75 descriptors (70 eventfds of virtio-serial's queues, created when
    # the guest's driver starts them, at boot or at the ``cont`` after a live migration): grown from
    # 64 by the kernel at that ``cont``, the table cost QEMU 10-17 ms (agents/shspawn.py). 1024
    # leaves room for big guests (virtio queues per vCPU, a disk's, a NIC's) at 8 KiB a QEMU, and
    # stays within the usual RLIMIT_NOFILE soft limit (1024: descriptor 1023 is allowed)
    fd_table = 1024

    def __init__(
        self,
        state_dir: str | Path,
        *,
        cgroup_base: str | Path | Literal["auto"] | None = "auto",
        start_timeout: float = DEFAULT_VM_START_TIMEOUT,
        kill_wait: float = 5.0,
        default_stop_timeout: float = DEFAULT_VM_STOP_TIMEOUT,
        guest_cache: Path | None = None,
        migrate_timeout: float = vmqmp.DEFAULT_MIGRATE_TIMEOUT,
        incoming_deadline: float = vmqmp.INCOMING_DEADLINE,
    ) -> None:
        super().__init__(
            state_dir,
            cgroup_base=cgroup_base,
            start_timeout=start_timeout,
            kill_wait=kill_wait,
            default_stop_timeout=default_stop_timeout,
        )
        self.guest_cache = guest_cache
        self._guest: tuple[Path, Path] | None = None
        self.migrate_timeout = migrate_timeout
        self.incoming_deadline = incoming_deadline
        # how this node reaches the target of a live migration (the live runtime sets it); None: relocate
        self.peer: Peer | None = None
        # (node, name) -> set once the QEMU of a VM that migrated away from here is gone (_let_go)
        self._leaving: dict[tuple[str, str], threading.Event] = {}
        # the node's standby keeper (agents/vmstandby.py) wants to hear when a standby may be due here
        self.standby_poke: Callable[[], None] | None = None
        # listen, resume, abort, standbys and the reaper of one node's incoming QEMUs; the starts
        self._incoming_lock = threading.Lock()

    # -- paths ---------------------------------------------------------------------------------------

    def socket_dir(self, node: str) -> Path:
        """Where the VM's sockets live: its state folder, or a short per-folder one under the temp dir.

        A unix socket path must fit in ``sun_path``; deep state folders (tests) do not.
        """
        d = self._dir(node)
        if len(str(d)) + 32 <= _SUN_PATH_MAX:
            return d
        digest = hashlib.sha256(str(d).encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / "pyha-vm" / digest

    def qmp_path(self, node: str, name: str) -> Path:
        return self.socket_dir(node) / f"{name}.qmp"

    def health_path(self, node: str, name: str) -> Path:
        return self.socket_dir(node) / f"{name}.health"

    def _remove_sockets(self, node: str, name: str) -> None:
        for p in (self.qmp_path(node, name), self.health_path(node, name)):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()

    def _forget(self, node: str, name: str, st: ProcState | None) -> None:
        super()._forget(node, name, st)
        self._remove_sockets(node, name)

    # -- the command line ----------------------------------------------------------------------------

    def command(self, sid: str, node: str, name: str, spec: VmSpec) -> list[str]:
        """The QEMU command line of a VM."""
        kvm = kvm_requested()
        qemu = shutil.which(QEMU)  # the launcher execs without a PATH search
        if qemu is None:
            raise GuestError(f"{QEMU} not found (apt-get install qemu-system-x86)")
        argv = [
            qemu,
            "-name", f"{sid},debug-threads=on",
            "-accel", "kvm" if kvm else "tcg",
            "-machine", "pc",
            "-cpu", "host" if kvm else "max",
            "-smp", str(spec.cores),
            "-m", str(spec.memory_mb),
            "-nodefaults",
            "-no-user-config",
            "-display", "none",
            "-serial", "stdio",  # the guest's console -> the service log
            "-monitor", "none",
            "-nic", "none",
            "-qmp", f"unix:{self.qmp_path(node, name)},server=on,wait=off",
            "-device", "virtio-serial-pci,id=vser0",
            "-chardev", f"socket,id=health,path={self.health_path(node, name)},server=on,wait=off",
            "-device", f"virtserialport,bus=vser0.0,chardev=health,name={HEALTH_PORT}",
        ]  # fmt: skip
        kernel, initrd, append = spec.kernel, spec.initrd, spec.append
        if spec.default_guest:
            k, i = self._default_guest()
            kernel, initrd, append = str(k), str(i), VM_APPEND
        if kernel is not None:
            argv += ["-kernel", kernel, "-append", append or VM_APPEND]
            if initrd is not None:
                argv += ["-initrd", initrd]
        if spec.disk is not None:
            fmt = "qcow2" if spec.disk.endswith(".qcow2") else "raw"
            argv += ["-drive", f"file={spec.disk},if=virtio,format={fmt}"]
        return argv

    def _default_guest(self) -> tuple[Path, Path]:
        """The default guest's (kernel, initrd), built once; looked up again only if they vanished.

        Checking the host's packages and the image's cache key reads a few MB (40-60 ms): a
        live migration's target pays it before its QEMU can listen (issue #12)."""
        known = self._guest
        if known is None or not (known[0].exists() and known[1].exists()):
            known = self._guest = default_vm_guest(self.guest_cache)
        return known

    def warm(self, conf: ResourceConfig) -> None:
        """Look up (or build) the default guest now if ``conf`` boots it (never raises).

        A live migration's target needs it at once, before its QEMU can listen; the
        live runtime calls this in the background when the node starts
        (actors/peer.py ``VmIncoming.warm_up``)."""
        try:
            if parse_spec(conf.extra).default_guest:
                self._default_guest()
        except (VmConfigError, GuestError, OSError):
            pass  # a start or listen reports it

    # -- the plugin protocol -------------------------------------------------------------------------

    def check_running(self, env: Env, sid: str, conf: ResourceConfig) -> bool:
        # SAFETY: an incoming QEMU that was never resumed (a migration's or a standby) is not the
        # service (see _drop_incoming): "not running" makes a start kill it and boot the guest afresh
        # instead of adopting it, and a standby never counts as a copy of the guest on this node
        if self.incoming_path(env.nodename(), conf.name).exists():
            return False
        return super().check_running(env, sid, conf)

    def _argv(self, sid: str, node: str, name: str, conf: ResourceConfig) -> list[str]:
        """The VM's QEMU command line from ``conf`` (checked; no side effect)."""
        spec = parse_spec(conf.extra)
        check_files(spec)
        return self.command(sid, node, name, spec)

    def _prepare(self, sid: str, node: str, name: str, conf: ResourceConfig) -> tuple[VmSpec, list[str]]:
        spec = parse_spec(conf.extra)
        check_files(spec)
        self._dir(node).mkdir(parents=True, exist_ok=True)
        self.socket_dir(node).mkdir(parents=True, exist_ok=True)
        self._remove_sockets(node, name)  # left by a QEMU that was killed
        return spec, self.command(sid, node, name, spec)

    def start(self, env: Env, sid: str, conf: ResourceConfig) -> None:
        node, name = env.nodename(), conf.name
        self._await_leaving(node, name)
        # one step under the lock, from the kill of an incoming or standby QEMU to the launch: a
        # standby launched in between would otherwise be taken for the service ("already running")
        with self._incoming_lock:
            self._drop_incoming(env, sid, node, name)
            if self._running_or_forgotten(node, name):
                return  # already running: nothing to do
            try:
                spec, argv = self._prepare(sid, node, name, conf)
            except (VmConfigError, GuestError, OSError) as e:
                env.log("err", f"service {sid}: {e}")
                return
            st = self._launch(env, sid, node, name, argv, "/", {}, " ".join(argv))
        if st is None:
            return
        self._await_boot(env, sid, node, name, spec, st)

    def _await_boot(self, env: Env, sid: str, node: str, name: str, spec: VmSpec, st: ProcState) -> None:
        """Until QMP says running and the health check answers; kill QEMU when it does not in time."""
        deadline = time.monotonic() + self.start_timeout
        pause = 0.1
        while True:
            if not self.any_alive(st):
                env.log("err", f"service {sid}: QEMU exited during start{self._log_tail(node, name)}")
                self._forget(node, name, st)
                return
            left = deadline - time.monotonic()
            if self._probe(node, name, spec, max(0.2, min(left, 3.0))):
                return
            if left <= 0:
                break
            time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(pause * 2, 0.5)
        env.log("err", f"service {sid}: guest not up within {self.start_timeout:g}s, stopping it")
        self._terminate(env, sid, node, name, st, 0)

    def _qmp_status(self, node: str, name: str, timeout: float) -> str | None:
        """QMP ``query-status``: "running", "paused", ...; None when QEMU does not answer."""
        try:
            (ret,) = qmp(self.qmp_path(node, name), "query-status", timeout=timeout)
        except (OSError, QMPError, TimeoutError):
            return None
        return str(ret["status"]) if isinstance(ret, dict) and "status" in ret else None

    def _probe(self, node: str, name: str, spec: VmSpec, timeout: float) -> bool:
        if self._qmp_status(node, name, timeout) != "running":
            return False
        return spec.health != "guest" or ping_guest(self.health_path(node, name), timeout) is not None

    def status(self, env: Env, sid: str, conf: ResourceConfig, timeout: float = 3.0) -> VmStatus:
        """Is QEMU running, what QMP ``query-status`` says, the guest's health answer."""
        node, name = env.nodename(), conf.name
        if not self.check_running(env, sid, conf):
            return VmStatus(False, None, None)
        try:
            spec = parse_spec(conf.extra)
        except VmConfigError:
            spec = VmSpec(health="none")
        qmp_status = self._qmp_status(node, name, timeout)
        guest = ping_guest(self.health_path(node, name), timeout) if spec.health == "guest" else None
        return VmStatus(True, qmp_status, guest)

    def healthy(self, env: Env, sid: str, conf: ResourceConfig) -> bool:
        """Running, QMP ``running``, and (health ``guest``) the guest answering."""
        try:
            spec = parse_spec(conf.extra)
        except VmConfigError:
            return False
        st = self.status(env, sid, conf)
        return st.healthy and (spec.health != "guest" or st.guest is not None)

    def shutdown(self, env: Env, sid: str, conf: ResourceConfig, timeout: int | None) -> None:
        node, name = env.nodename(), conf.name
        st = self.current(node, name)
        if st is None:
            return
        grace = self._grace(env, sid, conf, timeout)
        if grace > 0 and self.any_alive(st):
            qmp_sock = self.qmp_path(node, name)
            try:
                qmp(qmp_sock, "system_powerdown", timeout=min(grace, 5.0))
                if procutil.poll_until(lambda: not self.any_alive(st), grace, cap=0.2):
                    self._forget(node, name, st)
                    return
                env.log("warning", f"service {sid}: guest still running {grace:g}s after ACPI power-down")
            except (OSError, QMPError, TimeoutError) as e:
                env.log("warning", f"service {sid}: QMP power-down failed ({e!r}), killing QEMU")
            with contextlib.suppress(OSError, QMPError, TimeoutError):
                qmp(qmp_sock, "quit", timeout=2.0)  # QEMU's own clean exit, before the signals
            if procutil.poll_until(lambda: not self.any_alive(st), 2.0, cap=0.1):
                self._forget(node, name, st)
                return
        self._terminate(env, sid, node, name, st, 0)  # cgroup.kill + SIGKILL of the group


__all__ = [
    "DEFAULT_CORES",
    "DEFAULT_MEMORY_MB",
    "HEALTH_CHOICES",
    "GuestAnswer",
    "VmConfigError",
    "VmPlugin",
    "VmSpec",
    "VmStatus",
    "check_files",
    "kvm_requested",
    "parse_spec",
    "ping_guest",
    "qmp",
    "vm_uint",
]
