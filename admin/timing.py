"""Lease / watchdog timing and its safety check (ARCHITECTURE.md "Safety"). Pure.

The argument, in the reference's words (§11.1 item 3): when the master
obtains a node's agent lease, that node has released it cleanly or has been
reset by its watchdog. A holder renews its lease every ``renew_interval``
and pets its watchdog only while its last renewal succeeded, so after its
last successful renewal at ``t`` it may pet once more up to about
``t + renew_interval``, and the watchdog fires by
``t + renew_interval + watchdog_timeout``. The lease it renewed at ``t``
runs until ``t + lease_ttl``. Hence the rule, with a margin for scheduling
delays and the duration of the renewal call itself::

    lease_ttl > watchdog_timeout + renew_interval + margin

``fence_delay`` is how long a node must be out of the membership view before
the master starts fencing it (the reference's 60 s): a short blip is not a
failure. The worst-case failover is about ``fence_delay`` plus the rest of the
dead node's lease, at most ``lease_ttl``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields

from ha.errors import ConfigError


@dataclass(frozen=True, slots=True)
class LeaseTiming:
    """Seconds. Defaults aim at failover in seconds, not minutes."""

    lease_ttl: float = 5.0
    renew_interval: float = 0.5
    watchdog_timeout: float = 3.0
    margin: float = 1.0
    fence_delay: float = 2.0

    def problems(self) -> list[str]:
        """Every reason these settings are unsafe (empty when they are fine)."""
        out: list[str] = []
        for f in fields(self):
            v = getattr(self, f.name)
            if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v):
                out.append(f"{f.name} must be a number of seconds, got {v!r}")
            elif f.name == "fence_delay" and v < 0:
                out.append(f"fence_delay must be >= 0 s, got {v:g}")
            elif f.name != "fence_delay" and v <= 0:
                out.append(f"{f.name} must be > 0 s, got {v:g}")
        if out:
            return out
        need = self.watchdog_timeout + self.renew_interval + self.margin
        if not self.lease_ttl > need:
            # SAFETY: otherwise a node cut off from the store could still run services
            # after another node took its lease over and recovered them.
            out.append(
                f"lease_ttl {self.lease_ttl:g}s must exceed watchdog_timeout {self.watchdog_timeout:g}s"
                f" + renew_interval {self.renew_interval:g}s + margin {self.margin:g}s = {need:g}s:"
                " a fenced node's services could still run when its lease is taken over"
            )
        if not self.renew_interval < self.watchdog_timeout:
            out.append(
                f"renew_interval {self.renew_interval:g}s must be shorter than watchdog_timeout"
                f" {self.watchdog_timeout:g}s, or a healthy node resets itself"
            )
        if not 2 * self.renew_interval <= self.lease_ttl:
            out.append(
                f"renew_interval {self.renew_interval:g}s must be at most half of lease_ttl"
                f" {self.lease_ttl:g}s, so one late renewal does not lose the lease"
            )
        return out

    def validate(self) -> LeaseTiming:
        """Return self, or raise :class:`ConfigError` naming every unsafe setting."""
        probs = self.problems()
        if probs:
            raise ConfigError("unsafe timing: " + "; ".join(probs))
        return self

    @property
    def failover_bound(self) -> float:
        """Upper bound (s) from a node's death to its services being recoverable elsewhere."""
        return self.fence_delay + self.lease_ttl

    @classmethod
    def from_mapping(cls, values: Mapping[str, object], path: str | None = None) -> LeaseTiming:
        """Build from config key/values (str or numbers) over the defaults, then validate."""
        known = {f.name for f in fields(cls)}
        kwargs: dict[str, float] = {}
        for key, raw in values.items():
            if key not in known:
                raise ConfigError(f"unknown timing setting '{key}' (known: {', '.join(sorted(known))})", path)
            try:
                kwargs[key] = float(str(raw).strip().removesuffix("s"))
            except ValueError:
                msg = f"timing setting '{key}': '{raw}' is not a number of seconds"
                raise ConfigError(msg, path) from None
        t = cls(**kwargs)
        probs = t.problems()
        if probs:
            raise ConfigError("unsafe timing: " + "; ".join(probs), path)
        return t
