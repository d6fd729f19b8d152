"""The real thing: ``ha-watchdog --driver device`` on an emulated i6300ESB watchdog in a QEMU guest.

One guest (tests/fence/guest.py: the host's Debian kernel, TCG, ``-device
i6300esb -action watchdog=poweroff``, the host's root read-only over 9p) runs
the project's own code on the device:

0. ``fence.device`` directly: ``device_problem``, open (identity, options,
   timeout read back), the one-opener guard and the kernel's EBUSY through
   the ``/dev/watchdog0`` alias, a timeout the device refuses
   (``timeout_note``), keepalive and the magic close;
1. ``ha-watchdog`` armed by a pet client (a pet every 0.5 s) keeps the guest
   up for more than 3x the device timeout;
2. the client's magic close ``V`` disarms it (``ha-watchdog`` writes ``V`` to
   the device): the guest stays up for more than 2x the timeout after the
   last pet;
3. armed again, the pet client is SIGKILLed: ``ha-watchdog`` fires and exits
   without the magic close, the device expires and QEMU powers the guest off
   about one timeout after the last pet (QMP reports the WATCHDOG event).

Timing is read on the host: every console line carries the host's monotonic
time of arrival. No skip: a host without QEMU, the kernel or busybox fails
(``make deps`` installs them).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from tests.fence.guest import Guest, Line

pytestmark = pytest.mark.timeout(240)

CHECKOUT = str(Path(__file__).resolve().parents[2])
TIMEOUT = 4  # the device timeout (seconds) and ha-watchdog's --timeout
PET_EVERY = 0.5
ARMED_FOR = 3 * TIMEOUT + 1.0  # phase 1: pet this long (> 3x the timeout)
IDLE_FOR = 2 * TIMEOUT + 1.0  # phase 2: disarmed, no pets, this long (> 2x the timeout)
REARMED_FOR = 2.0  # phase 3: pet this long before the client is killed
# phase 3: QEMU must exit within TIMEOUT + SLACK of the last pet (and not before TIMEOUT - EARLY)
SLACK = 1.5
EARLY = 0.5

# The pet client: the node daemon's side of the ha-watchdog socket protocol.
PET_CLIENT = r"""
import socket, sys, time

path, pet_every, armed_for, idle_for, rearmed_for = sys.argv[1], *map(float, sys.argv[2:6])
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(path)
s.setblocking(False)
status = b""
n = 0


def say(*a):
    print("CLIENT", *a, f"g={time.monotonic():.3f}", flush=True)


def drain():
    global status
    try:
        data = s.recv(4096)
    except BlockingIOError:
        return
    if not data:
        say("ha-watchdog closed the connection")
        sys.exit(1)
    if data[-1:] != status:
        status = data[-1:]
        say("STATUS", status.decode())


