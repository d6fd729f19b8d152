"""What a node announces on the bus (ha/announce.py): changed requests yes, re-checks no."""

from __future__ import annotations

import pytest

from ha.announce import Announcer, Command, Reporter, ResultMessage, route_results
from ha.records import LrmResult, ManagerStatus, ServiceData

ME = "node1"


def ms_of(*entries: tuple[str, ServiceData], master: str | None = ME) -> ManagerStatus:
    ms = ManagerStatus()
    ms.master_node = master
    ms.service_status = dict(entries)
    return ms


def sd(state: str, node: str, uid: str | None, target: str | None = None, timeout: int | None = None,
       running: bool = False) -> ServiceData:  # fmt: skip
    return ServiceData(state=state, node=node, uid=uid, target=target, timeout=timeout, running=running)


# (case, what this node announced before, the new manager_status entry of vm:100,
#  commands expected, superseded uids, re-check sids)
ANNOUNCE_CASES = [
    (
        "new request, other node",
        None,
        sd("started", "node2", "u1"),
        [Command("vm:100", "u1", "started", "node2", None)],
        [],
        [],
    ),
    (
        "new request, own LRM",
        None,
        sd("started", ME, "u1"),
        [Command("vm:100", "u1", "started", ME, None)],
        [],
        [],
    ),
    ("unchanged uid", sd("started", "node2", "u1"), sd("started", "node2", "u1"), [], [], []),
    (
        "re-check: started, only the uid differs",
        sd("started", "node2", "u1"),
        sd("started", "node2", "u2"),
        [],
        ["u1"],
        ["vm:100"],
    ),
    (
        "started again after a stop is no re-check",
        sd("request_stop", "node2", "u1"),
        sd("started", "node2", "u2"),
        [Command("vm:100", "u2", "started", "node2", None)],
        ["u1"],
        [],
    ),
    (
        "same state but not started: announced",
        sd("stopped", "node2", "u1"),
        sd("stopped", "node2", "u2"),
        [Command("vm:100", "u2", "stopped", "node2", None)],
        ["u1"],
        [],
    ),
    (
        "started on another node: announced to the new node",
        sd("started", "node2", "u1"),
        sd("started", "node3", "u2"),
        [Command("vm:100", "u2", "started", "node3", None)],
        ["u1"],
        [],
    ),
    (
        "migrate: target in the command",
        sd("started", "node2", "u1"),
        sd("migrate", "node2", "u2", "node3"),
        [Command("vm:100", "u2", "migrate", "node2", "node3")],
        ["u1"],
        [],
    ),
    (
        "stop with a timeout",
        sd("started", "node2", "u1"),
        sd("request_stop", "node2", "u2", timeout=60),
        [Command("vm:100", "u2", "request_stop", "node2", None, (("timeout", 60),))],
        ["u1"],
        [],
    ),
    (
        "started, timeout changed: no re-check",
        sd("started", "node2", "u1", timeout=10),
        sd("started", "node2", "u2"),
        [Command("vm:100", "u2", "started", "node2", None)],
        ["u1"],
        [],
    ),
    ("no uid: nothing", None, sd("started", "node2", None), [], [], []),
    ("no node: nothing", None, sd("started", "", "u1"), [], [], []),
]


@pytest.mark.parametrize(
    ("before", "after", "commands", "superseded", "rechecks"),
    [c[1:] for c in ANNOUNCE_CASES],
    ids=[c[0] for c in ANNOUNCE_CASES],
)
def test_announce(
    before: ServiceData | None,
    after: ServiceData,
    commands: list[Command],
    superseded: list[str],
    rechecks: list[str],
) -> None:
    a = Announcer(ME)
    if before is not None:
        first = a.after_write(ms_of(("vm:100", before)))
        assert [c.uid for c in first.commands] == [before.uid]
    out = a.after_write(ms_of(("vm:100", after)))
    assert list(out.commands) == commands
    assert list(out.superseded) == superseded
    assert list(out.rechecks) == rechecks
    assert out.wake_lrm == any(c.destination == ME for c in commands)
    assert [c.destination for c in out.to_send()] == [c.node for c in commands if c.node != ME]


def test_recheck_chain_announces_nothing_until_the_request_changes() -> None:
    """A service checked again and again: one command, then silence, then the stop is sent."""
    a = Announcer(ME)
    assert len(a.after_write(ms_of(("vm:100", sd("started", "node2", "u1")))).commands) == 1
    for i in range(2, 6):
        out = a.after_write(ms_of(("vm:100", sd("started", "node2", f"u{i}"))))
        assert out.commands == () and out.rechecks == ("vm:100",) and out.superseded == (f"u{i - 1}",)
    out = a.after_write(ms_of(("vm:100", sd("request_stop", "node2", "u9"))))
    assert [c.uid for c in out.commands] == ["u9"]


