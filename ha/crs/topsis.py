"""TOPSIS scoring and the node imbalance of the load-aware schedulers (BEHAVIOUR.md §5.10).

Sums run left to right over the nodes in sorted name order (BEHAVIOUR.md §13:
that order reproduced the reference's float ties), so callers pass node
columns in that order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import reduce
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


def alternatives_one_changed(
    cpu_loads: list[float], mem_loads: list[float], new_cpu: Sequence[float], new_mem: Sequence[float]
) -> list[Alternative]:
    """``alternative`` for each i of the loads with entry i replaced by ``new_cpu[i]``/``new_mem[i]``.

    Same values as calling :func:`alternative` n times (the same left-to-right
    sums, done by ``reduce`` in C rather than a Python loop: O(n) calls of C
    code instead of O(n^2) interpreted steps).
    """
    n = len(cpu_loads)
    if n == 0:
        return []
    cpu_sq = [c * c for c in cpu_loads]
    mem_sq = [m * m for m in mem_loads]
    out: list[Alternative] = []
    for i in range(n):
        c, m = new_cpu[i], new_mem[i]
        csq = cpu_sq.copy()
        csq[i] = c * c
        msq = mem_sq.copy()
        msq[i] = m * m
        cl = cpu_loads.copy()
        cl[i] = c
        ml = mem_loads.copy()
        ml[i] = m
        out.append(
            (
                1.0 + math.sqrt(reduce(add, csq, 0.0) / n),
                1.0 + max(0.0, *cl),
                1.0 + math.sqrt(reduce(add, msq, 0.0) / n),
                1.0 + max(0.0, *ml),
            )
        )
    return out


def topsis_scores(alternatives: Sequence[Alternative]) -> list[float]:
    """Closeness to the ideal (higher is better), one per alternative, in the given order."""
    if not alternatives:
        return []
    cols = len(WEIGHTS)
    norms = []
    for j in range(cols):
        s = 0.0
        for a in alternatives:
            s += a[j] * a[j]
        norms.append(math.sqrt(s))
    weighted = [
        tuple((a[j] / norms[j] if norms[j] != 0.0 else a[j]) * WEIGHTS[j] for j in range(cols))
        for a in alternatives
    ]
    best = [min(w[j] for w in weighted) for j in range(cols)]
    worst = [max(w[j] for w in weighted) for j in range(cols)]
    scores = []
    for w in weighted:
        d_best = 0.0
        d_worst = 0.0
        for j in range(cols):
            d_best += (w[j] - best[j]) ** 2
            d_worst += (w[j] - worst[j]) ** 2
        d_best = math.sqrt(d_best)
        d_worst = math.sqrt(d_worst)
        total = d_best + d_worst
        scores.append(d_worst / total if total != 0.0 else 0.0)
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
