"""The lease/watchdog timing check."""

from __future__ import annotations

import pytest

from admin.timing import LeaseTiming
from ha.errors import ConfigError


def test_defaults_are_safe_and_fast() -> None:
    t = LeaseTiming().validate()
    assert t.lease_ttl > t.watchdog_timeout + t.renew_interval + t.margin
    assert t.failover_bound <= 10


def test_lease_must_outlive_watchdog() -> None:
    t = LeaseTiming(lease_ttl=4.0, watchdog_timeout=3.0, renew_interval=0.5, margin=1.0)
    with pytest.raises(ConfigError) as ei:
        t.validate()
    msg = str(ei.value)
    assert "lease_ttl 4s must exceed watchdog_timeout 3s + renew_interval 0.5s + margin 1s = 4.5s" in msg


def test_equality_is_not_enough() -> None:
    assert LeaseTiming(lease_ttl=4.5).problems() != []
    assert LeaseTiming(lease_ttl=4.51).problems() == []


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"renew_interval": 3.0, "lease_ttl": 10.0}, "shorter than watchdog_timeout"),
        (
            {"renew_interval": 2.9, "watchdog_timeout": 3.0, "lease_ttl": 5.0, "margin": 0.01},
            "half of lease_ttl",
        ),
        ({"margin": 0}, "margin must be > 0"),
        ({"watchdog_timeout": -1}, "watchdog_timeout must be > 0"),
        ({"fence_delay": -1}, "fence_delay must be >= 0"),
        ({"lease_ttl": float("nan")}, "lease_ttl must be a number"),
    ],
)
def test_unsafe_settings_named(kwargs: dict[str, float], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        LeaseTiming(**kwargs).validate()


def test_zero_fence_delay_allowed() -> None:
    LeaseTiming(fence_delay=0).validate()


def test_from_mapping() -> None:
    t = LeaseTiming.from_mapping({"lease_ttl": "8s", "watchdog_timeout": "5", "renew_interval": 1})
    assert (t.lease_ttl, t.watchdog_timeout, t.renew_interval) == (8.0, 5.0, 1.0)
    with pytest.raises(ConfigError, match="unknown timing setting 'ttl'"):
        LeaseTiming.from_mapping({"ttl": "8"})
    with pytest.raises(ConfigError, match="not a number"):
        LeaseTiming.from_mapping({"lease_ttl": "long"})
    with pytest.raises(ConfigError, match="unsafe timing") as ei:
        LeaseTiming.from_mapping({"lease_ttl": "2"}, path="datacenter.cfg")
    assert str(ei.value).startswith("datacenter.cfg: ")
