"""fence/device.py without a watchdog device: ioctl numbers, error mapping, and the
open/pet/disarm/abandon logic against a fake driver (a regular file plus a fake ioctl).

The real device is exercised in a QEMU guest: tests/fence/test_qemu_watchdog.py.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from fence import device
from fence.device import (
    WDIOC_GETSUPPORT,
    WDIOC_GETTIMEOUT,
    WDIOC_KEEPALIVE,
    WDIOC_SETTIMEOUT,
    WDIOF_KEEPALIVEPING,
    WDIOF_MAGICCLOSE,
    WDIOF_SETTIMEOUT,
    DeviceBusy,
    DeviceError,
    WatchdogDevice,
    device_problem,
)


def test_ioctl_numbers_match_the_kernel_headers() -> None:
    # values of include/uapi/linux/watchdog.h on x86_64, checked with a C program printing the macros
    assert WDIOC_GETSUPPORT == 0x80285700
    assert WDIOC_SETTIMEOUT == 0xC0045706
    assert WDIOC_GETTIMEOUT == 0x80045707
    assert WDIOC_KEEPALIVE == 0x80045705
    assert device.WDIOC_SETOPTIONS == 0x80045704
    assert device.WDIOC_GETTIMELEFT == 0x8004570A
    assert device.WATCHDOG_INFO.size == 40


def test_option_flags() -> None:
    assert (WDIOF_SETTIMEOUT, WDIOF_MAGICCLOSE, WDIOF_KEEPALIVEPING) == (0x0080, 0x0100, 0x8000)


def test_open_missing_path_is_a_device_error_not_busy(tmp_path: Path) -> None:
    missing = tmp_path / "watchdog"
    with pytest.raises(DeviceError, match="does not exist") as info:
        WatchdogDevice.open(str(missing), timeout=5)
    assert not isinstance(info.value, DeviceBusy)
    assert str(missing) in str(info.value)


def test_open_directory_is_a_device_error(tmp_path: Path) -> None:
    with pytest.raises(DeviceError):
        WatchdogDevice.open(str(tmp_path), timeout=5)


@pytest.mark.parametrize("bad", [0, -1])
def test_timeout_must_be_at_least_one_second(tmp_path: Path, bad: int) -> None:
    with pytest.raises(ValueError):
        WatchdogDevice.open(str(tmp_path / "x"), timeout=bad)


@pytest.mark.parametrize("bad", [None, 2.5, True, "5"])
def test_timeout_must_be_an_int(tmp_path: Path, bad: Any) -> None:
    with pytest.raises(TypeError):
        WatchdogDevice.open(str(tmp_path / "x"), timeout=bad)


def test_busy_maps_to_device_busy(monkeypatch: pytest.MonkeyPatch) -> None:
    def busy_open(path: str, flags: int) -> int:
        raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), path)

    monkeypatch.setattr(os, "open", busy_open)
    with pytest.raises(DeviceBusy, match="another process holds /dev/watchdog"):
        WatchdogDevice.open("/dev/watchdog", timeout=5)


def test_a_char_device_that_is_no_watchdog_is_refused_and_released() -> None:
    # /dev/null opens fine but answers ENOTTY to WDIOC_GETSUPPORT; the guard must be released
    for _ in range(2):
        with pytest.raises(DeviceError, match="not a watchdog device") as info:
            WatchdogDevice.open("/dev/null", timeout=5)
        assert not isinstance(info.value, DeviceBusy)


def test_device_problem_missing_and_regular_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    problem = device_problem(str(missing))
    assert problem is not None and "does not exist" in problem
    regular = tmp_path / "file"
    regular.write_text("")
    problem = device_problem(str(regular))
    assert problem is not None and "not a character device" in problem


def test_device_problem_sees_another_holder() -> None:
    # a child holding /dev/zero open for writing: device_problem must report it busy (we run as root in CI,
    # and /proc/<child>/fd of our own child is readable anyway)
    with open("/dev/zero", "wb") as held:
        child = subprocess.Popen(
            [sys.executable, "-c", "import sys; sys.stdin.read()"],
            stdin=subprocess.PIPE,
            pass_fds=(held.fileno(),),
        )
        try:
            problem = device_problem("/dev/zero")
        finally:
            assert child.stdin is not None
            child.stdin.close()
            child.wait(10)
    assert problem is not None and "another process holds /dev/zero" in problem


# --- a fake driver: a regular file for open/write/close, a fake ioctl for the rest -------------------------


class FakeDriver:
    def __init__(
        self,
        *,
        options: int = WDIOF_SETTIMEOUT | WDIOF_MAGICCLOSE | WDIOF_KEEPALIVEPING,
        clamp: int | None = None,
        settimeout_errno: int | None = None,
        keepalive_errno: int | None = None,
    ) -> None:
        self.options = options
        self.clamp = clamp
        self.settimeout_errno = settimeout_errno
        self.keepalive_errno = keepalive_errno
        self.timeout = 30
        self.keepalives = 0
        self.calls: list[int] = []

    def ioctl(self, fd: int, request: int, arg: bytearray, mutate: bool = True) -> int:
        self.calls.append(request)
        if request == WDIOC_GETSUPPORT:
            arg[:] = device.WATCHDOG_INFO.pack(self.options, 7, b"Fake WDT")
        elif request == WDIOC_SETTIMEOUT:
            if self.settimeout_errno is not None:
                raise OSError(self.settimeout_errno, os.strerror(self.settimeout_errno))
            (want,) = device._INT.unpack(arg)
            self.timeout = min(want, self.clamp) if self.clamp else want
            arg[:] = device._INT.pack(self.timeout)
        elif request == WDIOC_GETTIMEOUT:
            arg[:] = device._INT.pack(self.timeout)
        elif request == WDIOC_KEEPALIVE:
            if self.keepalive_errno is not None:
                raise OSError(self.keepalive_errno, os.strerror(self.keepalive_errno))
            self.keepalives += 1
        else:
            raise OSError(errno.ENOTTY, os.strerror(errno.ENOTTY))
        return 0


@pytest.fixture
def fake_path(tmp_path: Path) -> Path:
    p = tmp_path / "watchdog"
    p.write_bytes(b"")
    return p


def use(monkeypatch: pytest.MonkeyPatch, driver: FakeDriver) -> None:
    monkeypatch.setattr(device, "fcntl", types.SimpleNamespace(ioctl=driver.ioctl))


def test_open_sets_and_reads_back_the_timeout(monkeypatch: pytest.MonkeyPatch, fake_path: Path) -> None:
    drv = FakeDriver()
    use(monkeypatch, drv)
    dev = WatchdogDevice.open(str(fake_path), timeout=4)
    try:
        assert dev.timeout == 4 and dev.timeout_note is None
        assert dev.identity == "Fake WDT" and dev.firmware_version == 7
        assert dev.options & WDIOF_MAGICCLOSE and not dev.stops_on_any_close
        assert drv.calls[:3] == [WDIOC_GETSUPPORT, WDIOC_SETTIMEOUT, WDIOC_GETTIMEOUT]
    finally:
        dev.disarm()


def test_a_clamped_timeout_is_kept_and_explained(monkeypatch: pytest.MonkeyPatch, fake_path: Path) -> None:
    use(monkeypatch, FakeDriver(clamp=3))
    dev = WatchdogDevice.open(str(fake_path), timeout=10)
    try:
        assert dev.timeout == 3 and dev.requested_timeout == 10
        assert dev.timeout_note is not None and "10" in dev.timeout_note and "3" in dev.timeout_note
        assert "\n" not in dev.timeout_note
    finally:
        dev.disarm()


def test_a_refused_timeout_keeps_the_device_value(monkeypatch: pytest.MonkeyPatch, fake_path: Path) -> None:
    use(monkeypatch, FakeDriver(options=WDIOF_MAGICCLOSE, settimeout_errno=errno.EOPNOTSUPP))
    dev = WatchdogDevice.open(str(fake_path), timeout=4)
    try:
        assert dev.timeout == 30
        assert dev.timeout_note is not None and "refused" in dev.timeout_note and "30s" in dev.timeout_note
    finally:
        dev.disarm()


def test_keepalive_uses_the_ioctl(monkeypatch: pytest.MonkeyPatch, fake_path: Path) -> None:
    drv = FakeDriver()
    use(monkeypatch, drv)
    dev = WatchdogDevice.open(str(fake_path), timeout=4)
    dev.keepalive()
    dev.keepalive()
    assert drv.keepalives == 2 and fake_path.read_bytes() == b""
    dev.disarm()
    assert fake_path.read_bytes() == b"V"


@pytest.mark.parametrize("err", [errno.ENOTTY, errno.EINVAL, errno.EOPNOTSUPP])
def test_keepalive_falls_back_to_a_write(monkeypatch: pytest.MonkeyPatch, fake_path: Path, err: int) -> None:
    use(monkeypatch, FakeDriver(keepalive_errno=err))
    dev = WatchdogDevice.open(str(fake_path), timeout=4)
    dev.keepalive()
    dev.keepalive()
    assert fake_path.read_bytes() == b"\0\0"
    dev.abandon()


def test_keepalive_other_errors_are_raised(monkeypatch: pytest.MonkeyPatch, fake_path: Path) -> None:
    use(monkeypatch, FakeDriver(keepalive_errno=errno.EIO))
    dev = WatchdogDevice.open(str(fake_path), timeout=4)
    with pytest.raises(DeviceError):
        dev.keepalive()
    dev.abandon()


def test_disarm_writes_magic_close_and_closes(monkeypatch: pytest.MonkeyPatch, fake_path: Path) -> None:
    use(monkeypatch, FakeDriver())
    dev = WatchdogDevice.open(str(fake_path), timeout=4)
    fd = dev.fileno()
    dev.disarm()
    assert dev.closed and fake_path.read_bytes() == b"V"
    with pytest.raises(OSError):
        os.fstat(fd)
    with pytest.raises(DeviceError, match="closed"):
        dev.keepalive()
    with pytest.raises(DeviceError, match="closed"):
        dev.disarm()


def test_abandon_closes_without_magic_close(monkeypatch: pytest.MonkeyPatch, fake_path: Path) -> None:
    use(monkeypatch, FakeDriver())
    dev = WatchdogDevice.open(str(fake_path), timeout=4)
    dev.keepalive()
    dev.abandon()
    assert dev.closed and fake_path.read_bytes() == b""


def test_no_implicit_disarm(monkeypatch: pytest.MonkeyPatch, fake_path: Path) -> None:
    # no __del__, no context manager: dropping the object never writes "V"
    assert not hasattr(WatchdogDevice, "__del__")
    assert not hasattr(WatchdogDevice, "__exit__")
    use(monkeypatch, FakeDriver())
    dev = WatchdogDevice.open(str(fake_path), timeout=4)
    fd = dev.fileno()
    del dev
    assert fake_path.read_bytes() == b""
    os.close(fd)
    device._open_paths.discard(os.path.realpath(fake_path))


def test_one_opener_per_path_in_a_process(monkeypatch: pytest.MonkeyPatch, fake_path: Path) -> None:
    use(monkeypatch, FakeDriver())
    dev = WatchdogDevice.open(str(fake_path), timeout=4)
    try:
        with pytest.raises(DeviceBusy, match="already open in this process"):
            WatchdogDevice.open(str(fake_path), timeout=4)
        problem = device_problem(str(fake_path))
        assert problem is not None  # a regular file here, but the point is it is not "usable"
    finally:
        dev.disarm()
    again = WatchdogDevice.open(str(fake_path), timeout=4)
    again.disarm()


def test_open_error_after_open_disarms_and_releases(monkeypatch: pytest.MonkeyPatch, fake_path: Path) -> None:
    class NoGetTimeout(FakeDriver):
        def ioctl(self, fd: int, request: int, arg: bytearray, mutate: bool = True) -> int:
            if request == WDIOC_GETTIMEOUT:
                raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP))
            return super().ioctl(fd, request, arg, mutate)

    use(monkeypatch, NoGetTimeout())
    with pytest.raises(DeviceError, match="timeout is unknown"):
        WatchdogDevice.open(str(fake_path), timeout=4)
    # the half-opened device was ended with the magic close, and the path is free again
    assert fake_path.read_bytes() == b"V"
    assert os.path.realpath(fake_path) not in device._open_paths
