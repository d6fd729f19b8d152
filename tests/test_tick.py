"""The node's ticker keeps a steady cadence (actors/node.py ``advance``)."""

from __future__ import annotations

import pytest

from actors.node import advance


def test_a_timer_keeps_its_cadence() -> None:
    assert advance(10.0, 0.5, 10.001) == 10.5
    assert advance(10.0, 0.5, 10.49) == 10.5  # woke late: the next one still on the grid


def test_after_a_stall_no_burst_of_catch_up_ticks() -> None:
    nxt = advance(10.0, 0.5, 12.2)  # stalled for two seconds
    assert nxt == pytest.approx(12.7)
    assert advance(nxt, 0.5, nxt) == pytest.approx(13.2)
