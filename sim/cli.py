"""``ha-sim``: run, check and fuzz scenarios.

Exit codes: 0 success; 1 a check found a difference (or the fuzzer a
violation); 2 bad input (missing or malformed scenario files, bad options).
"""

from __future__ import annotations

import difflib
import shutil
import sys
import tempfile
from pathlib import Path

import click

from ha.errors import HaError
from sim.fuzz_cli import fuzz_command
from sim.runner import RunOptions, run_scenario
from sim.scenario import ScenarioError, load_scenario

EXIT_DIFF = 1
EXIT_BAD_INPUT = 2


def _fail(msg: str) -> None:
    click.echo(f"ha-sim: {msg}", err=True)
    sys.exit(EXIT_BAD_INPUT)


def _run_to_text(scenario_dir: Path, scale: bool, out_dir: Path | None, echo: bool) -> str:
    try:
        scenario = load_scenario(scenario_dir)
    except ScenarioError as e:
        _fail(str(e))
        raise AssertionError from None
    try:
        sim = run_scenario(
            scenario, RunOptions(scale=scale), out=(lambda line: click.echo(line, nl=False)) if echo else None
        )
    except HaError as e:  # malformed config detected while building the world
        _fail(f"{scenario_dir}: {e}")
        raise AssertionError from None
    if out_dir is not None:
        sim.hw.dump(out_dir)
    return "".join(sim.hw.lines)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Deterministic simulator for the HA stack, reading reference-format scenario folders."""


@main.command()
@click.argument("scenario_dir", type=click.Path(path_type=Path))
@click.option(
    "--out", "out_dir", type=click.Path(path_type=Path), help="Write log and final status records here."
)
@click.option(
    "--scale", is_flag=True, help="Lift the reference's loop-time and node-count limits (big clusters)."
)
@click.option("--quiet", "-q", is_flag=True, help="Do not print the log to stdout.")
def run(scenario_dir: Path, out_dir: Path | None, scale: bool, quiet: bool) -> None:
    """Run SCENARIO_DIR and print its log; never modifies SCENARIO_DIR."""
    if out_dir is not None:
        try:
            if out_dir.resolve() == scenario_dir.resolve():
                _fail("--out must not be the scenario directory")
        except OSError as e:
            _fail(f"{out_dir}: {e.strerror}")
    _run_to_text(scenario_dir, scale, out_dir, echo=not quiet)


@main.command()
@click.argument("scenario_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--scale", is_flag=True, help="Lift the reference's limits.")
def check(scenario_dirs: tuple[Path, ...], scale: bool) -> None:
    """Compare the log of each SCENARIO_DIR with its log.expect; print a unified diff on mismatch."""
    failed: list[str] = []
    for scenario_dir in scenario_dirs:
        expect_path = scenario_dir / "log.expect"
        if not expect_path.exists():
            _fail(f"{expect_path}: missing (no expected log to compare with)")
        expected = expect_path.read_text()
        actual = _run_to_text(scenario_dir, scale, None, echo=False)
        if actual == expected:
            if len(scenario_dirs) > 1:
                click.echo(f"ok: {scenario_dir}")
            continue
        failed.append(str(scenario_dir))
        diff = difflib.unified_diff(
            expected.splitlines(keepends=True),
            actual.splitlines(keepends=True),
            fromfile=str(expect_path),
            tofile=f"{scenario_dir} (ha-sim)",
        )
        sys.stdout.writelines(diff)
    if failed:
        if len(scenario_dirs) > 1:
            click.echo(f"failed {len(failed)} of {len(scenario_dirs)}: {' '.join(failed)}")
        sys.exit(EXIT_DIFF)


@main.command("update-expect")
@click.argument("scenario_dir", type=click.Path(path_type=Path))
def update_expect(scenario_dir: Path) -> None:
    """Write SCENARIO_DIR/log.expect from a run (review the diff before committing it)."""
    with tempfile.TemporaryDirectory() as tmp:
        text = _run_to_text(scenario_dir, False, Path(tmp), echo=False)
    (scenario_dir / "log.expect").write_text(text)
    shutil.rmtree(Path(tmp), ignore_errors=True)


main.add_command(fuzz_command)  # ha-sim fuzz (sim/fuzz_cli.py)


if __name__ == "__main__":
    main()
