"""Quorum arithmetic (pure) and the peer tracker (driven by fake time)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bus.errors import ConfigError, UnknownPeerError
from bus.membership import Membership, PeerSpec, PeerTracker
from bus.messages import PeerDown, PeerUp
from bus.quorum import quorum_view

THREE = ("a", "b", "c")
FIVE = ("a", "b", "c", "d", "e")


@pytest.mark.parametrize(
    ("configured", "seen", "quorate"),
    [
        (("a",), {"a"}, True),
        (THREE, {"a"}, False),
        (THREE, {"a", "b"}, True),
        (THREE, {"a", "b", "c"}, True),
        (FIVE, {"a", "b"}, False),
        (FIVE, {"c", "d", "e"}, True),
        (FIVE, {"a", "b", "x", "y"}, False),  # unknown nodes carry no vote
        (("a", "b"), {"a"}, False),  # 2 nodes: both needed without a tie-breaker
        (("a", "b"), {"b"}, False),
        (("a", "b"), {"a", "b"}, True),
        (("a", "b", "c", "d"), {"a", "b"}, False),
    ],
)
def test_strict_majority(configured: tuple[str, ...], seen: set[str], quorate: bool) -> None:
    assert quorum_view(configured, seen).quorate is quorate


def test_view_details() -> None:
    v = quorum_view(FIVE, {"e", "a", "c", "zz"})
    assert (v.votes, v.expected, v.needed, v.members) == (3, 5, 3, ("a", "c", "e"))


def test_tie_breaker_favours_the_lowest_name_on_an_exact_split() -> None:
    assert quorum_view(("a", "b"), {"a"}, tie_breaker=True).quorate
    assert not quorum_view(("a", "b"), {"b"}, tie_breaker=True).quorate
    assert quorum_view(("a", "b", "c", "d"), {"a", "d"}, tie_breaker=True).quorate
    assert not quorum_view(("a", "b", "c", "d"), {"b", "c"}, tie_breaker=True).quorate
    # Only exact halves: a minority never wins, and odd clusters never tie.
    assert not quorum_view(("a", "b", "c", "d"), {"a"}, tie_breaker=True).quorate
    assert not quorum_view(THREE, {"a"}, tie_breaker=True).quorate


def test_expected_votes_override() -> None:
    assert quorum_view(FIVE, {"a", "b"}, expected_votes=3).quorate
    assert not quorum_view(THREE, {"a", "b"}, expected_votes=5).quorate
    with pytest.raises(ConfigError):
        quorum_view(THREE, {"a"}, expected_votes=0)
    with pytest.raises(ConfigError):
        quorum_view((), {"a"})


@given(
    n=st.integers(1, 9),
    split=st.data(),
    tie=st.booleans(),
)
def test_never_two_quorate_partitions(n: int, split: st.DataObject, tie: bool) -> None:
    """Any split of the nodes into two sides yields at most one quorate side."""
    nodes = tuple(f"n{i}" for i in range(n))
    side = split.draw(st.sets(st.sampled_from(nodes)) if n else st.just(set()))
    other = set(nodes) - side
    left = quorum_view(nodes, side, tie_breaker=tie).quorate
    right = quorum_view(nodes, other, tie_breaker=tie).quorate
    assert not (left and right)


def test_membership_validation() -> None:
    m = Membership.of([("a", "tcp://h:1"), ("b", "tcp://h:2")])
    assert m.names == ("a", "b") and "a" in m and len(m) == 2
    assert m.endpoint("b") == "tcp://h:2" and [p.name for p in m.others("a")] == ["b"]
    with pytest.raises(UnknownPeerError):
        m.endpoint("c")
    with pytest.raises(ConfigError):
        Membership.of([("a", "tcp://h:1"), ("a", "tcp://h:2")])
    with pytest.raises(ConfigError):
        Membership(())
    for bad in ("", "../x", "a b", "x" * 64, "\x00a"):
        with pytest.raises(ConfigError):
            PeerSpec(bad, "tcp://h:1")
    with pytest.raises(ConfigError):
        PeerSpec("a", "h:1")


def test_tracker_needs_both_directions_and_times_out() -> None:
    t = PeerTracker(["b", "c"], timeout=1.0)
    assert t.heartbeat("b", 7, now=0.0) is None  # heard, but our link is not up yet
    assert t.link("b", True, now=0.1) == PeerUp("b", 7)
    assert t.up() == {"b"}
    assert t.heartbeat("b", 7, now=0.5) is None  # same incarnation: no news
    t.traffic("b", now=1.2)
    assert t.expire(now=2.1) == []
    assert t.next_expiry() == pytest.approx(2.2)
    assert t.expire(now=2.2) == [PeerDown("b")]
    assert t.up() == frozenset()
    assert t.heartbeat("b", 7, now=3.0) == PeerUp("b", 7)  # link still up: back at once


def test_tracker_link_loss_alone_does_not_take_a_peer_down() -> None:
    t = PeerTracker(["b"], timeout=1.0)
    t.link("b", True, 0.0)
    assert t.heartbeat("b", 1, 0.0) == PeerUp("b", 1)
    t.link("b", False, 0.1)
    assert t.is_up("b") and not t.is_linked("b")
    # A restart seen while the link is down is announced once the link returns.
    assert t.heartbeat("b", 2, 0.2) is None
    assert t.link("b", True, 0.3) == PeerUp("b", 2)
    # A link that comes back after the peer went silent announces nothing.
    t.link("b", False, 0.4)
    assert t.expire(1.3) == [PeerDown("b")]
    assert t.link("b", True, 5.0) is None


def test_tracker_ignores_strangers_and_rejects_bad_timeout() -> None:
    t = PeerTracker(["b"], timeout=1.0)
    assert t.heartbeat("zz", 1, 0.0) is None and t.link("zz", True, 0.0) is None
    t.traffic("zz", 0.0)
    assert not t.is_up("zz") and t.next_expiry() is None
    with pytest.raises(ConfigError):
        PeerTracker(["b"], timeout=0)
