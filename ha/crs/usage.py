"""Node usage of the ``static`` and ``dynamic`` schedulers (BEHAVIOUR.md §5.10).

Both keep, per online node, the sids assigned to it (like ``BasicUsage``, for
the counting fallback) and the node's CPU/memory columns:

* ``static``: configured node capacity; every assigned service counts as fully
  started on each node it is assigned to (current and target): cpu += its
  maxcpu (the node's maxcpu when the service's is 0), mem += its maxmem.
* ``dynamic``: measured node stats, which already hold the load of running
  guests. A service that is not running yet (*starting*) is charged "as
  started" (maxcpu/maxmem) on its nodes, for start scoring only; imbalance and
  balancing use the measured stats as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from ha.crs.stats import DYNAMIC, STATIC, NodeStats, ServiceStats
from ha.crs.topsis import (
    alternative,
    imbalance,
    node_load,
    start_scores,
    topsis_scores,
    trunc15,
)
from ha.errors import HaError
from ha.records import ServiceData
from ha.states import ServiceState
from ha.usage import CURRENT_ONLY, used_nodes

S = ServiceState
Log = Callable[[str, str], None]


class UsageError(HaError):
    """Stats missing or unusable: the caller logs it and falls back (§5.10)."""


@dataclass(slots=True, frozen=True)
class BalanceCandidate:
    """A stationary bundle (§5.12): its leader, the node it is on, its members and possible targets."""

    leader: str
    source: str
    members: tuple[str, ...]
    targets: tuple[str, ...]


@dataclass(slots=True, frozen=True)
class BalancingMigration:
    sid: str
    source: str
    target: str
    imbalance: float  # after the move, truncated to 15 decimal digits


class LoadUsage:
    """The ``static`` (default) or ``dynamic`` usage of one round."""

    def __init__(
        self,
        mode: str,
        node_stats: Mapping[str, NodeStats],
        service_stats: Mapping[str, ServiceStats],
        log: Log,
    ) -> None:
        if mode not in (STATIC, DYNAMIC):
            raise UsageError(f"unknown load scheduler mode '{mode}'")
        self.mode = mode
        self._node_stats = node_stats
        # a snapshot: a charge is undone by recomputing it from these stats (see _charge_of)
        self._service_stats = dict(service_stats)
        self._log = log
        self.nodes: dict[str, set[str]] = {}
        self._order: list[str] = []
        self._maxcpu: dict[str, float] = {}
        self._maxmem: dict[str, float] = {}
        # static: all assigned services started; dynamic: measured
        self._cpu: dict[str, float] = {}
        self._mem: dict[str, float] = {}
        # dynamic only: what starting services add for start scoring
        self._start_cpu: dict[str, float] = {}
        self._start_mem: dict[str, float] = {}
        # sid -> the nodes it is assigned to, and the nodes it is charged on in charge
        # order (a node may repeat). One-node values are shared per node (_one_set,
        # _one_tuple): recomputing the usage allocates nothing per service.
        self._where: dict[str, frozenset[str]] = {}
        self._charged: dict[str, tuple[str, ...]] = {}
        self._one_set: dict[str, frozenset[str]] = {}
        self._one_tuple: dict[str, tuple[str]] = {}

    # -- nodes ------------------------------------------------------------------------

    def add_node(self, node: str) -> None:
        if node in self.nodes:
            return
        st = self._node_stats.get(node)
        if st is None:
            raise UsageError(f"no {self.mode} node stats for node '{node}'")
        if not st.maxcpu > 0 or not st.maxmem > 0:
            raise UsageError(f"{self.mode} node stats of node '{node}' have no CPUs or no memory")
        self.nodes[node] = set()
        self._order = sorted(self.nodes)
        self._maxcpu[node] = float(st.maxcpu)
        self._maxmem[node] = float(st.maxmem)
        self._cpu[node] = float(st.cpu) if self.mode == DYNAMIC else 0.0
        self._mem[node] = float(st.mem) if self.mode == DYNAMIC else 0.0
        self._start_cpu[node] = 0.0
        self._start_mem[node] = 0.0
        self._one_set[node] = frozenset((node,))
        self._one_tuple[node] = (node,)

    def contains_node(self, node: str | None) -> bool:
        return node is not None and node in self.nodes

    def list_nodes(self) -> list[str]:
        return list(self._order)

    # -- services -----------------------------------------------------------------------

    def _stats(self, sid: str) -> ServiceStats:
        st = self._service_stats.get(sid)
        if st is None:
            raise UsageError(f"no {self.mode} service stats for '{sid}'")
        return st

    def _charge_of(self, node: str, st: ServiceStats) -> tuple[float, float]:
        """(cpu, mem) a service adds "as started" to ``node``: its maxcpu (the node's when 0), its maxmem."""
        return (float(st.maxcpu) if st.maxcpu else self._maxcpu[node]), float(st.maxmem)

    def _assign(self, sid: str, node: str, st: ServiceStats, charge: bool) -> None:
        """Put ``sid`` on ``node``; with ``charge`` count it as started there (§5.10)."""
        self.nodes[node].add(sid)
        where = self._where.get(sid)
        if where is None:
            self._where[sid] = self._one_set[node]
        elif node not in where:
            self._where[sid] = where | self._one_set[node]
        if not charge:
            return
        cpu, mem = self._charge_of(node, st)
        if self.mode == STATIC:
            self._cpu[node] += cpu
            self._mem[node] += mem
        else:
            self._start_cpu[node] += cpu
            self._start_mem[node] += mem
        charged = self._charged.get(sid)
        self._charged[sid] = self._one_tuple[node] if charged is None else (*charged, node)

    def add_service_usage_to_node(self, node: str, sid: str) -> bool:
        """Count ``sid`` as started on ``node`` (a placement decided this round)."""
        if node not in self.nodes:
            return False
        try:
            st = self._stats(sid)
        except UsageError as e:
            self._log("warning", f"unable to add service '{sid}' - {e}")
            return False
        # dynamic: a service moved to a node is not running there yet
        self._assign(sid, node, st, True)
        return True

    def add_service_usage(
        self, sid: str, state: str, node: str | None, target: str | None, running: bool = False
    ) -> None:
        current, tgt = used_nodes(state, node, target, self.nodes)
        if current is None and tgt is None:
            return
        # §5.10: running = (started and confirmed running) or (another state with a current node)
        is_running = running if state == S.STARTED else current is not None
        if current is None:
            current, tgt = tgt, None
        assert current is not None
        try:
            st = self._stats(sid)
        except UsageError as e:
            self._log("warning", f"unable to add service '{sid}' - {e}")
            return
        charge = self.mode == STATIC or not is_running
        self._assign(sid, current, st, charge)
        if tgt is not None:
            self._assign(sid, tgt, st, charge)

    def add_services(self, ss: Mapping[str, ServiceData]) -> None:
        """``add_service_usage`` of every service of ``ss``, in sorted sid order (the columns'
        sums run in that order).

        The common case is inlined, same steps as ``_assign``: a service with stats on one
        online node (``started`` and the other current-only states). A round adds every service.
        """
        nodes, where, charged = self.nodes, self._where, self._charged
        one_set, one_tuple, maxcpu, stats = self._one_set, self._one_tuple, self._maxcpu, self._service_stats
        static = self.mode == STATIC
        cpu_col, mem_col = (self._cpu, self._mem) if static else (self._start_cpu, self._start_mem)
        for sid in sorted(ss):
            sd = ss[sid]
            state, node = sd.state, sd.node
            st = stats.get(sid)
            if state not in CURRENT_ONLY or node not in nodes or st is None or sid in where:
                self.add_service_usage(sid, state, node, sd.target, sd.running)
                continue
            nodes[node].add(sid)
            where[sid] = one_set[node]
            # §5.10: only a started service can be not running; dynamic charges only those
            if static or (state == S.STARTED and not sd.running):
                cpu_col[node] += float(st.maxcpu) if st.maxcpu else maxcpu[node]
                mem_col[node] += float(st.maxmem)
                charged[sid] = one_tuple[node]

    def add_guest_usage(self, sid: str, state: str, node: str, running: bool) -> None:
        """A guest the HA stack does not manage (from the stats source), as it is."""
        self.add_service_usage(sid, state, node, None, running)

    def remove_service_usage(self, sid: str) -> None:
        for n in self._where.pop(sid, ()):
            self.nodes[n].discard(sid)
        charged = self._charged.pop(sid, ())
        if not charged:
            return
        st = self._service_stats[sid]  # it was charged: it has stats
        for n in charged:
            cpu, mem = self._charge_of(n, st)
            if self.mode == STATIC:
                self._cpu[n] -= cpu
                self._mem[n] -= mem
            else:
                self._start_cpu[n] -= cpu
                self._start_mem[n] -= mem

    # -- scoring ------------------------------------------------------------------------

    def _count_scores(self) -> dict[str, float]:
        return {n: float(len(sids)) for n, sids in self.nodes.items()}

    def score_nodes_to_start_service(self, sid: str) -> dict[str, float]:
        """-TOPSIS score per node (lower is better) with ``sid`` added as started to that node.

        On failure: log and count services per node instead (§5.10).
        """
        try:
            return self._topsis_start_scores(sid)
        except (UsageError, ArithmeticError) as e:
            self._log(
                "err", f"unable to score nodes according to {self.mode} usage for service '{sid}' - {e}"
            )
            return self._count_scores()

    def _topsis_start_scores(self, sid: str) -> dict[str, float]:
        st = self._stats(sid)
        order = self._order
        base_cpu, start_cpu, base_mem, start_mem = self._cpu, self._start_cpu, self._mem, self._start_mem
        cpu = [base_cpu[n] + start_cpu[n] for n in order]
        mem = [base_mem[n] + start_mem[n] for n in order]
        maxcpu = [self._maxcpu[n] for n in order]
        maxmem = [self._maxmem[n] for n in order]
        cpu_loads = [c / m for c, m in zip(cpu, maxcpu, strict=True)]
        mem_loads = [c / m for c, m in zip(mem, maxmem, strict=True)]
        # the service "as started" on each node: its maxcpu (the node's when 0), its maxmem
        if st.maxcpu:
            add_cpu = float(st.maxcpu)
            new_cpu = [(c + add_cpu) / m for c, m in zip(cpu, maxcpu, strict=True)]
        else:
            new_cpu = [(c + m) / m for c, m in zip(cpu, maxcpu, strict=True)]
        add_mem = float(st.maxmem)
        new_mem = [(c + add_mem) / m for c, m in zip(mem, maxmem, strict=True)]
        scores = start_scores(cpu_loads, mem_loads, new_cpu, new_mem)
        return {n: -s for n, s in zip(order, scores, strict=True)}

    # -- imbalance and balancing (§5.12) --------------------------------------------------

    def _loads(self, cpu: Iterable[float], mem: Iterable[float]) -> list[float]:
        return [
            node_load(c, self._maxcpu[n], m, self._maxmem[n])
            for n, c, m in zip(self._order, cpu, mem, strict=True)
        ]

    def imbalance(self) -> float:
        """Coefficient of variation of the node loads (static: all services started; dynamic: measured)."""
        try:
            return imbalance(self._loads(self._base_cpu(), self._base_mem()))
        except ArithmeticError as e:
            self._log("warning", f"unable to calculate {self.mode} node imbalance - {e}")
            return 0.0

    def _base_cpu(self) -> list[float]:
        return [self._cpu[n] for n in self._order]

    def _base_mem(self) -> list[float]:
        return [self._mem[n] for n in self._order]

    def _move_stats(self, sid: str, source: str) -> tuple[float, float]:
        if self.mode == STATIC:
            # what the service was charged on its node (its maxcpu, or the node's when it is 0)
            if source in self._charged.get(sid, ()):
                return self._charge_of(source, self._service_stats[sid])
            raise UsageError(f"service '{sid}' is not counted on node '{source}'")
        st = self._stats(sid)
        return float(st.cpu), float(st.mem)

    def select_best_balancing_migration(
        self, candidates: list[BalanceCandidate], method: str
    ) -> BalancingMigration | None:
        """The migration that improves the balance most (§5.10 balancing migration scoring)."""
        try:
            return self._select(candidates, method)
        except (UsageError, ArithmeticError) as e:
            self._log("warning", f"unable to score best balancing migration - {e}")
            return None

    def _select(self, candidates: list[BalanceCandidate], method: str) -> BalancingMigration | None:
        index = {n: i for i, n in enumerate(self._order)}
        base_cpu = self._base_cpu()
        base_mem = self._base_mem()
        moves: list[tuple[BalanceCandidate, str, list[float], list[float]]] = []
        for cand in candidates:
            if any(sid not in self._where or self._where[sid] != {cand.source} for sid in cand.members):
                raise UsageError(f"resource bundle of '{cand.leader}' is not stationary on '{cand.source}'")
            mcpu = 0.0
            mmem = 0.0
            for sid in cand.members:
                c, m = self._move_stats(sid, cand.source)
                mcpu += c
                mmem += m
            src = index[cand.source]
            for target in cand.targets:
                dst = index[target]
                cpu = base_cpu.copy()
                mem = base_mem.copy()
                cpu[src] = max(0.0, cpu[src] - mcpu)
                mem[src] = max(0.0, mem[src] - mmem)
                cpu[dst] += mcpu
                mem[dst] += mmem
                moves.append((cand, target, cpu, mem))
        if not moves:
            return None
        if method == "topsis":
            alts = [
                alternative(
                    [c / self._maxcpu[n] for n, c in zip(self._order, cpu, strict=True)],
                    [m / self._maxmem[n] for n, m in zip(self._order, mem, strict=True)],
                )
                for _, _, cpu, mem in moves
            ]
            scores = topsis_scores(alts)
            best = max(range(len(moves)), key=lambda i: (scores[i], -i))
            cand, target, cpu, mem = moves[best]
            return BalancingMigration(
                cand.leader, cand.source, target, trunc15(imbalance(self._loads(cpu, mem)))
            )
        scored = [
            (trunc15(imbalance(self._loads(cpu, mem))), cand.leader, cand.source, target)
            for cand, target, cpu, mem in moves
        ]
        imb, leader, source, target = min(scored)
        return BalancingMigration(leader, source, target, imb)
