"""The 120 oracle scenarios: the reference simulator's own logs, byte for byte.

These are fixed ground truth: ``--update-golden`` never touches them.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from sim.runner import run_scenario
from sim.scenario import load_scenario
from tests.conftest import ORACLE_DIR

ORACLE = sorted(p for p in ORACLE_DIR.glob("gen-*") if p.is_dir())


def test_oracle_set_is_complete() -> None:
    assert len(ORACLE) == 120
    assert (ORACLE_DIR / "README.md").exists()


@pytest.mark.parametrize("scenario", ORACLE, ids=[p.name for p in ORACLE])
def test_oracle_log_matches(scenario: Path) -> None:
    expected = (scenario / "log.expect").read_text()
    sim = run_scenario(load_scenario(scenario))
    actual = "".join(sim.hw.lines)
    if actual != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True),
                actual.splitlines(keepends=True),
                "log.expect",
                "ha-sim",
                n=2,
            )
        )
        pytest.fail(f"log differs from the reference:\n{diff[:6000]}")