def test_forgotten_service_is_announced_afresh_when_it_returns() -> None:
    a = Announcer(ME)
    a.after_write(ms_of(("vm:100", sd("started", "node2", "u1"))))
    out = a.after_write(ms_of())
    assert out == type(out)(ME)  # nothing to announce, nothing superseded
    out = a.after_write(ms_of(("vm:100", sd("started", "node2", "u2"))))
    assert [c.uid for c in out.commands] == ["u2"] and out.rechecks == ()


def test_new_process_announces_everything() -> None:
    a = Announcer(ME)
    ms = ms_of(("vm:100", sd("started", "node2", "u1")), ("ct:101", sd("stopped", "node3", "u2")))
    a.after_write(ms)
    assert a.after_write(ms).commands == ()  # the same process: announced already
    assert [c.sid for c in Announcer(ME).after_write(ms).commands] == ["vm:100", "ct:101"]


def test_several_services_in_one_write() -> None:
    a = Announcer(ME)
    a.after_write(ms_of(("vm:100", sd("started", "node2", "u1")), ("vm:101", sd("started", ME, "u2"))))
    out = a.after_write(
        ms_of(("vm:100", sd("started", "node2", "u3")), ("vm:101", sd("request_stop", ME, "u4")))
    )
    assert [c.uid for c in out.commands] == ["u4"] and out.to_send() == () and out.wake_lrm
    assert out.rechecks == ("vm:100",) and out.superseded == ("u1", "u2")


# -- results ----------------------------------------------------------------------------------

OK_STARTED = LrmResult("vm:100", "started", 0)
# (case, the result, vm:100 in manager_status (None: absent), master, sent to, held)
RESULT_CASES = [
    ("re-check answer held", OK_STARTED, sd("started", ME, "u1", running=True), "node2", None, True),
    ("first start: not yet running", OK_STARTED, sd("started", ME, "u1"), "node2", "node2", False),
    (
        "failed start",
        LrmResult("vm:100", "started", 1),
        sd("started", ME, "u1", running=True),
        "node2",
        "node2",
        False,
    ),
    (
        "running elsewhere (moved)",
        OK_STARTED,
        sd("started", "node3", "u1", running=True),
        "node2",
        "node2",
        False,
    ),
    (
        "stop result",
        LrmResult("vm:100", "request_stop", 0),
        sd("started", ME, "u1", running=True),
        "node2",
        "node2",
        False,
    ),
    ("unknown to the master", OK_STARTED, None, "node2", "node2", False),
    ("master is this node", LrmResult("vm:100", "migrate", 0), sd("migrate", ME, "u1"), ME, ME, False),
    ("no master known", LrmResult("vm:100", "migrate", 0), sd("migrate", ME, "u1"), None, None, False),
]


@pytest.mark.parametrize(
    ("result", "entry", "master", "dest", "held"),
    [c[1:] for c in RESULT_CASES],
    ids=[c[0] for c in RESULT_CASES],
)
def test_route_results(
    result: LrmResult, entry: ServiceData | None, master: str | None, dest: str | None, held: bool
) -> None:
    ms = ms_of(*([("vm:100", entry)] if entry is not None else []), master=master)
    out = route_results(ME, [("r1", result)], ms)
    if held:
        assert out.held == ("r1",) and out.results == () and not out.wake_crm
        return
    assert out.held == ()
    assert out.results == (ResultMessage("vm:100", "r1", result.exit_code, dest),)
    local = dest in (None, ME)
    assert out.wake_crm == local
    assert len(out.to_send()) == (0 if local else 1)


def test_unreadable_manager_status_holds_nothing_back() -> None:
    out = route_results(ME, [("r1", OK_STARTED)], None)
    assert out.held == () and out.wake_crm and out.to_send() == ()


def test_reporter_takes_each_result_once() -> None:
    rep = Reporter(ME)
    r1, r2 = LrmResult("vm:100", "started", 0), LrmResult("vm:101", "stopped", 0)
    assert rep.take_new({"a": r1}) == [("a", r1)]
    assert rep.take_new({"a": r1, "b": r2}) == [("b", r2)]
    assert rep.take_new({"b": r2}) == []
    assert Reporter(ME).take_new({"b": r2}) == [("b", r2)]
