"""The simulator's node and service stats for the ``static``/``dynamic`` schedulers (BEHAVIOUR.md §9.2, §9.3).

* Static node stats: ``maxcpu``/``maxmem`` (bytes) of ``hardware_status``; a node
  without them makes the ``static`` init fail (the manager falls back to basic).
* Dynamic node stats: the same capacity (24 CPUs / 128 GiB when absent), with
  ``cpu``/``mem`` the sum of the dynamic usage of every configured service marked
  running in the table of its configured node.
* Static service stats: ``static_service_stats`` (sid -> ``{maxcpu, maxmem}``,
  bytes); without that file every configured service gets 4 CPUs / 4096 MiB.
* Dynamic service stats: ``dynamic_service_stats`` (sid -> ``{cpu, mem}``, bytes);
  without that file every sid of the static stats uses 2 CPUs / 2048 MiB. The
  usage of a service is its static stats merged with its dynamic ones.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ha.crs.stats import DYNAMIC, STATIC, GuestInfo, NodeStats, ServiceStats
from ha.errors import HaError, SimulationError

MIB = 1024 * 1024
DEFAULT_NODE_MAXCPU = 24
DEFAULT_NODE_MAXMEM = 131072 * MIB
DEFAULT_SERVICE_STATIC = {"maxcpu": 4, "maxmem": 4096 * MIB}
DEFAULT_SERVICE_DYNAMIC = {"cpu": 2, "mem": 2048 * MIB}


class StatsUnavailable(HaError):
    """The stats a scheduler needs are missing (the manager falls back to ``basic``)."""


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise SimulationError(f"{what}: expected a number, got '{value}'")
    try:
        n = float(value)
    except ValueError:
        raise SimulationError(f"{what}: expected a number, got '{value}'") from None
    if n < 0:
        raise SimulationError(f"{what}: must not be negative")
    return n


class SimStats:
    """Service stats as the scenario and the ``set-*-stats`` commands leave them."""

    def __init__(
        self,
        service_ids: list[str],
        static: Mapping[str, Mapping[str, Any]] | None,
        dynamic: Mapping[str, Mapping[str, Any]] | None,
    ) -> None:
        if static is None:
            static = {sid: DEFAULT_SERVICE_STATIC for sid in service_ids}
        self.static: dict[str, dict[str, float]] = {
            sid: {k: _number(v, f"static stats of '{sid}': {k}") for k, v in st.items()}
            for sid, st in static.items()
        }
        if dynamic is None:
            dynamic = {sid: DEFAULT_SERVICE_DYNAMIC for sid in self.static}
        self.dynamic: dict[str, dict[str, float]] = {
            sid: {k: _number(v, f"dynamic stats of '{sid}': {k}") for k, v in st.items()}
            for sid, st in dynamic.items()
        }

    # -- commands (§9.5) ------------------------------------------------------------------

    def service_added(self, sid: str) -> None:
        """``service add``: a new service gets the default static stats unless it has some."""
        self.static.setdefault(sid, dict(DEFAULT_SERVICE_STATIC))

    def service_deleted(self, sid: str) -> None:
        self.static.pop(sid, None)

    def set_stats(self, sid: str, kind: str, params: list[str]) -> None:
        """``set-static-stats [maxcpu N] [maxmem MiB]`` / ``set-dynamic-stats [cpu N] [mem MiB]``."""
        keys = ("maxcpu", "maxmem") if kind == STATIC else ("cpu", "mem")
        if len(params) % 2:
            raise SimulationError(f"sim_hardware_cmd: set-{kind}-stats expects key/value pairs")
        if kind == STATIC:
            entry = self.static.setdefault(sid, dict(DEFAULT_SERVICE_STATIC))
        else:
            entry = self.dynamic.setdefault(sid, dict(DEFAULT_SERVICE_DYNAMIC))
        for key, value in zip(params[::2], params[1::2], strict=True):
            if key not in keys:
                raise SimulationError(f"sim_hardware_cmd: set-{kind}-stats: unknown key '{key}'")
            n = _number(value, f"set-{kind}-stats {key}")
            entry[key] = n * MIB if key.endswith("mem") else n

    # -- what the Env reports ----------------------------------------------------------------

    def service_stats(self, mode: str, warn: Callable[[list[str]], None]) -> dict[str, ServiceStats]:
        """Every service with stats; ``warn`` gets the overcommitted ones (dynamic only)."""
        out: dict[str, ServiceStats] = {}
        over: list[str] = []
        for sid, st in self.static.items():
            maxcpu = st.get("maxcpu", 0.0)
            maxmem = st.get("maxmem", 0.0)
            if mode != DYNAMIC:
                out[sid] = ServiceStats(maxcpu, maxmem)
                continue
            dyn = self.dynamic.get(sid, {})
            cpu = dyn.get("cpu", 0.0)
            mem = dyn.get("mem", 0.0)
            if maxcpu and cpu > maxcpu:
                over.append(f"overcommitted cpu on '{sid}'")
            if mem > maxmem:
                over.append(f"overcommitted mem on '{sid}'")
            out[sid] = ServiceStats(maxcpu, maxmem, cpu, mem)
        if mode == DYNAMIC:
            warn(over)
        return out

    @staticmethod
    def node_capacity(node: str, extra: Mapping[str, Any], mode: str) -> tuple[float, float]:
        maxcpu = extra.get("maxcpu")
        maxmem = extra.get("maxmem")
        if mode == STATIC and (maxcpu is None or maxmem is None):
            raise StatsUnavailable(f"no maxcpu/maxmem for node '{node}' in hardware_status")
        return (
            _number(maxcpu if maxcpu is not None else DEFAULT_NODE_MAXCPU, f"maxcpu of node '{node}'"),
            _number(maxmem if maxmem is not None else DEFAULT_NODE_MAXMEM, f"maxmem of node '{node}'"),
        )

    def node_stats(
        self,
        mode: str,
        nodes: Mapping[str, Mapping[str, Any]],
        running: Mapping[str, Mapping[str, int]],
        service_nodes: Mapping[str, str],
        warn: Callable[[list[str]], None],
    ) -> dict[str, NodeStats]:
        if mode == STATIC:
            return {n: NodeStats(*self.node_capacity(n, extra, STATIC)) for n, extra in nodes.items()}
        usage = self.service_stats(DYNAMIC, lambda _msgs: None)
        cpu = dict.fromkeys(nodes, 0.0)
        mem = dict.fromkeys(nodes, 0.0)
        for sid, node in service_nodes.items():
            st = usage.get(sid)
            if st is not None and running.get(node, {}).get(sid):
                cpu[node] += st.cpu
                mem[node] += st.mem
        out = {}
        over: list[str] = []
        for n, extra in nodes.items():
            maxcpu, maxmem = self.node_capacity(n, extra, DYNAMIC)
            if cpu[n] > maxcpu:
                over.append(f"overcommitted cpu on '{n}'")
            if mem[n] > maxmem:
                over.append(f"overcommitted mem on '{n}'")
            out[n] = NodeStats(maxcpu, maxmem, cpu[n], mem[n])
        warn(over)
        return out


def guests(service_config: Mapping[str, tuple[str, str]]) -> dict[str, GuestInfo]:
    """Every configured service as the stats source lists it: ``running`` = requested ``started``."""
    return {sid: GuestInfo(node, state, state == "started") for sid, (node, state) in service_config.items()}
