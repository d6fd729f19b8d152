"""Our own scenario folders (tests/scenarios/*): golden logs reviewed against BEHAVIOUR.md.

A folder without ``log.expect`` fails. ``pytest --update-golden`` rewrites the
expectations from the simulator; the diff must be reviewed before committing.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from sim.runner import RunOptions, run_scenario
from sim.scenario import load_scenario
from tests.conftest import SCENARIO_DIR

SCENARIOS = sorted(p for p in SCENARIO_DIR.iterdir() if p.is_dir()) if SCENARIO_DIR.is_dir() else []


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[p.name for p in SCENARIOS])
def test_scenario_log(scenario: Path, update_golden: bool) -> None:
    expect = scenario / "log.expect"
    scale = (scenario / "SCALE").exists()
    sim = run_scenario(load_scenario(scenario), RunOptions(scale=scale))
    actual = "".join(sim.hw.lines)
    if update_golden:
        expect.write_text(actual)
        return
    if not expect.exists():
        pytest.fail(f"{expect} is missing: write it with --update-golden and review it against BEHAVIOUR.md")
    expected = expect.read_text()
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
        pytest.fail(f"log differs:\n{diff[:6000]}")


def test_enough_scenarios_with_readmes() -> None:
    """The catalogue of our own scenarios stays substantial and documented."""
    assert len(SCENARIOS) >= 60
    for s in SCENARIOS:
        readme = s / "README"
        ok = readme.exists() and "Checked:" in readme.read_text()
        assert ok, f"{s.name}: README must say what was checked"
