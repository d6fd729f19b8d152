"""Simulated resources ``vm``, ``ct`` and the failing ``fa`` (BEHAVIOUR.md §9.6).

Running state lives in the hardware's per-node table; a service runs on a
node only by that table, independent of its configured node.
"""

from __future__ import annotations

import re
from typing import Protocol

from ha.config.resources import ResourceConfig
from ha.env import Env

# Simulated operation costs, in virtual seconds of the daemon's loop budget (not of
# the clock): they only matter for the reference's "loop take too long" abort.
START_COST = 2
STOP_COST = 2
MIGRATE_COST = 2


class World(Protocol):
    """What the simulated resources need of the simulated cluster (sim/hardware.py)."""

    fa_tries: dict[str, dict[str, int]]

    def is_running(self, node: str, sid: str) -> bool: ...

    def set_running(self, node: str, sid: str, running: bool) -> None: ...

    def remove_running_entry(self, node: str, sid: str) -> None: ...

    def change_service_location(self, sid: str, current: str, new: str) -> None: ...

    def service_lock(self, sid: str) -> str | None: ...

    def set_service_lock(self, sid: str, lock: str | None) -> None: ...


class SimResource:
    """Common behaviour of the simulated guest types."""

    type_name = "vm"

    def __init__(self, world: World) -> None:
        self.world = world

    def locked(self, env: Env, sid: str) -> str | None:
        return self.world.service_lock(sid)

    def check_running(self, env: Env, sid: str, conf: ResourceConfig) -> bool:
        return self.world.is_running(env.nodename(), sid)

    def start(self, env: Env, sid: str, conf: ResourceConfig) -> None:
        lock = self.locked(env, sid)
        if lock is not None:
            env.log("err", f"service '{sid}' locked ({lock}), unable to start!")
            return
        env.sleep(START_COST)
        self.world.set_running(env.nodename(), sid, True)

    def shutdown(self, env: Env, sid: str, conf: ResourceConfig, timeout: int | None) -> None:
        lock = self.locked(env, sid)
        if lock is not None:
            env.log("err", f"service '{sid}' locked ({lock}), unable to shutdown!")
            return
        env.sleep(STOP_COST)
        self.world.set_running(env.nodename(), sid, False)

    def migrate(self, env: Env, sid: str, conf: ResourceConfig, target: str, online: bool) -> bool:
        hw = self.world
        node = env.nodename()
        cmd = "migrate" if online else "relocate"
        env.log("info", f"service {sid} - start {cmd} to node '{target}'")
        lock = self.locked(env, sid)
        if lock is not None:
            env.log("err", f"service '{sid}' locked ({lock}), unable to {cmd}!")
            return False
        if not online and self.check_running(env, sid, conf):
            env.log("info", f"stopping service {sid} (relocate)")
            self.shutdown(env, sid, conf, None)
            env.log("info", f"service status {sid} stopped")
        else:
            env.sleep(MIGRATE_COST)
        hw.change_service_location(sid, node, target)
        env.log("info", f"service {sid} - end {cmd} to node '{target}'")
        # the source no longer has it; the target does not run it yet (§11.2 quirk)
        hw.remove_running_entry(node, sid)
        return True

    def remove_locks(self, env: Env, sid: str, locks: list[str]) -> str | None:
        hw = self.world
        lock = hw.service_lock(sid)
        if lock is not None and lock in locks:
            hw.set_service_lock(sid, None)
            return lock
        return None


class VirtVM(SimResource):
    type_name = "vm"


class VirtCT(SimResource):
    type_name = "ct"

    def migrate(self, env: Env, sid: str, conf: ResourceConfig, target: str, online: bool) -> bool:
        if online and self.check_running(env, sid, conf):
            env.log("warn", "unable to live migrate running container, fallback to relocate")
            online = False
        return super().migrate(env, sid, conf, target, online)


_FA_ID = re.compile(r"^\d(\d)(\d)(\d)?(\d)?(\d)?")


def decode_fa(name: str) -> tuple[int, int, int, int, int]:
    """fa:abcdef -> (start failures, migrate failures, cannot stop, exists, limit to node)."""
    m = _FA_ID.match(name)
    if not m:
        return 0, 0, 0, 1, 0
    g = m.groups()
    return (
        int(g[0]),
        int(g[1]),
        int(g[2]) if g[2] is not None else 0,
        int(g[3]) if g[3] is not None else 1,
        int(g[4]) if g[4] is not None else 0,
    )


class VirtFail(SimResource):
    """A resource that fails on purpose, as encoded in its id (§9.6)."""

    type_name = "fa"

    def _limited(self, env: Env, limit: int) -> bool:
        return limit == 0 or env.nodename() == f"node{limit}"

    def start(self, env: Env, sid: str, conf: ResourceConfig) -> None:
        fails, _, _, _, limit = decode_fa(conf.name)
        tries = self.world.fa_tries["start"]
        if self._limited(env, limit):
            tries[sid] = tries.get(sid, 0) + 1
            if fails >= tries[sid]:
                return
        tries[sid] = 0
        super().start(env, sid, conf)

    def shutdown(self, env: Env, sid: str, conf: ResourceConfig, timeout: int | None) -> None:
        _, _, cannot_stop, _, _ = decode_fa(conf.name)
        if cannot_stop:
            return
        super().shutdown(env, sid, conf, timeout)

    def migrate(self, env: Env, sid: str, conf: ResourceConfig, target: str, online: bool) -> bool:
        _, fails, _, _, limit = decode_fa(conf.name)
        tries = self.world.fa_tries["migrate"]
        if self._limited(env, limit):
            tries[sid] = tries.get(sid, 0) + 1
            if fails >= tries[sid]:
                return False
        tries[sid] = 0
        return super().migrate(env, sid, conf, target, online)


def make_plugins(world: World) -> dict[str, SimResource]:
    return {"vm": VirtVM(world), "ct": VirtCT(world), "fa": VirtFail(world)}
