"""Guest images the project builds offline from Debian packages (issue #12).

A guest is the host's Debian kernel (``linux-image-amd64``: ``/boot/vmlinuz-<ver>``
with its modules in ``/lib/modules/<ver>``) and a small initramfs built here:
``busybox-static``, the kernel modules the guest needs (dependencies from
``modules.dep``; compressed ``.ko.xz``/``.ko.zst``/``.ko.gz`` unpacked on the
host), an ``/init`` script and any extra files. Nothing is downloaded.

Built images are cached per kernel version under ``$PYHA_GUEST_CACHE``
(default ``<tmp>/pyha-guest``), keyed by a hash of their recipe; each writer
has its own temporary file, renamed over the image, so several nodes of one
host (and several starts on one node) may build the same image at once.
Decompressing the kernel (xz on Debian) costs about 3.5 s under TCG, so
:func:`boot_kernel` extracts the uncompressed ``vmlinux`` once when it carries
a PVH entry note (QEMU then boots it directly).

Two users: ``agents/vm.py`` boots :func:`default_vm_guest` (its ``/init``
answers the health check over a virtio-serial port and powers off on an ACPI
power button press), and ``tests/fence/guest.py`` builds its watchdog test
guest with :func:`build_image`.

Host packages: ``qemu-system-x86``, ``linux-image-amd64``, ``busybox-static``
(``make deps`` installs them); :func:`check_host` names what is missing.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import lzma
import os
import re
import shutil
import stat
import struct
import subprocess
import tempfile
import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path

QEMU = "qemu-system-x86_64"
BUSYBOX = Path("/bin/busybox")  # Debian busybox-static


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


def module_bytes(path: Path) -> bytes:
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
    out = cache_root_dir(cache_root) / kver / "vmlinux"
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
    write_atomic(out, elf)
    return out


def write_atomic(out: Path, data: bytes) -> None:
    """``out`` appears whole or not at all, even with several writers (threads of one node, nodes of a host).

    Each writer has its own temporary file (mkstemp) in the same folder, renamed over ``out``.
    """
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def cache_root_dir(cache_root: Path | None) -> Path:
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


def build_image(
    kver: str,
    *,
    name: str,
    init: str,
    modules: Iterable[str],
    boot_modules: Iterable[str],
    files: Mapping[str, tuple[bytes, int]] | None = None,
    dirs: Iterable[str] = (),
    cache_root: Path | None = None,
) -> Path:
    """An initramfs for kernel ``kver``, built once and cached (keyed by kernel and recipe).

    ``modules`` (and their dependencies) are packed as ``/lib/modules/<name>.ko``;
    ``/modules.boot`` lists ``boot_modules`` with their dependencies, dependencies
    first, for ``/init`` to ``insmod`` in that order. ``files``: path -> (data, mode).
    Older images of the same ``name`` (other recipes) are removed.
    """
    packed = resolve_modules(kver, modules)
    boot = [n for n, _ in resolve_modules(kver, boot_modules)]
    extra = dict(files or {})
    dirs = tuple(dirs)
    recipe = json.dumps(
        [
            kver,
            init,
            packed,
            boot,
            BUSYBOX.stat().st_mtime_ns,
            sorted((k, hashlib.sha256(d).hexdigest(), m) for k, (d, m) in extra.items()),
            dirs,
        ]
    ).encode()
    key = hashlib.sha256(recipe).hexdigest()[:16]
    out = cache_root_dir(cache_root) / kver / f"{name}-{key}.cpio"
    for stale in out.parent.glob(f"{name}-*.cpio"):  # older recipes
        if stale != out:
            stale.unlink(missing_ok=True)
    if out.exists():
        return out
    cpio = Cpio()
    for d in ("bin", "dev", "proc", "sys", "mnt", "tmp", "run", "lib/modules", *dirs):
        cpio.dir(d)
    cpio.chardev("dev/console", 5, 1)
    cpio.chardev("dev/null", 1, 3)
    cpio.file("bin/busybox", BUSYBOX.read_bytes(), 0o755)
    cpio.file("init", init.encode(), 0o755)
    for mod, rel in packed:
        cpio.file(f"lib/modules/{mod}.ko", module_bytes(Path(f"/lib/modules/{kver}") / rel))
    cpio.file("modules.boot", ("\n".join(boot) + "\n").encode())
    for path, (data, mode) in sorted(extra.items()):
        cpio.file(path, data, mode)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, cpio.bytes())
    return out


# --- the default guest of a ``vm:`` service --------------------------------------------------------

# The virtio-serial port (``-device virtserialport,name=...``) the guest answers health checks on.
HEALTH_PORT = "org.pyha.health"
# the guest's kernel command line: serial console, quiet, reboot at once on a panic
VM_APPEND = "console=ttyS0 quiet panic=-1 mitigations=off 8250.nr_uarts=1 edd=off"
# virtio-pci for the virtio devices, virtio_console for the health port, virtio_blk for a ``disk``,
# button + evdev so that busybox ``acpid`` sees the ACPI power button (QMP ``system_powerdown``)
VM_MODULES = ("virtio_pci", "virtio_console", "virtio_blk", "button", "evdev")

# Health protocol, one line each way: the host writes ``ping NONCE``, the guest answers
# ``pong NONCE BOOT_ID UPTIME``. The nonce lets the host skip a stale answer: a write to the port
# blocks while no host is connected, so an answer to a client that hung up arrives at the next one.
VM_INIT = r"""#!/bin/busybox sh
# pyha's default vm guest (agents/guestimage.py)
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules.boot); do
    insmod "/lib/modules/$m.ko" || echo "PYHA-GUEST: insmod $m failed"
