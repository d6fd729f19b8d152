"""A throw-away QEMU guest with a real (emulated) watchdog device, for tests.

The guest runs the host's Debian kernel (``/boot/vmlinuz-<ver>``) with a tiny
initramfs built here and cached per kernel version: ``busybox-static``, the
kernel modules it needs (virtio-pci, 9p over virtio, the watchdog core, the
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
import gzip
import hashlib
import json
import lzma
import os
import re
import shlex
import shutil
import signal
import socket
import stat
import struct
import subprocess
import tempfile
import threading
import time
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

QEMU = "qemu-system-x86_64"
BUSYBOX = Path("/bin/busybox")  # Debian busybox-static
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


class GuestError(Exception):
    """The host cannot run the guest (missing QEMU, kernel, busybox, module...) or the guest misbehaved."""


# --- host checks ----------------------------------------------------------------------------------------


def kernel_version() -> str:
    """The newest kernel with /boot/vmlinuz-<ver> and /lib/modules/<ver> (override: PYHA_GUEST_KERNEL)."""
    forced = os.environ.get("PYHA_GUEST_KERNEL")
    candidates = (
        [forced] if forced else [p.name.removeprefix("vmlinuz-") for p in Path("/boot").glob("vmlinuz-*")]
    )
    usable = [
        v for v in candidates if Path(f"/boot/vmlinuz-{v}").is_file() and Path(f"/lib/modules/{v}").is_dir()
    ]
    if not usable:
        raise GuestError(
            "no kernel with /boot/vmlinuz-<ver> and /lib/modules/<ver> (apt-get install linux-image-amd64)"
        )
    return max(usable, key=_version_key)


def _version_key(v: str) -> list[tuple[int, str]]:
    return [(int(p), "") if p.isdigit() else (-1, p) for p in re.split(r"[.\-+]", v)]


def check_host() -> str:
    """Raise GuestError unless QEMU, a kernel and busybox-static are there; return the kernel version."""
    if shutil.which(QEMU) is None:
        raise GuestError(f"{QEMU} not found (apt-get install qemu-system-x86)")
    if not BUSYBOX.is_file():
        raise GuestError(f"{BUSYBOX} not found (apt-get install busybox-static)")
    if _elf_has_segment(BUSYBOX.read_bytes(), _PT_INTERP):
        raise GuestError(f"{BUSYBOX} is dynamically linked (apt-get install busybox-static)")
    return kernel_version()


_PT_INTERP = 3
_PT_NOTE = 4


def _elf_segments(elf: bytes, p_type: int) -> list[tuple[int, int]]:
    """(offset, size) of the program headers of type ``p_type`` of a 64-bit little-endian ELF image."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2:
        return []
    (phoff,) = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    out = []
    for i in range(phnum):
        typ, _, offset, _, _, filesz = struct.unpack_from("<IIQQQQ", elf, phoff + i * phentsize)
        if typ == p_type:
            out.append((offset, filesz))
    return out


def _elf_has_segment(elf: bytes, p_type: int) -> bool:
    return bool(_elf_segments(elf, p_type))


# --- modules -------------------------------------------------------------------------------------------


def _modules_dep(kver: str) -> dict[str, tuple[str, list[str]]]:
    """module name -> (relative path, dependency paths) from modules.dep."""
    deps: dict[str, tuple[str, list[str]]] = {}
    for line in Path(f"/lib/modules/{kver}/modules.dep").read_text().splitlines():
        if ":" not in line:
            continue
        path, rest = line.split(":", 1)
        deps[_mod_name(path)] = (path, rest.split())
    return deps


def _mod_name(path: str) -> str:
    name = Path(path).name
    for suffix in (".xz", ".zst", ".gz"):
        name = name.removesuffix(suffix)
    return name.removesuffix(".ko").replace("-", "_")


def _builtin(kver: str) -> set[str]:
    f = Path(f"/lib/modules/{kver}/modules.builtin")
    return {_mod_name(line) for line in f.read_text().split()} if f.exists() else set()


def resolve_modules(kver: str, names: Iterable[str]) -> list[tuple[str, str]]:
    """(name, relative path) of ``names`` and their dependencies, dependencies first; built-ins left out."""
    deps = _modules_dep(kver)
    builtin = _builtin(kver)
    out: list[tuple[str, str]] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        name = name.replace("-", "_")
        if name in seen:
            return
        seen.add(name)
        if name not in deps:
            if name in builtin:
                return
            raise GuestError(f"kernel {kver} has no module {name} (neither in modules.dep nor built in)")
        path, needs = deps[name]
        for dep in needs:
            visit(_mod_name(dep))
        out.append((name, path))

    for n in names:
        visit(n)
    return out


def _module_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    if path.name.endswith(".gz"):
        return gzip.decompress(data)
    if path.name.endswith(".zst"):
        if shutil.which("zstd") is None:
            raise GuestError(
                f"{path} is zstd-compressed and the zstd command is missing (apt-get install zstd)"
            )
        return subprocess.run(["zstd", "-dc", str(path)], check=True, capture_output=True, timeout=60).stdout
    return data


# --- the kernel image ---------------------------------------------------------------------------------------

_XEN_ELFNOTE_PHYS32_ENTRY = 18
_PAYLOADS = ((b"\xfd7zXZ\x00", "xz"), (b"\x28\xb5\x2f\xfd", "zstd"), (b"\x1f\x8b\x08\x00", "gzip"))


