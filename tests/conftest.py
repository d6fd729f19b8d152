"""Shared pytest options and helpers."""

from __future__ import annotations

from pathlib import Path

import pytest

TESTS = Path(__file__).parent
ORACLE_DIR = TESTS / "oracle"
SCENARIO_DIR = TESTS / "scenarios"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="rewrite tests/scenarios/*/log.expect from the simulator (never the oracle set)",
    )


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))
