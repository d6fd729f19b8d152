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
* ``migrate``: this slice relocates (stop here; the target starts it, a new
  boot). Live migration is not implemented yet.
* :meth:`VmPlugin.status`: QMP ``query-status`` plus the guest's answer (boot id,
  uptime); :meth:`VmPlugin.healthy` for monitors.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
import shutil
import socket
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from qemu.qmp import QMPClient, QMPError

from agents import procutil
from agents.guestimage import HEALTH_PORT, QEMU, VM_APPEND, GuestError, default_vm_guest
from agents.proc import ProcConfigError, ProcPlugin, ProcState
from ha.config.resources import ResourceConfig
from ha.env import Env

DEFAULT_MEMORY_MB: Final = 256
DEFAULT_CORES: Final = 1
# The reference's VM shutdown waits 60 s (BEHAVIOUR.md §3.3.3); ours stays below the node's 60 s
# command timeout so that a guest ignoring the power button is killed by us, not abandoned as hung.
DEFAULT_VM_STOP_TIMEOUT: Final = 45.0
DEFAULT_VM_START_TIMEOUT: Final = 45.0
HEALTH_CHOICES: Final = ("guest", "none")
_SUN_PATH_MAX: Final = 100  # sockaddr_un.sun_path is 108 bytes on Linux; keep a margin

# qemu.qmp logs every refused connection at ERROR (each poll while QEMU boots); what matters is
# reported through env.log by this agent instead.
logging.getLogger("qemu.qmp").setLevel(logging.CRITICAL)


class VmConfigError(ProcConfigError):
    """A vm property is malformed; the start is refused with this message."""


@dataclass(frozen=True, slots=True)
class VmSpec:
    """What one VM is made of (its resources.cfg properties, checked)."""

    memory_mb: int = DEFAULT_MEMORY_MB
    cores: int = DEFAULT_CORES
    kernel: str | None = None
    initrd: str | None = None
    append: str | None = None
    disk: str | None = None
    health: str = "guest"

    @property
    def default_guest(self) -> bool:
        return self.kernel is None and self.disk is None


def vm_uint(props: Mapping[str, str], key: str, low: int, high: int, default: int = 0) -> int:
    """An integer property in low..high (``default`` when absent); VmConfigError when not."""
    raw = (props.get(key) or "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise VmConfigError(f"property '{key}': '{raw}' is not an integer in {low}..{high}")
    return int(raw)


def _path(props: Mapping[str, str], key: str) -> str | None:
    raw = (props.get(key) or "").strip()
    if not raw:
        return None
    if not os.path.isabs(raw):
        raise VmConfigError(f"property '{key}': '{raw}' is not an absolute path")
    return raw


def parse_spec(props: Mapping[str, str]) -> VmSpec:
    """The VM of a resource's extra properties; VmConfigError when malformed."""
    kernel, initrd, disk = _path(props, "kernel"), _path(props, "initrd"), _path(props, "disk")
    append = (props.get("append") or "").strip() or None
    if kernel is None and (initrd is not None or append is not None):
        raise VmConfigError("properties 'initrd' and 'append' need 'kernel'")
    health = (props.get("health") or "").strip() or ("guest" if kernel is None and disk is None else "none")
    if health not in HEALTH_CHOICES:
        raise VmConfigError(f"property 'health': '{health}' is not one of {', '.join(HEALTH_CHOICES)}")
    return VmSpec(
        memory_mb=vm_uint(props, "memory", 16, 1 << 20, DEFAULT_MEMORY_MB),
        cores=vm_uint(props, "cores", 1, 256, DEFAULT_CORES),
        kernel=kernel,
        initrd=initrd,
        append=append,
        disk=disk,
        health=health,
    )


def check_files(spec: VmSpec) -> None:
    """VmConfigError unless the spec's kernel, initrd and disk are readable files here."""
    for key in ("kernel", "initrd", "disk"):
        path = getattr(spec, key)
        if path is not None and not (os.path.isfile(path) and os.access(path, os.R_OK)):
            raise VmConfigError(f"property '{key}': no readable file '{path}' (on this node)")


@dataclass(frozen=True, slots=True)
class GuestAnswer:
    """The default guest's answer to a health check."""

    boot_id: str
    uptime: float


@dataclass(frozen=True, slots=True)
class VmStatus:
    """What :meth:`VmPlugin.status` found."""

    running: bool  # some QEMU process of the VM is alive (check_running)
    qmp_status: str | None  # QMP query-status "status" ("running", "paused", ...); None: no answer
    guest: GuestAnswer | None  # the health check's answer; None: no answer or no check

    @property
    def healthy(self) -> bool:
        return self.running and self.qmp_status == "running"


# -- QMP and the health port ----------------------------------------------------------------------


async def _qmp_async(path: Path, commands: tuple[str, ...], timeout: float) -> list[object]:
    client = QMPClient("pyha-vm")
    try:
        await asyncio.wait_for(client.connect(str(path)), timeout)
        out = []
        for cmd in commands:
            out.append(await asyncio.wait_for(client.execute(cmd), timeout))
        return out
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.disconnect(), timeout)


