"""Membership changes on running transports: one member added or removed at a time (issue #15)."""

from __future__ import annotations

import time
from collections.abc import Callable
from itertools import combinations
from pathlib import Path

import pytest

from bus.config import TransportConfig
from bus.errors import BusError, ConfigError, UnknownPeerError
from bus.keys import CurveKeys, KeyRing, generate, public_keys
from bus.membership import Membership, PeerTracker, one_member_change
from bus.messages import Heartbeat, PeerDown, QuorumLost
from bus.quorum import quorum_view
from tests.bus.conftest import Cluster, wait_until


def test_one_member_change_allows_one_addition_or_one_removal_only() -> None:
    assert one_member_change("abc", "abcd") == ("d", None)
    assert one_member_change("abcd", "abd") == (None, "c")
    assert one_member_change("abc", "cab") == (None, None)
    for old, new in (("abc", "abcde"), ("abc", "abd"), ("abcde", "abc"), ("ab", "cd")):
        with pytest.raises(ConfigError, match="one member at a time"):
            one_member_change(old, new)


@pytest.mark.parametrize("n", range(1, 9))
def test_a_majority_of_the_old_and_one_of_the_new_members_always_overlap(n: int) -> None:
    """The SAFETY claim of one_member_change, checked exhaustively for up to 9 nodes."""
    names = [f"n{i}" for i in range(n + 1)]
    old = names[:n]
    for new in (names, old[:-1]) if n > 1 else (names,):
        one_member_change(old, new)
        everyone = sorted(set(old) | set(new))
        quorate_old = [s for k in range(len(everyone) + 1) for s in combinations(everyone, k)
                       if quorum_view(old, s).quorate]  # fmt: skip
        quorate_new = [set(s) for k in range(len(everyone) + 1) for s in combinations(everyone, k)
                       if quorum_view(new, s).quorate]  # fmt: skip
        assert all(set(a) & b for a in quorate_old for b in quorate_new), (old, new)


def test_two_members_at_once_could_give_two_majorities() -> None:
    """Why the rule exists: {a,b} is a majority of abc, {c,d,e} one of abcde."""
    assert quorum_view("abc", "ab").quorate and quorum_view("abcde", "cde").quorate


def test_tracker_adds_and_removes_members() -> None:
    t = PeerTracker(["b"], timeout=1.0)
    t.add("c")
    t.heartbeat("c", 7, 0.0)
    assert t.link("c", True, 0.0) is not None and t.up() == {"c"}
    assert t.remove("c") == PeerDown("c")
    assert t.up() == frozenset() and t.heartbeat("c", 8, 0.1) is None  # no longer tracked
    assert t.remove("b") is None  # was never up


def test_keyring_pins_the_new_members_and_drops_the_one_that_left(tmp_path: Path) -> None:
    for n in ("a", "b", "c"):
        generate(tmp_path, n)
    keys = public_keys(tmp_path)
    ring = KeyRing(keys, tmp_path, members=("a", "b", "c"))
    (tmp_path / "c.key").unlink()
    assert ring.refresh() == frozenset()  # a member's key stays while it is a member
    assert ring.pin({n: keys[n] for n in ("a", "b")}) == {"c"}
    assert ring.name_of(keys["c"]) is None and ring.name_of(keys["b"]) == "b"


def _reconfigure(c: Cluster, key_dir: Path, names: tuple[str, ...], full: Membership) -> Membership:
    m = Membership(tuple(p for p in full.peers if p.name in names))
    for n in names:
        if n in c.nodes and n in m:
            c.nodes[n].set_membership(m, CurveKeys.load(key_dir, n, m.names))
    c.membership = m
    return m


