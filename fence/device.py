"""The Linux kernel watchdog device (``/dev/watchdog``), used the way the kernel documents it.

Reference: the kernel's ``Documentation/watchdog/watchdog-api.rst`` and
``include/uapi/linux/watchdog.h``; the behaviour on close is the watchdog
core's ``watchdog_release()`` (``drivers/watchdog/watchdog_dev.c``).

The rules this module follows:

- **Opening arms.** The timer starts when the device is opened. Only one
  opener at a time: the kernel answers ``EBUSY`` to a second ``open()``
  (:class:`DeviceBusy`); this module also refuses to open the same path twice
  in one process.
- **Pet** with :meth:`WatchdogDevice.keepalive` (``WDIOC_KEEPALIVE``, or a
  one-byte write on drivers without that ioctl).
- **The orderly end is the magic close only** (:meth:`WatchdogDevice.disarm`):
  write ``V`` and close; a driver with ``WDIOF_MAGICCLOSE`` stops the timer.
- **A close without ``V`` keeps the timer running**: the machine resets (or,
  in QEMU with ``-action watchdog=poweroff``, powers off) when it expires.
  That is what must happen when the process holding the device dies, and the
  kernel does exactly that on process death (it closes the fd without
  writing anything). So on a crash path the code must do *nothing at all*:
  there is no ``__del__``, no ``atexit`` hook and no context manager here,
  because each of them would run on the way down and could disarm a
  watchdog whose owner is failing. :meth:`WatchdogDevice.abandon` (close
  without ``V``) exists for tests and for an explicit "fire now" path.

Caveats the caller must know (see :attr:`WatchdogDevice.options`):

- a driver *without* ``WDIOF_MAGICCLOSE`` stops the timer on every close,
  including the kernel's close at process death: such a device does not fence
  a crashed owner (:attr:`WatchdogDevice.stops_on_any_close`);
- a kernel built with ``CONFIG_WATCHDOG_NOWAYOUT`` (or a driver loaded with
  ``nowayout=1``) ignores ``V``: after :meth:`WatchdogDevice.disarm` the timer
  keeps running and the machine resets.

Standard library only: ``ha-watchdog`` and the QEMU guest test use it with
nothing else installed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import struct
import threading

DEFAULT_PATH = "/dev/watchdog"
MAGIC_CLOSE = b"V"
KEEPALIVE_BYTE = b"\0"

# --- ioctl numbers ----------------------------------------------------------------------------------------
# include/uapi/asm-generic/ioctl.h (used by x86_64, arm64 and most architectures; not by alpha, mips,
# powerpc, sparc, which have other direction bits): nr in bits 0-7, type in bits 8-15, argument size in
# bits 16-29, direction in bits 30-31 with _IOC_WRITE = 1 and _IOC_READ = 2.
_IOC_NRSHIFT = 0
_IOC_TYPESHIFT = 8
_IOC_SIZESHIFT = 16
_IOC_DIRSHIFT = 30
_IOC_WRITE = 1
_IOC_READ = 2


def _ioc(direction: int, type_: str, nr: int, size: int) -> int:
    return (
        (direction << _IOC_DIRSHIFT)
        | (size << _IOC_SIZESHIFT)
        | (ord(type_) << _IOC_TYPESHIFT)
        | (nr << _IOC_NRSHIFT)
    )


def _ior(type_: str, nr: int, size: int) -> int:
    return _ioc(_IOC_READ, type_, nr, size)


def _iowr(type_: str, nr: int, size: int) -> int:
    return _ioc(_IOC_READ | _IOC_WRITE, type_, nr, size)


# include/uapi/linux/watchdog.h: WATCHDOG_IOCTL_BASE 'W' (0x57), and
#   struct watchdog_info { __u32 options; __u32 firmware_version; __u8 identity[32]; }  -> 40 bytes
WATCHDOG_IOCTL_BASE = "W"
WATCHDOG_INFO = struct.Struct("=II32s")
_INT = struct.Struct("=i")
assert WATCHDOG_INFO.size == 40

WDIOC_GETSUPPORT = _ior(WATCHDOG_IOCTL_BASE, 0, WATCHDOG_INFO.size)  # 0x80285700
WDIOC_GETSTATUS = _ior(WATCHDOG_IOCTL_BASE, 1, _INT.size)  # 0x80045701
WDIOC_GETBOOTSTATUS = _ior(WATCHDOG_IOCTL_BASE, 2, _INT.size)  # 0x80045702
WDIOC_SETOPTIONS = _ior(WATCHDOG_IOCTL_BASE, 4, _INT.size)  # 0x80045704 (sic: _IOR in the header)
WDIOC_KEEPALIVE = _ior(WATCHDOG_IOCTL_BASE, 5, _INT.size)  # 0x80045705
WDIOC_SETTIMEOUT = _iowr(WATCHDOG_IOCTL_BASE, 6, _INT.size)  # 0xC0045706
WDIOC_GETTIMEOUT = _ior(WATCHDOG_IOCTL_BASE, 7, _INT.size)  # 0x80045707
WDIOC_GETTIMELEFT = _ior(WATCHDOG_IOCTL_BASE, 10, _INT.size)  # 0x8004570A

# struct watchdog_info.options flags (include/uapi/linux/watchdog.h)
WDIOF_SETTIMEOUT = 0x0080  # the timeout can be set
WDIOF_MAGICCLOSE = 0x0100  # supports the magic close character
WDIOF_PRETIMEOUT = 0x0200
WDIOF_ALARMONLY = 0x0400  # raises an external alarm instead of resetting the machine
WDIOF_KEEPALIVEPING = 0x8000  # supports WDIOC_KEEPALIVE

# errnos meaning "this driver does not do that ioctl" (the watchdog core answers EOPNOTSUPP to
# WDIOC_KEEPALIVE without WDIOF_KEEPALIVEPING; old drivers answer ENOTTY or EINVAL)
_UNSUPPORTED = frozenset({errno.ENOTTY, errno.EINVAL, errno.EOPNOTSUPP})


class DeviceError(Exception):
    """The watchdog device cannot be opened or used."""


class DeviceBusy(DeviceError):
    """Someone already holds the device (the kernel allows one opener)."""


# one opener per device in this process (the kernel enforces it across processes with EBUSY)
_open_paths: set[str] = set()
_open_lock = threading.Lock()


def _key(path: str) -> str:
    return os.path.realpath(path)


class WatchdogDevice:
    """An open, *armed* watchdog device. Create it with :meth:`open`.

    Attributes after :meth:`open`:

    - ``path``: the device path;
    - ``timeout``: the timeout the device reports (``WDIOC_GETTIMEOUT``), in
      seconds; this is what counts, whatever was asked;
    - ``timeout_note``: ``None``, or one line saying why ``timeout`` differs
      from the requested value (refused, clamped or rounded by the driver);
      the caller decides whether it can live with it;
    - ``identity``, ``firmware_version``, ``options``: ``WDIOC_GETSUPPORT``.
    """

    def __init__(
        self,
        path: str,
        fd: int,
        *,
        requested_timeout: int,
        timeout: int,
        timeout_note: str | None,
        identity: str,
        firmware_version: int,
        options: int,
    ) -> None:
        self.path = path
        self._fd: int | None = fd
        self.requested_timeout = requested_timeout
        self.timeout = timeout
        self.timeout_note = timeout_note
        self.identity = identity
        self.firmware_version = firmware_version
        self.options = options
        self._keepalive_by_write = not options & WDIOF_KEEPALIVEPING

    # --- opening ---------------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str = DEFAULT_PATH, timeout: int | None = None) -> WatchdogDevice:
        """Open ``path`` (this ARMS the watchdog), set ``timeout`` seconds and read back what the device took.

        ``timeout`` is required (an int >= 1). Raises :class:`DeviceBusy` if
        the device is held (by another process, or already by this one) and
        :class:`DeviceError` for every other reason it cannot be used.
        """
        if timeout is None:
            raise TypeError("WatchdogDevice.open() needs a timeout (int seconds >= 1)")
        if isinstance(timeout, bool) or not isinstance(timeout, int):
            raise TypeError(f"watchdog timeout must be an int number of seconds, not {timeout!r}")
        if timeout < 1:
            raise ValueError(f"watchdog timeout must be >= 1 s, not {timeout}")
        key = _key(path)
        with _open_lock:
            if key in _open_paths:
                raise DeviceBusy(f"{path} is already open in this process (one opener per device)")
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            except OSError as e:
                raise _open_error(path, e) from e
            _open_paths.add(key)
        # From here on the timer runs. If setting up fails we end it with the magic close: the caller gets
        # an exception instead of an object, has never petted it and cannot disarm it itself. (This is no
        # crash path of an owner: nothing relied on this timer before this call; BaseException so that an
        # interrupted start does not leave a running timer nobody can reach.)
        try:
            return cls._setup(path, fd, timeout)
        except BaseException:
            with contextlib.suppress(OSError):
                os.write(fd, MAGIC_CLOSE)
            with contextlib.suppress(OSError):
                os.close(fd)
            with _open_lock:
                _open_paths.discard(key)
            raise

    @classmethod
    def _setup(cls, path: str, fd: int, timeout: int) -> WatchdogDevice:
        info = bytearray(WATCHDOG_INFO.size)
        try:
            fcntl.ioctl(fd, WDIOC_GETSUPPORT, info, True)
        except OSError as e:
            raise DeviceError(
                f"{path} does not answer WDIOC_GETSUPPORT ({os.strerror(e.errno or 0)}):"
                " not a watchdog device?"
            ) from e
        options, firmware_version, raw_identity = WATCHDOG_INFO.unpack(info)
        identity = raw_identity.split(b"\0", 1)[0].decode("ascii", "replace")

        note: str | None = None
        buf = bytearray(_INT.pack(timeout))
        try:
            fcntl.ioctl(fd, WDIOC_SETTIMEOUT, buf, True)
        except OSError as e:
            note = f"the device refused timeout {timeout}s: WDIOC_SETTIMEOUT: {os.strerror(e.errno or 0)}"
            if not options & WDIOF_SETTIMEOUT:
                note += " (driver has no WDIOF_SETTIMEOUT)"
        got = bytearray(_INT.size)
        try:
            fcntl.ioctl(fd, WDIOC_GETTIMEOUT, got, True)
        except OSError as e:
            raise DeviceError(
                f"{path}: cannot read the timeout back (WDIOC_GETTIMEOUT: {os.strerror(e.errno or 0)});"
                " refusing a watchdog whose timeout is unknown"
            ) from e
        (actual,) = _INT.unpack(got)
        if actual <= 0:
            raise DeviceError(f"{path}: the device reports a timeout of {actual}s")
        if actual != timeout and note is None:
            note = f"asked for timeout {timeout}s, the device uses {actual}s"
        elif note is not None:
            note += f"; the device uses {actual}s"
        return cls(
            path,
            fd,
            requested_timeout=timeout,
            timeout=actual,
            timeout_note=note,
            identity=identity,
            firmware_version=firmware_version,
            options=options,
        )

    # --- use -------------------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._fd is None

    @property
    def supports_magic_close(self) -> bool:
        return bool(self.options & WDIOF_MAGICCLOSE)

    @property
    def stops_on_any_close(self) -> bool:
        """True if the driver stops the timer on every close, so a crash of the owner is NOT fenced."""
        return not self.supports_magic_close

    def fileno(self) -> int:
        return self._require_fd()

    def _require_fd(self) -> int:
        if self._fd is None:
            raise DeviceError(f"{self.path} is closed")
        return self._fd

    def keepalive(self) -> None:
        """Pet the watchdog: ``WDIOC_KEEPALIVE``; drivers without it get a one-byte write."""
        fd = self._require_fd()
        if not self._keepalive_by_write:
            try:
                fcntl.ioctl(fd, WDIOC_KEEPALIVE, bytearray(_INT.size), True)
                return
            except OSError as e:
                if e.errno not in _UNSUPPORTED:
                    raise DeviceError(f"{self.path}: WDIOC_KEEPALIVE: {os.strerror(e.errno or 0)}") from e
                self._keepalive_by_write = True
        try:
            # any byte but 'V' pets; writing also cancels an earlier 'V' (the core re-scans each write)
            os.write(fd, KEEPALIVE_BYTE)
        except OSError as e:
            raise DeviceError(f"{self.path}: keepalive write: {os.strerror(e.errno or 0)}") from e

    def time_left(self) -> int | None:
        """Seconds until the device fires (``WDIOC_GETTIMELEFT``), None where the driver cannot tell."""
        buf = bytearray(_INT.size)
        try:
            fcntl.ioctl(self._require_fd(), WDIOC_GETTIMELEFT, buf, True)
        except OSError:
            return None
        return int(_INT.unpack(buf)[0])

    def disarm(self) -> None:
        """The orderly end: write the magic close ``V`` and close; the driver stops the timer.

        Afterwards the object is closed. If the write fails the device is left
        open and armed (keep petting, retry, or :meth:`abandon`) and
        :class:`DeviceError` is raised. With ``nowayout`` the kernel ignores
        ``V`` and the timer keeps running after this.
        """
        fd = self._require_fd()
        try:
            os.write(fd, MAGIC_CLOSE)
        except OSError as e:
            raise DeviceError(f"{self.path}: magic close write failed, still armed: {e.strerror}") from e
        self._close(fd)

    def abandon(self) -> None:
        """Close WITHOUT the magic character: the timer keeps running and the machine resets when it expires.

        For tests and for an explicit "fire now" path. A crash path must not
        call this (nor anything else): the kernel closes the fd of a dead
        process without ``V``, which is exactly this.
        """
        self._close(self._require_fd())

    def _close(self, fd: int) -> None:
        self._fd = None
        try:
            os.close(fd)
        finally:
            with _open_lock:
                _open_paths.discard(_key(self.path))

    def __repr__(self) -> str:
        state = "closed" if self.closed else "armed"
        return (
            f"<WatchdogDevice {self.path} {state} identity={self.identity!r} timeout={self.timeout}s "
            f"options={self.options:#06x}>"
        )


def _open_error(path: str, e: OSError) -> DeviceError:
    if e.errno == errno.EBUSY:
        return DeviceBusy(f"another process holds {path} (the kernel allows one opener): {e.strerror}")
    if e.errno == errno.ENOENT:
        return DeviceError(f"{path} does not exist (no watchdog driver loaded? e.g. softdog, i6300esb)")
    if e.errno in (errno.EACCES, errno.EPERM):
        return DeviceError(f"no permission to open {path} for writing: {e.strerror}")
    if e.errno in (errno.ENODEV, errno.ENXIO):
        return DeviceError(f"{path}: no such device (driver not bound?): {e.strerror}")
    return DeviceError(f"cannot open {path}: {e.strerror or e}")


_LEGACY_WATCHDOG = os.makedev(10, 130)  # /dev/watchdog: misc minor 130, an alias of the first watchdog


def _same_watchdog(rdev: int) -> set[int]:
    """Device numbers opening the same timer: /dev/watchdog and /dev/watchdog0 share one "open" bit."""
    devs = {rdev}
    with contextlib.suppress(OSError, ValueError):
        with open("/sys/class/watchdog/watchdog0/dev") as f:
            major, minor = f.read().strip().split(":")
        first = os.makedev(int(major), int(minor))
        if rdev in (first, _LEGACY_WATCHDOG):
            devs |= {first, _LEGACY_WATCHDOG}
    return devs


def _held_by_another_process(rdev: int) -> int | None:
    """A pid (other than ours) with an fd on the watchdog ``rdev`` (or its alias), best effort via /proc."""
    rdevs = _same_watchdog(rdev)
    me = os.getpid()
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit() and int(p) != me]
    except OSError:
        return None
    for pid in pids:
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                st = os.stat(f"{fd_dir}/{fd}")
            except OSError:
                continue
            if stat.S_ISCHR(st.st_mode) and st.st_rdev in rdevs:
                return int(pid)
    return None


def device_problem(path: str = DEFAULT_PATH) -> str | None:
    """Why ``path`` cannot be used as the watchdog device, or None if it looks usable.

    Only looks (stat, access, /proc): it never opens the device, because
    opening a watchdog device arms it. "Busy" is found through this
    process's own guard and, best effort, through ``/proc/*/fd`` (complete
    only as root). A device that passes may still fail in
    :meth:`WatchdogDevice.open` (e.g. a character device that is no watchdog).
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return f"{path} does not exist (no watchdog driver loaded? e.g. softdog, i6300esb)"
    except PermissionError as e:
        return f"cannot stat {path}: {e.strerror}"
    except OSError as e:
        return f"cannot stat {path}: {e.strerror or e}"
    if not stat.S_ISCHR(st.st_mode):
        return f"{path} is not a character device"
    if not os.access(path, os.W_OK):
        return f"no write permission on {path}"
    with _open_lock:
        if _key(path) in _open_paths:
            return f"{path} is already open in this process"
    pid = _held_by_another_process(st.st_rdev)
    if pid is not None:
        return f"another process holds {path} (pid {pid})"
    return None
