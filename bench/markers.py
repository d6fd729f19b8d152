"""Re-export of :mod:`agents.markers` for the benchmarks and tests that import it from here."""

from agents.markers import ALIVE_SLACK_NS, Copy, find_overlaps, read_copies

__all__ = ["ALIVE_SLACK_NS", "Copy", "find_overlaps", "read_copies"]