def qmp(path: Path, *commands: str, timeout: float = 5.0) -> list[object]:
    """Run QMP ``commands`` (no arguments) one after the other; their return values.

    Raises OSError, QMPError or TimeoutError when QEMU does not answer (each step
    bounded by ``timeout``). Blocking: it runs its own event loop (agents run in
    worker threads without one).
    """
    return asyncio.run(_qmp_async(path, commands, timeout))


def ping_guest(path: Path, timeout: float = 3.0) -> GuestAnswer | None:
    """The default guest's answer on its health port (``ping NONCE`` -> ``pong NONCE BOOT_ID UPTIME``)."""
    nonce = secrets.token_hex(6)
    deadline = time.monotonic() + timeout
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(path))
            s.sendall(f"ping {nonce}\n".encode())
            buf = b""
            while True:
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    parts = line.decode(errors="replace").split()
                    # an answer meant for an earlier client that hung up comes first: skip it
                    if len(parts) == 4 and parts[0] == "pong" and parts[1] == nonce:
                        return GuestAnswer(parts[2], float(parts[3]))
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                s.settimeout(left)
                chunk = s.recv(4096)
                if not chunk:
                    return None
                buf += chunk
    except (OSError, ValueError):
        return None


def kvm_requested() -> bool:
    return os.environ.get("PYHA_VM_ACCEL", "tcg").strip().lower() == "kvm"


# -- the plugin ------------------------------------------------------------------------------------


class VmPlugin(ProcPlugin):
    """:class:`ha.env.ResourcePlugin` for ``vm:<vmid>`` services (processes handled as ``proc`` does)."""

    type_name = "vm"
    cgroup_prefix = "vm:"

    def __init__(
        self,
        state_dir: str | Path,
        *,
        cgroup_base: str | Path | Literal["auto"] | None = "auto",
        start_timeout: float = DEFAULT_VM_START_TIMEOUT,
        kill_wait: float = 5.0,
        default_stop_timeout: float = DEFAULT_VM_STOP_TIMEOUT,
        guest_cache: Path | None = None,
    ) -> None:
        super().__init__(
            state_dir,
            cgroup_base=cgroup_base,
            start_timeout=start_timeout,
            kill_wait=kill_wait,
            default_stop_timeout=default_stop_timeout,
        )
        self.guest_cache = guest_cache

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
            k, i = default_vm_guest(self.guest_cache)
            kernel, initrd, append = str(k), str(i), VM_APPEND
        if kernel is not None:
            argv += ["-kernel", kernel, "-append", append or VM_APPEND]
            if initrd is not None:
                argv += ["-initrd", initrd]
        if spec.disk is not None:
            fmt = "qcow2" if spec.disk.endswith(".qcow2") else "raw"
            argv += ["-drive", f"file={spec.disk},if=virtio,format={fmt}"]
        return argv

    # -- the plugin protocol -------------------------------------------------------------------------

    def start(self, env: Env, sid: str, conf: ResourceConfig) -> None:
        node, name = env.nodename(), conf.name
        if self._running_or_forgotten(node, name):
            return  # already running: nothing to do
        try:
            spec = parse_spec(conf.extra)
            check_files(spec)
            self._dir(node).mkdir(parents=True, exist_ok=True)
            self.socket_dir(node).mkdir(parents=True, exist_ok=True)
            self._remove_sockets(node, name)  # left by a QEMU that was killed
            argv = self.command(sid, node, name, spec)
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

    def migrate(self, env: Env, sid: str, conf: ResourceConfig, target: str, online: bool) -> bool:
        """Relocate (stop here; the target starts a fresh boot). Live migration: not yet (issue #12)."""
        if online:
            env.log("info", f"service {sid}: live migration not implemented yet, relocating instead")
        if self.check_running(env, sid, conf):
            env.log("info", f"stopping service {sid} (relocate to node '{target}')")
            self.shutdown(env, sid, conf, None)
        return not self.check_running(env, sid, conf)
