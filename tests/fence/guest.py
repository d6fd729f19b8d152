"""A throw-away QEMU guest with a real (emulated) watchdog device, for tests.

The guest runs the host's Debian kernel (``/boot/vmlinuz-<ver>``) with a tiny
initramfs built by ``agents/guestimage.py`` and cached per kernel version:
``busybox-static``, the kernel modules it needs (virtio-pci, 9p over virtio, the watchdog core, the
``i6300esb`` and ``softdog`` drivers; dependencies from ``modules.dep``,
compressed ``.ko.xz``/``.ko.zst``/``.ko.gz`` unpacked on the host) and an
``/init`` script. The host's root directory is shared read-only over 9p
(``mount_tag=hostroot``) and the test's command runs in a chroot of it, so the
guest runs the *host's* Python (``sys.executable`` of the test, with its venv)
on the checkout at its host path. Inside the chroot ``/proc``, ``/sys``,
``/dev``, ``/run`` (tmpfs; ``TMPDIR=/run/tmp``) and ``/dev/shm`` are the
guest's; files handed over by the test (``files=``) appear under ``/run/job``.
The host's ``/tmp`` stays visible (read-only): a checkout or venv under it, as
in a CI clone, must be reachable.

QEMU: TCG only (``-accel tcg``: KVM hangs nested on the development machine),
``-device i6300esb -action watchdog=poweroff``: when the guest's watchdog
expires QEMU powers the guest off and exits, and QMP reports a ``WATCHDOG``
event. The serial console is the guest's ``/dev/console``; every line is
recorded with the host's ``time.monotonic()`` when it arrived.

Everything is bounded: boot, waits and the final reap; leaving the
:class:`Guest` context always SIGKILLs and reaps QEMU.

Why a per-run initramfs and not a file on the shared root: the shared root is
read-only and the 9p cache may not see files the host writes after the mount,
so the test's files travel in a second cpio archive appended to the cached one
(the kernel unpacks concatenated archives).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.guestimage import (
    QEMU,
    Cpio,
    GuestError,
    boot_kernel,
    build_image,
    check_host,
    resolve_modules,
)

__all__ = ["QEMU", "Guest", "GuestError", "Line", "boot_kernel", "build_initramfs", "check_host"]

# loaded at boot, in this order (dependencies first, from modules.dep)
BASE_MODULES = ("virtio_pci", "9pnet_virtio", "9p")
WATCHDOG_MODULES = ("watchdog", "i6300esb", "softdog")
APPEND = "console=ttyS0 quiet panic=-1 mitigations=off 8250.nr_uarts=1 edd=off"

INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "GUEST: init up $(cut -d' ' -f1 /proc/uptime)"
fail() { echo "GUEST-FAIL: $*"; poweroff -f; sleep 5; }
for m in $(cat /modules.boot) $(cat /job/modules 2>/dev/null); do
    insmod "/lib/modules/$m.ko" || fail "insmod $m"
done
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /mnt \
    || fail "mount hostroot"
mount -t proc proc /mnt/proc || fail "mount proc"
mount -t sysfs sysfs /mnt/sys || fail "mount sys"
mount -t devtmpfs devtmpfs /mnt/dev || fail "mount dev"
mkdir -p /mnt/dev/pts /mnt/dev/shm
mount -t devpts devpts /mnt/dev/pts
mount -t tmpfs tmpfs /mnt/dev/shm
mount -t tmpfs -o mode=755 tmpfs /mnt/run || fail "mount run"
mkdir -m 1777 /mnt/run/tmp
cp -a /job /mnt/run/job || fail "copy job"
echo "GUEST: ready $(cut -d' ' -f1 /proc/uptime)"
chroot /mnt /bin/sh /run/job/run.sh
echo "GUEST-EXIT: rc=$?"
poweroff -f
sleep 10
"""


def build_initramfs(kver: str, cache_root: Path | None = None) -> Path:
    """The base initramfs for kernel ``kver``, built once and cached (keyed by kernel and recipe)."""
    return build_image(
        kver,
        name="initramfs",
        init=INIT,
        modules=(*BASE_MODULES, *WATCHDOG_MODULES),
        boot_modules=BASE_MODULES,
        dirs=("job",),
        cache_root=cache_root,
    )


def job_archive(run_sh: str, files: Mapping[str, bytes | str], modules: Sequence[str]) -> bytes:
    """The per-run cpio (appended to the base one): /job/run.sh, the test's files, the modules to load."""
    cpio = Cpio()
    cpio.dir("job")
    cpio.file("job/run.sh", run_sh.encode(), 0o755)
    cpio.file("job/modules", ("\n".join(modules) + "\n").encode())
    for name, data in files.items():
        if name.startswith("/") or ".." in Path(name).parts:
            raise ValueError(f"job file name must be relative: {name}")
        cpio.file(f"job/{name}", data.encode() if isinstance(data, str) else data, 0o755)
    return cpio.bytes()


def run_script(argv: Sequence[str], cwd: str, env: Mapping[str, str]) -> str:
    lines = ["set -u", "export TMPDIR=/run/tmp", f"cd {shlex.quote(cwd)} || exit 97"]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in env.items()]
    lines.append("exec " + " ".join(shlex.quote(a) for a in argv))
    return "\n".join(lines) + "\n"


