"""``ha-sim fuzz``: the command-line face of :mod:`sim.fuzz` (registered in :mod:`sim.cli`)."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import click

from ha.errors import HaError
from sim.fuzz import LIVENESS_BOUND, PROFILES, RunResult, fuzz
from sim.fuzz_shrink import replay_folder, shrink, write_scenario

EXIT_VIOLATION = 1
EXIT_BAD_INPUT = 2


class _OneLineErrors(click.Command):
    """Report bad options as one line (``ha-sim fuzz: ...``) and exit 2, like the other subcommands."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as e:
            click.echo(f"ha-sim fuzz: {e.format_message()}", err=True)
            ctx.exit(EXIT_BAD_INPUT)
            raise AssertionError from None  # ctx.exit raises


def _bad(msg: str) -> None:
    click.echo(f"ha-sim fuzz: {msg}", err=True)
    sys.exit(EXIT_BAD_INPUT)


@click.command("fuzz", cls=_OneLineErrors)
@click.option("--seed", type=click.IntRange(min=0), default=1, show_default=True, help="First seed.")
@click.option("--runs", type=click.IntRange(min=1), default=100, show_default=True, help="Number of seeds.")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Write shrunk counterexample folders here (default: a new temporary directory).",
)
@click.option("--keep-going", is_flag=True, help="Do not stop at the first failing seed.")
@click.option("--no-shrink", is_flag=True, help="Write the failing case as generated, without shrinking.")
@click.option(
    "--shrink-seconds",
    type=click.IntRange(min=0),
    default=120,
    show_default=True,
    help="Time budget for shrinking one failure.",
)
@click.option(
    "--strict",
    is_flag=True,
    help="Also fail on the simulator's known model limitation (fatal 'watchdog expired').",
)
@click.option(
    "--profile",
    type=click.Choice(PROFILES),
    default="small",
    show_default=True,
    help="Cluster sizes: small (3-7 nodes, up to 50 services) or large (20-50 nodes, 2-10 services "
    "each, run in scale mode: nodes in parallel virtual time).",
)
@click.option(
    "--replay",
    "replay_dir",
    type=click.Path(path_type=Path),
    help="Instead of fuzzing: run one scenario folder (e.g. a counterexample) under the checks.",
)
def fuzz_command(
    seed: int,
    runs: int,
    out_dir: Path | None,
    keep_going: bool,
    no_shrink: bool,
    shrink_seconds: int,
    strict: bool,
    profile: str,
    replay_dir: Path | None,
) -> None:
    """Random clusters and fault schedules from seeds SEED..SEED+RUNS-1, checked against the
    safety invariants after every simulation step and for liveness after healing (docs/fuzzing.md).

    Exit 0 when every run passes, 1 on a violation (a shrunk scenario folder is written and its
    path printed), 2 on bad options.
    """
    if replay_dir is not None:
        _replay(replay_dir)
        return
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        _bad(f"--out: {out_dir} is not a directory")
    written: list[Path] = []

    def on_failure(result: RunResult) -> bool:
        nonlocal out_dir
        assert result.violation is not None
        click.echo(f"seed {result.case.seed}: {result.violation}")
        if out_dir is None:
            out_dir = Path(tempfile.mkdtemp(prefix="ha-fuzz-"))
        best, tries = (result, 0) if no_shrink else shrink(result, shrink_seconds, strict)
        folder = out_dir / f"seed-{result.case.seed}-{result.violation.invariant}"
        write_scenario(best, folder, result.violation)
        if tries:
            click.echo(
                f"  shrunk in {tries} runs to {len(best.case.hardware)} nodes, "
                f"{len(best.case.services)} services, "
                f"{sum(len(b) for b in best.case.schedule)} commands in {len(best.case.schedule)} batches"
            )
        click.echo(f"  scenario: {folder}")
        written.append(folder)
        return keep_going

    summary = fuzz(seed, runs, on_failure, strict, profile)
    inconclusive = (
        f"; {len(summary.inconclusive)} inconclusive (simulator 'watchdog expired' limitation, seeds "
        f"{', '.join(map(str, summary.inconclusive[:10]))}{' ...' if len(summary.inconclusive) > 10 else ''})"
        if summary.inconclusive
        else ""
    )
    verdict = f"{len(summary.failures)} FAILED" if summary.failures else "all passed"
    click.echo(
        f"fuzz: {summary.runs} {'' if profile == 'small' else profile + ' '}runs "
        f"(seeds {seed}..{seed + summary.runs - 1}) {verdict}, "
        f"{summary.steps} steps checked ({', '.join(f'{v} {k}' for k, v in sorted(summary.stats.items()))}), "
        f"{summary.virtual_seconds} virtual s simulated, "
        f"{summary.wall_seconds:.1f} s wall, slowest convergence {summary.max_converge} s "
        f"of {LIVENESS_BOUND} s{inconclusive}"
    )
    if summary.failures:
        sys.exit(EXIT_VIOLATION)


def _replay(folder: Path) -> None:
    start = time.perf_counter()
    try:
        result = replay_folder(folder)
    except HaError as e:
        _bad(str(e))
        raise AssertionError from None
    wall = time.perf_counter() - start
    if result.violation is not None:
        click.echo(f"{folder}: {result.violation}")
        sys.exit(EXIT_VIOLATION)
    click.echo(
        f"{folder}: all invariants hold ({result.steps} steps, "
        f"{result.virtual_time} virtual s, {wall:.1f} s wall)"
    )