def _has_pvh_entry(elf: bytes) -> bool:
    """True if the ELF image carries a XEN_ELFNOTE_PHYS32_ENTRY note (QEMU can boot it directly, PVH)."""
    for p_offset, p_filesz in _elf_segments(elf, _PT_NOTE):
        pos, end = p_offset, p_offset + p_filesz
        while pos + 12 <= end:
            namesz, descsz, ntype = struct.unpack_from("<III", elf, pos)
            name = elf[pos + 12 : pos + 12 + namesz].rstrip(b"\0")
            if name == b"Xen" and ntype == _XEN_ELFNOTE_PHYS32_ENTRY:
                return True
            pos += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return False


def _extract_vmlinux(bzimage: bytes) -> bytes | None:
    for magic, kind in _PAYLOADS:
        start = bzimage.find(magic)
        while start >= 0:
            with contextlib.suppress(Exception):
                if kind == "xz":
                    out = lzma.LZMADecompressor().decompress(bzimage[start:])
                elif kind == "gzip":
                    out = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(bzimage[start:])
                elif shutil.which("zstd"):
                    out = subprocess.run(
                        ["zstd", "-dc"], input=bzimage[start:], capture_output=True, timeout=60, check=False
                    ).stdout
                else:
                    out = b""
                if out[:4] == b"\x7fELF":
                    return out
            start = bzimage.find(magic, start + 1)
    return None


def boot_kernel(kver: str, cache_root: Path | None = None) -> Path:
    """The kernel image to boot: the uncompressed vmlinux when it supports PVH, else the bzImage.

    Decompressing the kernel (xz on Debian) takes ~3.5 s under TCG; QEMU boots
    an ELF vmlinux with a PVH entry note directly, so it is extracted once from
    the bzImage and cached.
    """
    bz = Path(f"/boot/vmlinuz-{kver}")
    out = _cache_root(cache_root) / kver / "vmlinux"
    marker = out.with_suffix(".none")
    if out.exists():
        return out
    if marker.exists() and marker.read_text() == str(bz.stat().st_mtime_ns):
        return bz
    elf = _extract_vmlinux(bz.read_bytes())
    out.parent.mkdir(parents=True, exist_ok=True)
    if elf is None or not _has_pvh_entry(elf):
        marker.write_text(str(bz.stat().st_mtime_ns))
        return bz
    tmp = out.with_suffix(f".tmp{os.getpid()}")
    tmp.write_bytes(elf)
    tmp.replace(out)
    return out


def _cache_root(cache_root: Path | None) -> Path:
    return cache_root or Path(os.environ.get("PYHA_GUEST_CACHE", Path(tempfile.gettempdir()) / "pyha-guest"))


# --- cpio (newc) -----------------------------------------------------------------------------------------


class Cpio:
    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.ino = 1000
        self.dirs: set[str] = set()

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        self.ino += 1
        nameb = name.encode() + b"\0"
        fields = [self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(nameb), 0]
        head = b"070701" + b"".join(b"%08X" % f for f in fields)
        self.parts.append(head + nameb + b"\0" * (-(len(head) + len(nameb)) % 4))
        self.parts.append(data + b"\0" * (-len(data) % 4))

    def dir(self, name: str) -> None:
        parts = name.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in self.dirs:
                self.dirs.add(d)
                self._entry(d, stat.S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        name = name.strip("/")
        if "/" in name:
            self.dir(name.rsplit("/", 1)[0])
        self._entry(name, stat.S_IFREG | mode, data)

    def chardev(self, name: str, major: int, minor: int) -> None:
        self._entry(name.strip("/"), stat.S_IFCHR | 0o600, rdev=(major, minor))

    def bytes(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        out = b"".join(self.parts)
        return out + b"\0" * (-len(out) % 512)


def build_initramfs(kver: str, cache_root: Path | None = None) -> Path:
    """The base initramfs for kernel ``kver``, built once and cached (keyed by kernel and recipe)."""
    modules = resolve_modules(kver, (*BASE_MODULES, *WATCHDOG_MODULES))
    boot = [name for name, _ in resolve_modules(kver, BASE_MODULES)]
    recipe = json.dumps([kver, INIT, modules, boot, BUSYBOX.stat().st_mtime_ns]).encode()
    key = hashlib.sha256(recipe).hexdigest()[:16]
    out = _cache_root(cache_root) / kver / f"initramfs-{key}.cpio"
    for stale in out.parent.glob("initramfs-*.cpio"):  # older recipes
        if stale != out:
            stale.unlink(missing_ok=True)
    if out.exists():
        return out
    cpio = Cpio()
    for d in ("bin", "dev", "proc", "sys", "mnt", "tmp", "run", "lib/modules", "job"):
        cpio.dir(d)
    cpio.chardev("dev/console", 5, 1)
    cpio.chardev("dev/null", 1, 3)
    cpio.file("bin/busybox", BUSYBOX.read_bytes(), 0o755)
    cpio.file("init", INIT.encode(), 0o755)
    for name, rel in modules:
        cpio.file(f"lib/modules/{name}.ko", _module_bytes(Path(f"/lib/modules/{kver}") / rel))
    cpio.file("modules.boot", ("\n".join(boot) + "\n").encode())
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".tmp{os.getpid()}")
    tmp.write_bytes(cpio.bytes())
    tmp.replace(out)
    return out


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
