"""TOPSIS scoring and the node imbalance of the load-aware schedulers (BEHAVIOUR.md §5.10).

Sums run left to right over the nodes in sorted name order (BEHAVIOUR.md §13:
that order reproduced the reference's float ties), so callers pass node
columns in that order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from functools import reduce
from itertools import accumulate, chain
from operator import add, mul

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

    Same floats as calling :func:`alternative` n times (see :func:`_one_changed_columns`).
    """
    avg_cpu, max_cpu, avg_mem, max_mem = _one_changed_columns(cpu_loads, mem_loads, new_cpu, new_mem)
    return list(zip(avg_cpu, max_cpu, avg_mem, max_mem, strict=True))


def start_scores(
    cpu_loads: Sequence[float], mem_loads: Sequence[float], new_cpu: Sequence[float], new_mem: Sequence[float]
) -> list[float]:
    """``topsis_scores(alternatives_one_changed(...))``: TOPSIS start scoring of each node (§5.10)."""
    if not cpu_loads:
        return []
    return _column_scores(_one_changed_columns(cpu_loads, mem_loads, new_cpu, new_mem))


def _one_changed_columns(
    cpu_loads: Sequence[float], mem_loads: Sequence[float], new_cpu: Sequence[float], new_mem: Sequence[float]
) -> list[list[float]]:
    """The four criteria columns of ``alternatives_one_changed``, one entry per i.

    Each sum of squares is the shared left-to-right prefix before entry i
    (``accumulate``), then the new square, then the rest added in order
    (:func:`seqsum`, C code): the floats of a plain left-to-right loop. A maximum
    does not depend on the order: see :func:`_max_column`.
    """
    return [
        _rms_column(cpu_loads, new_cpu),
        _max_column(cpu_loads, new_cpu),
        _rms_column(mem_loads, new_mem),
        _max_column(mem_loads, new_mem),
    ]


def _rms_column(loads: Sequence[float], new: Sequence[float]) -> list[float]:
    """``1 + sqrt(mean of the squared loads)`` with load i replaced by ``new[i]``, for each i."""
    n = len(loads)
    sq = [x * x for x in loads]
    prefix = accumulate(sq, initial=0.0)  # prefix i: the sum of the squares before entry i
    starts = [p + x * x for p, x in zip(prefix, new, strict=False)]
    sums = map(seqsum, [sq[i + 1 :] for i in range(n)], starts)
    return [1.0 + math.sqrt(s / n) for s in sums]


def _max_column(loads: Sequence[float], new: Sequence[float]) -> list[float]:
    """``1 + max(0, loads)`` with load i replaced by ``new[i]``, for each i.

    The maximum of the other loads is the overall maximum ``top``, except at the
    one index that holds ``top`` alone (there: the maximum of the rest). NaN loads
    are passed over, as ``max`` starting at 0 passes them over.
    """
    top = max(chain((0.0,), loads))
    out = [1.0 + (x if x > top else top) for x in new]
    if loads.count(top) == 1:
        k = loads.index(top)
        rest = max(chain((0.0,), loads[:k], loads[k + 1 :]))
        out[k] = 1.0 + (new[k] if new[k] > rest else rest)
    return out


def topsis_scores(alternatives: Sequence[Alternative]) -> list[float]:
    """Closeness to the ideal (higher is better), one per alternative, in the given order."""
    if not alternatives:
        return []
    return _column_scores([list(col) for col in zip(*alternatives, strict=True)])


def _column_scores(columns: Sequence[Sequence[float]]) -> list[float]:
    """``topsis_scores`` of alternatives given as their four criteria columns.

    Every sum runs in the order of the plain definition: a column's norm over the
    alternatives in order, an alternative's distances over the criteria in order.
    """
    weighted = []
    for col, weight in zip(columns, WEIGHTS, strict=True):
        norm = math.sqrt(seqsum(map(mul, col, col), 0.0))
        weighted.append([x / norm * weight for x in col] if norm != 0.0 else [x * weight for x in col])
    best0, best1, best2, best3 = map(min, weighted)  # the ideal: every criterion is minimised
    worst0, worst1, worst2, worst3 = map(max, weighted)
    sqrt = math.sqrt
    scores = []
    for c0, c1, c2, c3 in zip(*weighted, strict=True):
        to_best = sqrt(0.0 + (c0 - best0) ** 2 + (c1 - best1) ** 2 + (c2 - best2) ** 2 + (c3 - best3) ** 2)
        to_worst = sqrt(
            0.0 + (c0 - worst0) ** 2 + (c1 - worst1) ** 2 + (c2 - worst2) ** 2 + (c3 - worst3) ** 2
        )
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
