"""The default root filesystem of a ``ct:`` container, built offline from ``busybox-static`` (issue #12).

A directory tree: ``/bin/busybox`` (Debian's static busybox, no library
needed) with a symlink for each of its applets where ``busybox --list-full``
puts it, the usual empty mount points, a minimal ``/etc/passwd`` and
``/etc/group``, and ``/sbin/pyha-init``: the container's first process
unless the service names another ``init`` (agents/ct.py).

It is built once per recipe under ``$PYHA_GUEST_CACHE/ct`` (default
``<tmp>/pyha-guest/ct``), keyed by a hash of the busybox binary's identity and
the init script, into a private temporary folder that is then renamed into
place: a rename onto an existing folder fails, so several nodes (or starts)
building it at once end with one tree and never see half of one. Containers
mount it read-only, so all of them share it.

``/sbin/pyha-init`` answers health checks through a FIFO on a host folder
bind-mounted at ``/run/pyha``: the host writes ``ping NONCE`` into
``/run/pyha/ping``, the container answers ``pong NONCE ID PID HOSTNAME NETDEVS``
in the file ``/run/pyha/pong`` (written aside and renamed, so never read half
written). ``ID`` is a random id drawn at the container's start (a restart or a
relocation draws a new one), ``PID`` the init's pid as the container sees it
(1: its own PID namespace), ``HOSTNAME`` its UTS name and ``NETDEVS`` the
network devices it sees (only ``lo``: its own network namespace).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from agents.guestimage import BUSYBOX, GuestError, cache_root_dir

INIT_PATH = "/sbin/pyha-init"
HEALTH_DIR = "/run/pyha"  # where the host's health folder is mounted inside the container

# SIGTERM must be trapped: PID 1 of a PID namespace ignores signals it has no handler for. A trap
# runs once the current command returns; the blocking open of the FIFO returns EINTR on the signal.
CT_INIT = r"""#!/bin/sh
# pyha's default ct init (agents/rootfs.py)
trap 'echo "PYHA-CT: SIGTERM: stopping"; exit 0' TERM INT
id=$(cat /proc/sys/kernel/random/uuid)
host=$(hostname)
devs=$(ls /sys/class/net 2>/dev/null | tr '\n' ',' | sed 's/,$//')
echo "PYHA-CT: up id=$id pid=$$ hostname=$host netdevs=${devs:-none}"
while true; do
    if read -r cmd nonce 2>/dev/null <@DIR@/ping; then
        if [ "$cmd" = ping ]; then
            echo "pong $nonce $id $$ $host ${devs:-none}" > @DIR@/.pong && mv -f @DIR@/.pong @DIR@/pong
        fi
    else
        sleep 0.2
    fi
done
""".replace("@DIR@", HEALTH_DIR)

_DIRS = ("proc", "sys", "dev", "tmp", "run", "root", "etc", "var/tmp", "home", "mnt")


def _applets() -> list[str]:
    """Paths (``bin/ls``, ``sbin/ip``, ``usr/bin/awk``...) of busybox's applets."""
    try:
        res = subprocess.run(
            [str(BUSYBOX), "--list-full"], capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError) as e:
        raise GuestError(f"{BUSYBOX} --list-full failed: {e}") from None
    return [ln.strip().lstrip("/") for ln in res.stdout.split() if ln.strip() and ".." not in ln]


def default_ct_rootfs(cache_root: Path | None = None) -> Path:
    """The built-in busybox root filesystem (a directory), built once and cached."""
    if not BUSYBOX.is_file():
        raise GuestError(f"{BUSYBOX} not found (apt-get install busybox-static)")
    st = BUSYBOX.stat()
    recipe = f"{st.st_size}:{st.st_mtime_ns}:{CT_INIT}".encode()
    key = hashlib.sha256(recipe).hexdigest()[:16]
    parent = cache_root_dir(cache_root) / "ct"
    out = parent / f"rootfs-{key}"
    if (out / INIT_PATH.lstrip("/")).is_file():
        return out
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=".rootfs-"))
    try:
        _populate(tmp)
        os.chmod(tmp, 0o755)
        try:
            os.rename(tmp, out)
        except OSError:
            if not (out / INIT_PATH.lstrip("/")).is_file():
                raise  # not a concurrent builder's tree: a real failure
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    # trees of older recipes stay: a running container may have one as its root
    return out


def _populate(root: Path) -> None:
    for d in _DIRS:
        (root / d).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "tmp", 0o1777)
    (root / "bin").mkdir(exist_ok=True)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    os.chmod(root / "bin" / "busybox", 0o755)
    for rel in _applets():
        link = root / rel
        if link.name == "busybox" or link.exists() or link.is_symlink():
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.symlink("/bin/busybox", link)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\n")
    (root / "etc" / "hostname").write_text("pyha-ct\n")
    init = root / INIT_PATH.lstrip("/")
    init.parent.mkdir(parents=True, exist_ok=True)
    init.write_text(CT_INIT)
    os.chmod(init, 0o755)