def test_a_fourth_member_joins_and_leaves_running_transports_without_quorum_loss(
    make_cluster: Callable[..., Cluster], key_dir: Path
) -> None:
    c = make_cluster(4)
    full = c.membership
    _reconfigure(c, key_dir, ("a", "b", "c"), full)
    c.start("a", "b", "c")
    abc = ("a", "b", "c")
    wait_until(lambda: c.full_mesh(abc) and c.all_quorate(abc))
    assert c.nodes["a"].quorum.expected == 3

    # add d: the three learn first (3 of 4 votes is still a majority), then d starts
    _reconfigure(c, key_dir, ("a", "b", "c", "d"), full)
    wait_until(lambda: all(c.nodes[n].quorum.expected == 4 for n in abc))
    assert c.all_quorate(abc)
    c.start("d")
    wait_until(lambda: c.full_mesh() and c.all_quorate())
    c.recorders["a"].items.clear()
    assert c.nodes["a"].send("d", Heartbeat("a", 1, 1, 0.0))  # a link exists to the new member

    # remove d: it stops first (3 of 4 stay quorate), then the three drop it
    c.stop("d")
    wait_until(lambda: all("d" not in c.nodes[n].peers_up() for n in abc))
    assert c.all_quorate(abc)
    _reconfigure(c, key_dir, abc, full)
    wait_until(lambda: all(c.nodes[n].quorum.expected == 3 for n in abc))
    assert c.all_quorate(abc) and c.nodes["a"].quorum.votes == 3
    with pytest.raises(UnknownPeerError):
        c.nodes["a"].send("d", Heartbeat("a", 1, 2, 0.0))
    for n in abc:
        assert c.recorders[n].of(QuorumLost) == [], f"{n} lost quorum during the change"


def test_set_membership_refuses_more_than_one_change(
    make_cluster: Callable[..., Cluster], key_dir: Path
) -> None:
    c = make_cluster(5)
    full = c.membership
    _reconfigure(c, key_dir, ("a", "b", "c"), full)
    c.start("a", "b", "c")
    five = Membership(full.peers)
    with pytest.raises(ConfigError, match="one member at a time"):
        c.nodes["a"].set_membership(five, CurveKeys.load(key_dir, "a", five.names))
    swap = Membership(tuple(p for p in full.peers if p.name in ("a", "b", "d")))
    with pytest.raises(ConfigError, match="one member at a time"):
        c.nodes["a"].set_membership(swap, CurveKeys.load(key_dir, "a", swap.names))
    assert c.nodes["a"].membership.names == ("a", "b", "c")


def test_a_second_change_waits_until_the_first_is_applied(
    make_cluster: Callable[..., Cluster], key_dir: Path
) -> None:
    """Review finding: checked against a pending change, a second one could replace it before the
    I/O thread applied it, and the transport would jump two members at once."""
    c = make_cluster(5, config=TransportConfig())  # the default 0.5 s heartbeat: a wide window
    full = c.membership
    _reconfigure(c, key_dir, ("a", "b", "c"), full)
    c.start("a", "b", "c")
    abcd = Membership(tuple(p for p in full.peers if p.name in ("a", "b", "c", "d")))
    keys_abcd, keys_full = CurveKeys.load(key_dir, "a", abcd.names), CurveKeys.load(key_dir, "a", full.names)
    # The I/O thread applies a change with its next heartbeat, on the 0.5 s grid of the wall
    # clock: start just after one, so that both calls fall before the next (this raced when
    # the key files were read between them).
    interval = c.config.heartbeat_interval
    time.sleep(interval - time.time() % interval + 0.05)
    c.nodes["a"].set_membership(abcd, keys_abcd)
    if c.nodes["a"].membership.names == ("a", "b", "c"):  # not applied yet (the usual case)
        with pytest.raises(BusError, match="not applied yet"):
            c.nodes["a"].set_membership(full, keys_full)
    wait_until(lambda: c.nodes["a"].membership.names == ("a", "b", "c", "d"))
    c.nodes["a"].set_membership(full, CurveKeys.load(key_dir, "a", full.names))  # now one more is fine
    wait_until(lambda: c.nodes["a"].membership.names == ("a", "b", "c", "d", "e"))
