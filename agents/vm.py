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
from agents.vmincoming import IncomingSide
from agents.vmqmp import GuestAnswer, MigrationError, Peer, PeerError, Phases, ping_guest, qmp
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


class VmPlugin(IncomingSide):
    """:class:`ha.env.ResourcePlugin` for ``vm:<vmid>`` services (processes handled as ``proc`` does)."""

    type_name = "vm"
    cgroup_prefix = "vm:"
    quick_check = False  # its check asks QEMU over QMP: on a worker
    # a running QEMU holds about 75 descriptors (70 eventfds of virtio-serial's queues, created when
    # the guest's driver starts them, at boot or at the ``cont`` after a live migration): grown from
    # 64 by the kernel at that ``cont``, the table cost QEMU 10-17 ms (agents/shspawn.py)
    fd_table = 256

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

    def migrate(self, env: Env, sid: str, conf: ResourceConfig, target: str, online: bool) -> bool:
        """``migrate``: live (:meth:`migrate_live`); ``relocate``: stop here, the target boots it again."""
        if online:
            return self.migrate_live(env, sid, conf, target)
        return self._relocate(env, sid, conf, target)

    def _relocate(self, env: Env, sid: str, conf: ResourceConfig, target: str) -> bool:
        if self.check_running(env, sid, conf):
            env.log("info", f"stopping service {sid} (relocate to node '{target}')")
            self.shutdown(env, sid, conf, None)
        return not self.check_running(env, sid, conf)

    # -- live migration: the source (issue #12; the QMP driver is agents/vmqmp.py) ----------------

    def migrate_live(
        self, env: Env, sid: str, conf: ResourceConfig, target: str, commit: Callable[[], None] | None = None
    ) -> bool:
        """Live-migrate the guest to ``target``; True once the target holds it (and runs it).

        ``commit`` moves the service's location to the target (the live runtime's
        :class:`actors.env.MovingPlugin` passes it; it raises when the move failed).

        The order, and why (SAFETY: never two running copies of the guest):

        1. the target launches its QEMU ``-incoming defer -S`` (request ``listen``,
           in a thread while this node's QMP session is set up);
        2. QMP ``migrate`` here; QEMU pauses this copy (``postmigrate``) before it
           reports ``completed``, and the target's copy stays paused (``-S``):
           from here on neither copy runs;
        3. ``commit``: the location names the target (run inside the migration's
           QMP session, :func:`agents.vmqmp.migrate` ``handover``);
        4. QMP ``quit`` here, in that same session: this copy can never be
           resumed again;
        5. only then the target resumes its copy (request ``resume``; it checks
           that the location names it), still in that session (``after_quit``):
           its close is not on the guest's pause.

        Any failure before 3 (no answer, QEMU failed, time-out: ``migrate_cancel``)
        kills the target's copy (request ``abort``; its node also kills an
        incoming QEMU never resumed within ``incoming_deadline``, and a start
        there never adopts one) and leaves the guest running here: False, the
        service stays here (BEHAVIOUR.md §3.3.3 and §2.2: a failed migrate is
        ERROR, the service goes back to ``started`` on its node; success is "the
        guest's config no longer on the source", our step 3). After 3 the target
        owns the service: True, even if step 5 failed (the target's LRM then
        boots the guest afresh).
        """
        node, name = env.nodename(), conf.name
        st = self.current(node, name)
        if st is None or not self.any_alive(st):
            return True  # nothing runs here: the target starts it, as after a relocation
        peer = self.peer
        if peer is None:
            env.log(
                "info", f"service {sid}: no way to reach node '{target}' for a live migration, relocating"
            )
            return self._relocate(env, sid, conf, target)
        env.log("info", f"service {sid}: live migration to node '{target}'")
        t0 = time.monotonic()
        phases = Phases()

        def listen() -> str:
            sent = time.time()
            reply = peer(target, {"sid": sid, "action": "listen"}, 20.0)
            listened.append(time.monotonic())
            target_phases = reply.get("phases")
            if isinstance(target_phases, dict):
                phases.add("target_", target_phases)
            phases.legs("peer_listen", sent, time.time(), reply.get("span"))
            phases.add("", {"listen_rtt": round((listened[0] - t0) * 1000, 1)})
            return str(reply["uri"])

        listened: list[float] = []
        moved: list[float] = []  # when the hand-over began, once the location moved (commit succeeded)
        failed: list[Exception] = []

        def handover(done: vmqmp.MigrationResult) -> bool:
            began = time.monotonic()
            # SAFETY: both copies are paused now (source postmigrate, target -S); True: the source
            # QEMU quits in the migration's own QMP session, before the target's copy may run
            # (QEMU reports "completed" a moment before its main loop moves the stopped guest from
            # finish-migrate to postmigrate: both are stopped, and a completed one never restarts)
            if done.source_status not in ("postmigrate", "finish-migrate"):
                failed.append(MigrationError(f"the source QEMU is {done.source_status!r}, not stopped"))
                return False
            if commit is not None:
                try:
                    commit()
                except Exception as e:  # the location did not move: the guest stays here
                    failed.append(e)
                    return False
            phases.mark("commit")
            moved.append(began)
            return True

        resumed_at: list[float] = []

        def resume_target() -> None:
            """The target runs the guest: once, after the commit and this copy's quit."""
            if resumed_at:
                return
            try:
                sent = time.time()
                resumed = peer(target, {"sid": sid, "action": "resume"}, 10.0)
                if isinstance(resumed.get("phases"), dict):
                    phases.add("target_resume_", resumed["phases"])
                phases.legs("peer_resume", sent, time.time(), resumed.get("span"))
            except PeerError as e:
                env.log(
                    "err",
                    f"service {sid}: the guest did not resume on node '{target}' ({e}); it boots there again",
                )
            phases.mark("resume")
            resumed_at.append(time.monotonic())

        # the target's listen overlaps this node's QMP set-up (agents/vmqmp.py migrate); its resume
        # follows the commit and this copy's quit in the same QMP session
        res = vmqmp.migrate(
            self.qmp_path(node, name),
            listen,
            self.migrate_timeout,
            phases=phases,
            handover=handover,
            after_quit=resume_target,
        )
        ready_ms = ((listened[0] if listened else time.monotonic()) - t0) * 1000
        if res.status == "refused":
            env.log("err", f"service {sid}: node '{target}' cannot take the live migration: {res.error}")
            self._abort_target(env, sid, target, peer)
            return False
        if not moved:
            if failed:
                env.log(
                    "err",
                    f"service {sid}: migrated, but its location did not move ({failed[0]}); resuming it here",
                )
            else:
                env.log("err", f"service {sid}: live migration to node '{target}' {res.status}: {res.error}")
            self._abort_target(env, sid, target, peer)  # SAFETY: first gone there, then running here
            self._resume_here(env, sid, node, name)
            return False
        # the location names the target from here on: it owns the service, whatever happens next
        t_done = moved[0]
        if not res.completed:  # QMP trouble after the hand-over: the target still takes the guest
            env.log(
                "warning", f"service {sid}: after the hand-over to node '{target}': {res.status}: {res.error}"
            )
        if not res.quit_sent:
            # SAFETY: this copy quits before the target's may run (a postmigrate QEMU resumes only on `cont`)
            with contextlib.suppress(OSError, QMPError, TimeoutError):
                qmp(self.qmp_path(node, name), "quit", timeout=2.0)
            phases.mark("quit")
        resume_target()  # (done already when the quit went out in the migration's session)
        t_resumed = resumed_at[0]
        paused_ms = (t_resumed - t_done) * 1000 + (res.downtime_ms or 0)
        # the source QEMU was told to quit: its exit is waited for off the migration's path
        self._let_go(env, sid, node, name, st, t_resumed)
        env.log(
            "info",
            f"service {sid}: live migration phases (ms): {phases.text()} "
            f"wall_start={phases.wall:.3f} wall_end={time.time():.3f}",
        )
        env.log(
            "info",
            f"service {sid}: live migration to {target} done in {res.total_ms} ms, "
            f"downtime {res.downtime_ms} ms (QEMU); guest paused {paused_ms:.0f} ms, "
            f"{(t_resumed - t0) * 1000:.0f} ms in all (target QEMU ready after {ready_ms:.0f} ms)",
        )
        return True

    def _let_go(self, env: Env, sid: str, node: str, name: str, st: ProcState, since: float) -> None:
        """Wait (in a thread) for the migrated-away QEMU ``st`` to exit, then forget it; kill it after 5 s.

        The location names the target already and this copy was told to quit (it was
        stopped before: postmigrate). Until it is forgotten a start or a ``listen`` of the
        VM here waits for it (:meth:`_await_leaving`), so neither takes the leaving QEMU
        for a running copy, and no standby is launched beside it."""
        done = threading.Event()
        with self._incoming_lock:
            self._leaving[(node, name)] = done

        def wait() -> None:
            try:
                if procutil.poll_until(lambda: not self.any_alive(st), 5.0, first=0.002, cap=0.005):
                    self._forget(node, name, st)
                else:
                    self._terminate(env, sid, node, name, st, 0)
                gone_ms = (time.monotonic() - since) * 1000
                env.log("info", f"service {sid}: source QEMU gone {gone_ms:.0f} ms after the resume")
            finally:
                with self._incoming_lock:
                    self._leaving.pop((node, name), None)
                done.set()
                self._poke_standbys()  # the service left: this node may hold a standby of it now

        threading.Thread(target=wait, name=f"{node}/vm-{name}-gone", daemon=True).start()

    def _await_leaving(self, node: str, name: str) -> bool:
        """Wait until a QEMU of the VM that migrated away from here is gone; False if none was leaving.

        SAFETY: until then its state file names a live process: a start would take it
        for the running guest ("already running") while it exits."""
        done = self._leaving.get((node, name))
        if done is None:
            return False
        done.wait(5.0 + self.kill_wait + 2.0)
        return True

    def _abort_target(self, env: Env, sid: str, target: str, peer: Peer) -> None:
        try:
            peer(target, {"sid": sid, "action": "abort"}, 10.0)
        except PeerError as e:  # it kills the incoming QEMU itself after incoming_deadline
            env.log(
                "warning", f"service {sid}: node '{target}' did not confirm killing its incoming QEMU: {e}"
            )

    def _resume_here(self, env: Env, sid: str, node: str, name: str) -> None:
        """The guest runs here again after a failed migration (QEMU resumes it itself unless it completed).

        SAFETY: only called while the target's copy was never resumed (it never is before the commit)."""
        path = self.qmp_path(node, name)
        status = self._qmp_status(node, name, 5.0)
        if status in ("postmigrate", "paused", "finish-migrate"):
            with contextlib.suppress(MigrationError):
                vmqmp.qmp_calls(path, ("cont", None))
            status = self._qmp_status(node, name, 5.0)
        env.log(
            "info" if status == "running" else "err", f"service {sid}: guest {status or 'not answering'} here"
        )


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
