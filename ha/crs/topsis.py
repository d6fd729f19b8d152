"""TOPSIS scoring and the node imbalance of the load-aware schedulers (BEHAVIOUR.md §5.10).

Sums run left to right over the nodes in sorted name order (BEHAVIOUR.md §13:
that order reproduced the reference's float ties), so callers pass node
columns in that order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from functools import reduce
from itertools import accumulate
from operator import add

# criteria, all minimised: average CPU, highest CPU, average memory, highest memory
_RAW_WEIGHTS = (1.0, 2.0, 5.0, 10.0)
WEIGHTS = tuple(w / sum(_RAW_WEIGHTS) for w in _RAW_WEIGHTS)

Alternative = tuple[float, float, float, float]


def alternative(cpu_loads: Sequence[float], mem_loads: Sequence[float]) -> Alternative:
    """(1 + rms cpu load, 1 + max cpu load, 1 + rms mem load, 1 + max mem load); loads are fractions."""
    n = len(cpu_loads)
    sq_cpu = 0.0
    sq_mem = 0.0
    max_cpu = 0.0
    max_mem = 0.0
    for c in cpu_loads:
        sq_cpu += c * c
        max_cpu = max(max_cpu, c)
    for m in mem_loads:
        sq_mem += m * m
        max_mem = max(max_mem, m)
    if n == 0:
        return (1.0, 1.0, 1.0, 1.0)
    return (1.0 + math.sqrt(sq_cpu / n), 1.0 + max_cpu, 1.0 + math.sqrt(sq_mem / n), 1.0 + max_mem)


def _sequential_sum_builtin() -> bool:
    """Whether ``sum`` of floats adds left to right, rounding each step (CPython up to 3.11).

    From 3.12 ``sum`` compensates rounding errors (Neumaier), which gives other floats
    than the sequential sums the scores must reproduce; then :func:`seqsum` uses ``reduce``.
    """
    return sum([1e100, 1.0, -1e100, 1.0, 1.0], 0.0) == 2.0


def _reduce_sum(values: Iterable[float], start: float) -> float:
    return reduce(add, values, start)


# start + values[0] + values[1] + ..., each addition rounded, left to right
seqsum: Callable[[Iterable[float], float], float] = sum if _sequential_sum_builtin() else _reduce_sum


def alternatives_one_changed(
    cpu_loads: Sequence[float], mem_loads: Sequence[float], new_cpu: Sequence[float], new_mem: Sequence[float]
) -> list[Alternative]:
    """``alternative`` for each i of the loads with entry i replaced by ``new_cpu[i]``/``new_mem[i]``.

    Same floats as calling :func:`alternative` n times: each sum of squares is the
    shared left-to-right prefix before entry i (``accumulate``), then the new square,
    then the rest added in order (:func:`seqsum`, C code); the maxima come from
    prefix/suffix maxima (order does not change a maximum).
    """
    n = len(cpu_loads)
    if n == 0:
        return []
    cpu_sq = [c * c for c in cpu_loads]
    mem_sq = [m * m for m in mem_loads]
    cpu_pre = list(accumulate(cpu_sq, initial=0.0))
    mem_pre = list(accumulate(mem_sq, initial=0.0))
    cpu_premax, cpu_sufmax = _prefix_suffix_max(cpu_loads)
    mem_premax, mem_sufmax = _prefix_suffix_max(mem_loads)
    sqrt = math.sqrt
    out: list[Alternative] = []
    for i in range(n):
        c, m = new_cpu[i], new_mem[i]
        out.append(
            (
                1.0 + sqrt(seqsum(cpu_sq[i + 1 :], cpu_pre[i] + c * c) / n),
                1.0 + max(cpu_premax[i], c, cpu_sufmax[i + 1]),
                1.0 + sqrt(seqsum(mem_sq[i + 1 :], mem_pre[i] + m * m) / n),
                1.0 + max(mem_premax[i], m, mem_sufmax[i + 1]),
            )
        )
    return out


def _prefix_suffix_max(values: Sequence[float]) -> tuple[list[float], list[float]]:
    """``pre[i] = max(0.0, *values[:i])``, ``suf[i] = max(0.0, *values[i:])`` (n + 1 entries each)."""
    pre = list(accumulate(values, max, initial=0.0))
    suf = list(accumulate(reversed(values), max, initial=0.0))
    suf.reverse()
    return pre, suf


def topsis_scores(alternatives: Sequence[Alternative]) -> list[float]:
    """Closeness to the ideal (higher is better), one per alternative, in the given order.

    Computed column by column; every sum runs in the same order as the plain
    definition (norms over the alternatives in order, distances over the criteria in order).
    """
    if not alternatives:
        return []
    n = len(alternatives)
    d_best = [0.0] * n
    d_worst = [0.0] * n
    for col, weight in zip(zip(*alternatives, strict=True), WEIGHTS, strict=True):
        norm = math.sqrt(seqsum([x * x for x in col], 0.0))
        weighted = [x / norm * weight for x in col] if norm != 0.0 else [x * weight for x in col]
        best = min(weighted)
        worst = max(weighted)
        d_best = [d + (w - best) ** 2 for d, w in zip(d_best, weighted, strict=True)]
        d_worst = [d + (w - worst) ** 2 for d, w in zip(d_worst, weighted, strict=True)]
    scores = []
    for sq_best, sq_worst in zip(d_best, d_worst, strict=True):
        to_best = math.sqrt(sq_best)
        to_worst = math.sqrt(sq_worst)
        total = to_best + to_worst
        scores.append(to_worst / total if total != 0.0 else 0.0)
    return scores


def node_load(cpu: float, maxcpu: float, mem: float, maxmem: float) -> float:
    """(cpu/maxcpu + mem/maxmem) / 2."""
    return (cpu / maxcpu + mem / maxmem) / 2.0


def imbalance(loads: Sequence[float]) -> float:
    """Coefficient of variation: population standard deviation / mean (0 if all loads are 0).

    Not normalised by sqrt(n - 1) (BEHAVIOUR.md §5.10: this release's library).
    """
    n = len(loads)
    total = 0.0
    for x in loads:
        total += x
    if n == 0 or total == 0.0:
        return 0.0
    mean = total / n
    var = 0.0
    for x in loads:
        var += (x - mean) ** 2
    return math.sqrt(var / n) / mean


def trunc15(x: float) -> float:
    """The bruteforce method compares imbalances truncated to 15 decimal digits (§5.10)."""
    return math.trunc(x * 1e15) / 1e15