def _die_with_parent() -> None:
    """In the QEMU child before exec: SIGKILL it if the test process dies (pytest-timeout, crash)."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


_PR_SET_PDEATHSIG = 1

# --- the guest ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    t: float  # host time.monotonic() when the line arrived
    text: str


@dataclass
class Guest:
    """One QEMU guest running ``argv`` in the chroot of the host's root. Use as a context manager."""

    argv: Sequence[str]
    cwd: str = "/"
    env: Mapping[str, str] = field(default_factory=dict)
    files: Mapping[str, bytes | str] = field(default_factory=dict)
    # watchdog modules loaded at boot after the base ones ("i6300esb" first makes it /dev/watchdog)
    modules: Sequence[str] = ("watchdog", "i6300esb")
    memory_mb: int = 512
    smp: int = 1
    extra_qemu: Sequence[str] = ()

    lines: list[Line] = field(default_factory=list, init=False)
    events: list[tuple[float, dict[str, Any]]] = field(default_factory=list, init=False)
    started: float = field(default=0.0, init=False)
    exited: float | None = field(default=None, init=False)
    returncode: int | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self._cond = threading.Condition()
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None
        self._threads: list[threading.Thread] = []
        self._qmp: socket.socket | None = None

    # --- lifecycle ---

    def command(self, kernel: Path, initrd: Path, qmp: Path) -> list[str]:
        return [
            QEMU,
            "-accel", "tcg",
            "-machine", "pc",
            "-cpu", "max",
            "-smp", str(self.smp),
            "-m", str(self.memory_mb),
            "-nographic",
            "-no-reboot",
            "-nodefaults",
            "-serial", "stdio",
            "-monitor", "none",
            "-kernel", str(kernel),
            "-initrd", str(initrd),
            "-append", APPEND,
            "-device", "i6300esb",
            "-action", "watchdog=poweroff",
            "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
            "-qmp", f"unix:{qmp},server=on,wait=off",
            *self.extra_qemu,
        ]  # fmt: skip

    def start(self) -> Guest:
        kver = check_host()
        base = build_initramfs(kver)
        kernel = boot_kernel(kver)
        self._dir = Path(tempfile.mkdtemp(prefix="pyha-guest-"))
        env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": "/root",
            "LANG": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
            **self.env,
        }
        mods = [m for m in self.modules if m not in BASE_MODULES]
        mod_names = [n for n, _ in resolve_modules(kver, mods)]
        initrd = self._dir / "initrd.cpio"
        with initrd.open("wb") as f:
            f.write(base.read_bytes())
            f.write(job_archive(run_script(self.argv, self.cwd, env), self.files, mod_names))
        qmp = self._dir / "qmp.sock"
        self.started = time.monotonic()
        self._proc = subprocess.Popen(
            self.command(kernel, initrd, qmp),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - prctl only, before exec
        )
        self._spawn(self._read_console)
        self._spawn(lambda: self._read_qmp(qmp))
        return self

    def _spawn(self, target: Any) -> None:
        t = threading.Thread(target=target, daemon=True)
        t.start()
        self._threads.append(t)

    def close(self) -> None:
        """SIGKILL QEMU if it still runs, reap it, stop the readers, remove the temp dir. Idempotent."""
        proc = self._proc
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if self._qmp is not None:
            with contextlib.suppress(OSError):
                self._qmp.shutdown(socket.SHUT_RDWR)
            self._qmp.close()
        for t in self._threads:
            t.join(timeout=5)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> Guest:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- readers ---

    def _read_console(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for raw in self._proc.stdout:
            now = time.monotonic()
            text = raw.decode("utf-8", "replace").rstrip("\r\n").replace("\r", "")
            with self._cond:
                self.lines.append(Line(now, text))
                self._cond.notify_all()
        rc = self._proc.wait()
        with self._cond:
            self.exited = time.monotonic()
            self.returncode = rc
            self._cond.notify_all()

    def _read_qmp(self, path: Path) -> None:
        deadline = time.monotonic() + 20
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        while True:
            try:
                sock.connect(str(path))
                break
            except OSError:
                if time.monotonic() > deadline or self.exited is not None:
                    sock.close()
                    return
                time.sleep(0.05)
        self._qmp = sock
        buf = b""
        with contextlib.suppress(OSError):
            sock.sendall(b'{"execute": "qmp_capabilities"}\n')
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    return
                now = time.monotonic()
                buf += chunk
                while b"\n" in buf:
                    raw, buf = buf.split(b"\n", 1)
                    with contextlib.suppress(ValueError):
                        msg = json.loads(raw)
                        if "event" in msg:
                            with self._cond:
                                self.events.append((now, msg))
                                self._cond.notify_all()

    # --- queries ---

    def wait_for(self, pattern: str, timeout: float, after: float = 0.0) -> Line:
        """The first console line (arrived at or after ``after``) matching ``pattern``.

        Raises GuestError on timeout or when the guest exits first.
        """
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    if line.t >= after and rx.search(line.text):
                        return line
                if self.exited is not None:
                    raise GuestError(
                        f"guest exited (rc {self.returncode}) before {pattern!r}\n{self.console()}"
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    raise GuestError(f"no {pattern!r} within {timeout:g}s\n{self.console()}")
                self._cond.wait(left)

    def wait_exit(self, timeout: float) -> float:
        """Host time when QEMU exited; GuestError if it still runs after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.exited is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise GuestError(f"guest still running after {timeout:g}s\n{self.console()}")
                self._cond.wait(left)
            return self.exited

    def matching(self, pattern: str) -> list[Line]:
        rx = re.compile(pattern)
        with self._cond:
            return [line for line in self.lines if rx.search(line.text)]

    def event(self, name: str) -> tuple[float, dict[str, Any]] | None:
        with self._cond:
            return next(((t, e) for t, e in self.events if e.get("event") == name), None)

    def console(self) -> str:
        """The console so far, each line prefixed by its arrival time relative to the QEMU start."""
        with self._cond:
            return "\n".join(f"{line.t - self.started:8.3f} {line.text}" for line in self.lines)