def idle(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        drain()
        time.sleep(min(0.05, max(0.0, end - time.monotonic())))


def pet():
    global n
    s.send(b"\0")
    n += 1
    say("PET", n)


def pet_for(seconds, then=None):
    end = time.monotonic() + seconds
    while True:
        pet()
        if time.monotonic() >= end:
            if then:
                say(then)
                then = None
            else:
                return
        idle(pet_every)


say("PHASE arm")
pet_for(armed_for)
s.send(b"V")
say("DISARM sent")
idle(idle_for)
say("PHASE rearm")
pet_for(rearmed_for, then="READY-TO-DIE")
while True:  # until SIGKILLed
    pet()
    idle(pet_every)
"""

# The orchestrator inside the guest: part 0 (fence.device directly), then ha-watchdog and the client.
SCENARIO = r"""
import os, signal, subprocess, sys, time

from fence.device import DeviceBusy, WatchdogDevice, device_problem

T, pet_every, armed_for, idle_for, rearmed_for = int(sys.argv[1]), *sys.argv[2:6]
PY = sys.executable


def say(*a):
    print("SCN", *a, flush=True)


# 0. fence.device on the real device
say("problem:", device_problem("/dev/watchdog"))
dev = WatchdogDevice.open("/dev/watchdog", T)
say(f"opened: identity={dev.identity!r} timeout={dev.timeout} note={dev.timeout_note}",
    f"options={dev.options:#x}")
try:
    WatchdogDevice.open("/dev/watchdog", T)
    say("guard: MISSING")
except DeviceBusy as e:
    say("guard:", e)
try:
    WatchdogDevice.open("/dev/watchdog0", T)
    say("ebusy: MISSING")
except DeviceBusy as e:
    say("ebusy:", e)
say("problem-held:", device_problem("/dev/watchdog"))
dev.keepalive()
dev.disarm()
dev = WatchdogDevice.open("/dev/watchdog", 100000)
say(f"refused: timeout={dev.timeout} note={dev.timeout_note}")
dev.disarm()
say("direct: done")

# 1-3. ha-watchdog and a pet client
wd = subprocess.Popen([PY, "-m", "cli.watchdog", "--node", "g1", "--socket", "/run/wd.sock",
                       "--timeout", str(T), "--driver", "device", "--device", "/dev/watchdog"])
end = time.monotonic() + 30
while not os.path.exists("/run/wd.sock"):
    if wd.poll() is not None or time.monotonic() > end:
        say("ha-watchdog did not come up, rc", wd.poll())
        sys.exit(2)
    time.sleep(0.05)
client = subprocess.Popen(
    [PY, "/run/job/pet.py", "/run/wd.sock", pet_every, armed_for, idle_for, rearmed_for],
    stdout=subprocess.PIPE, text=True,
)
for line in client.stdout:
    print(line, end="", flush=True)
    if "READY-TO-DIE" in line:
        break
os.kill(client.pid, signal.SIGKILL)
say(f"client SIGKILLed g={time.monotonic():.3f}")
client.wait()
try:
    say("ha-watchdog exited", wd.wait(timeout=3 * T))
except subprocess.TimeoutExpired:
    say("ha-watchdog still running")
time.sleep(3 * T)
say("STILL-ALIVE: the watchdog did not power the guest off")
"""


def between(lines: list[Line], start: float, end: float) -> list[Line]:
    return [line for line in lines if start <= line.t <= end]


def test_ha_watchdog_on_an_i6300esb_in_qemu() -> None:
    t0 = time.monotonic()
    guest = Guest(
        argv=[
            sys.executable,
            "/run/job/scenario.py",
            *map(str, (TIMEOUT, PET_EVERY, ARMED_FOR, IDLE_FOR, REARMED_FOR)),
        ],
        cwd=CHECKOUT,
        env={"PYTHONPATH": CHECKOUT},
        files={"scenario.py": SCENARIO, "pet.py": PET_CLIENT},
        modules=("watchdog", "i6300esb"),
    )
    with guest:
        try:
            ready = guest.wait_for(r"GUEST: ready", timeout=60)
            boot = ready.t - guest.started

            # 0. fence.device directly
            guest.wait_for(r"SCN direct: done", timeout=30)
            assert guest.matching(r"SCN problem: None$"), guest.console()
            opened = guest.matching(r"SCN opened: ")[0].text
            assert f"identity='i6300ESB timer' timeout={TIMEOUT} note=None" in opened, opened
            assert "already open in this process" in guest.matching(r"SCN guard: ")[0].text
            assert "another process holds /dev/watchdog0" in guest.matching(r"SCN ebusy: ")[0].text
            assert "already open in this process" in guest.matching(r"SCN problem-held: ")[0].text
            refused = guest.matching(r"SCN refused: ")[0].text
            assert f"timeout={TIMEOUT} note=the device refused timeout 100000s" in refused, refused

            # the whole story, bounded: boot + three phases + the expiry, with room for slow Python starts
            budget = 30 + ARMED_FOR + IDLE_FOR + REARMED_FOR + TIMEOUT + SLACK
            exited = guest.wait_exit(timeout=budget)
        finally:
            console = guest.console()
            print(console)
    total = time.monotonic() - t0

    pets = guest.matching(r"CLIENT PET \d+")
    disarm = guest.matching(r"CLIENT DISARM sent")
    rearm = guest.matching(r"CLIENT PHASE rearm")
    # without its "SCN " prefix: the kernel's "watchdog did not stop!" (ha-watchdog closing the
    # device armed, at that very moment) can cut into the line on the shared serial console
    killed = guest.matching(r"client SIGKILLed g=")
    assert pets and disarm and rearm and killed, console
    assert guest.matching(
        r"ha-watchdog\[g1\]: device /dev/watchdog \(i6300ESB timer\) opened, timeout 4s$"
    ), console
    assert not guest.matching(r"STILL-ALIVE|GUEST-EXIT|GUEST-FAIL|Traceback"), console

    # 1. armed and petted for more than 3x the timeout: the guest stayed up (it went on talking)
    phase1 = between(pets, 0, disarm[0].t)
    armed_span = phase1[-1].t - phase1[0].t
    assert armed_span >= 3 * TIMEOUT, (armed_span, console)
    assert guest.matching(r"CLIENT STATUS a"), console

    # 2. magic close: no pets for more than 2x the timeout after the last pet, the guest stayed up
    phase3 = between(pets, rearm[0].t, killed[0].t)
    quiet = phase3[0].t - phase1[-1].t
    assert quiet >= 2 * TIMEOUT, (quiet, console)
    assert guest.matching(r"CLIENT STATUS d"), console
    assert guest.matching(r"ha-watchdog\[g1\]: magic close: disarmed"), console

    # 3. the petting process SIGKILLed: ha-watchdog fires, exits 3 without the magic close, the device
    # expires and QEMU powers off about one timeout after the last pet
    last_pet = max(line.t for line in pets)
    delay = exited - last_pet
    assert TIMEOUT - EARLY <= delay <= TIMEOUT + SLACK, (delay, console)
    assert guest.matching(r"ha-watchdog\[g1\]: FIRING: client disconnected while armed"), console
    assert guest.matching(r"SCN ha-watchdog exited 3"), console
    # the kernel saw exactly one close without the magic character, after the client's last words (the
    # magic closes of part 0 and phase 2 stopped the timer quietly). Compared by console order: the
    # orchestrator's own "SIGKILLed" line may well come after ha-watchdog's reaction.
    not_stopped = guest.matching(r"watchdog: watchdog0: watchdog did not stop!")
    last_words = guest.matching(r"CLIENT READY-TO-DIE")
    assert len(not_stopped) == 1 and last_words, console
    assert guest.lines.index(not_stopped[0]) > guest.lines.index(last_words[0]), console
    event = guest.event("WATCHDOG")
    assert event is not None and event[1]["data"]["action"] == "poweroff", (guest.events, console)
    fired = event[0] - last_pet

    print(
        f"\nboot to ready {boot:.2f}s; armed {armed_span:.2f}s, disarmed without pets {quiet:.2f}s; "
        f"device timeout {TIMEOUT}s: WATCHDOG event {fired:.2f}s and QEMU exit {delay:.2f}s "
        "after the last pet; "
        f"test total {total:.1f}s"
    )