done
boot_id=$(cat /proc/sys/kernel/random/boot_id)
acpid -f -c /etc/acpi -l /dev/null -p /run/acpid.pid &
port=""
i=0
while [ -z "$port" ] && [ "$i" -lt 100 ]; do
    for d in /sys/class/virtio-ports/*; do
        [ "$(cat "$d/name" 2>/dev/null)" = "@PORT@" ] && port="/dev/${d##*/}"
    done
    [ -n "$port" ] || { i=$((i + 1)); sleep 0.1; }
done
health() {
    exec 3<>"$port"
    while true; do
        # read returns at once (EOF) while no host is connected: poll
        while read -r cmd nonce <&3; do
            [ "$cmd" = ping ] && echo "pong $nonce $boot_id $(cut -d' ' -f1 /proc/uptime)" >&3
        done
        sleep 0.2
    done
}
if [ -n "$port" ]; then
    health &
    echo "PYHA-GUEST: up boot_id=$boot_id health=$port uptime=$(cut -d' ' -f1 /proc/uptime)"
else
    echo "PYHA-GUEST: no virtio port @PORT@, no health check"
fi
while true; do sleep 3600; done
""".replace("@PORT@", HEALTH_PORT)

# busybox acpid runs <confdir>/PWRF/00000080 on a power button press
VM_POWER_BUTTON = b"""#!/bin/sh
echo "PYHA-GUEST: power button: powering off" > /dev/console
sync
poweroff -f
"""


def default_vm_guest(cache_root: Path | None = None) -> tuple[Path, Path]:
    """(kernel, initrd) of the default ``vm:`` guest, built (once) from the host's packages."""
    kver = check_host()
    initrd = build_image(
        kver,
        name="vmguest",
        init=VM_INIT,
        modules=VM_MODULES,
        boot_modules=VM_MODULES,
        files={"etc/acpi/PWRF/00000080": (VM_POWER_BUTTON, 0o755)},
        dirs=("etc/acpi", "var/log"),
        cache_root=cache_root,
    )
    return boot_kernel(kver, cache_root), initrd
