"""The notifier (actors/notifier.py): hook, webhook and SMTP targets, and that no target can block."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actors.metrics import NodeMetrics
from actors.notifier import Notifier
from admin.cluster import NotifyConfig
from ha.errors import ConfigError
from tests.listeners import SmtpStub, Webhook


def wait_for(pred: Any, timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError("timed out")


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    w = Webhook()
    yield w
    w.close()


def counted(m: NodeMetrics, target: str, result: str) -> float:
    v = m.registry.get_sample_value("pyha_notifications_total", {"target": target, "result": result})
    return v or 0.0


def test_webhook_receives_the_event_as_json(webhook: Webhook) -> None:
    m = NodeMetrics("n1", "c1")
    n = Notifier(NotifyConfig(webhook=webhook.url), cluster="c1", node="n1", metrics=m)
    try:
        assert n.submit("fence", "FENCE: Try to fence node 'n2'", node="n2", message="Try to fence node 'n2'")
        wait_for(lambda: webhook.bodies)
        ev = webhook.bodies[0]
        assert (ev["event"], ev["cluster"], ev["reporter"], ev["node"]) == ("fence", "c1", "n1", "n2")
        assert ev["subject"] == "FENCE: Try to fence node 'n2'"
        assert webhook.paths == ["/hook"]
        wait_for(lambda: counted(m, "webhook", "sent") == 1)
    finally:
        n.close()


def test_hook_gets_json_on_stdin_and_env(tmp_path: Path) -> None:
    out = tmp_path / "out"
    hook = tmp_path / "hook.sh"
    hook.write_text(
        f'#!/bin/sh\necho "$PYHA_EVENT $PYHA_SID $PYHA_NODE $PYHA_CLUSTER" > {out}.env\ncat > {out}\n'
    )
    hook.chmod(0o700)
    n = Notifier(NotifyConfig(hook=str(hook)), cluster="c1", node="n1")
    try:
        n.submit("recovery", "RECOVERY: ...", sid="ct:1", node="n2", to_node="n3")
        wait_for(lambda: out.exists() and out.read_text())
        ev = json.loads(out.read_text())
        assert (ev["event"], ev["sid"], ev["node"], ev["to_node"]) == ("recovery", "ct:1", "n2", "n3")
        assert (tmp_path / "out.env").read_text().split() == ["recovery", "ct:1", "n2", "c1"]
    finally:
        n.close()


def test_smtp_mail_to_a_local_relay() -> None:
    smtp = SmtpStub()
    cfg = NotifyConfig(smtp=smtp.address, mail_to=("ops@example.org",), mail_from="ha@example.org")
    n = Notifier(cfg, cluster="c1", node="n1")
    try:
        n.submit("fenced", "SUCCEED: fencing: acknowledged - got agent lock for node 'n2'", node="n2")
        wait_for(lambda: smtp.mails)
        sender, rcpts, data = smtp.mails[0]
        assert sender == "<ha@example.org>"
        assert rcpts == ["<ops@example.org>"]
        assert "Subject: SUCCEED: fencing: acknowledged - got agent lock for node 'n2'" in data
        assert "node: n2" in data
    finally:
        n.close()
        smtp.close()


def test_a_slow_or_dead_target_never_blocks_the_submitter(tmp_path: Path) -> None:
    slow = Webhook(delay=3.0)
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    dead_port = dead.getsockname()[1]
    m = NodeMetrics("n1")
    cfg_slow = NotifyConfig(webhook=slow.url, timeout=0.3)
    cfg_dead = NotifyConfig(smtp=f"127.0.0.1:{dead_port}", mail_to=("x@y",), timeout=0.3)
    slow_n = Notifier(cfg_slow, cluster="c", node="n1", metrics=m, queue_size=2)
    dead_n = Notifier(cfg_dead, cluster="c", node="n1", metrics=m)
    try:
        t0 = time.monotonic()
        accepted = [slow_n.submit("error", f"ERROR {i}", sid=f"s{i}") for i in range(10)]
        dead_n.submit("error", "ERROR", sid="s")
        assert time.monotonic() - t0 < 0.2  # the manager round is never held up
        assert not all(accepted)  # the bounded queue dropped some
        dropped = m.registry.get_sample_value("pyha_notifications_dropped_total")
        assert dropped is not None and dropped == accepted.count(False)
        wait_for(lambda: counted(m, "webhook", "failed") >= 1)  # timed out after 0.3 s
        wait_for(lambda: counted(m, "smtp", "failed") == 1)
    finally:
        slow_n.close(timeout=0.1)
        dead_n.close()
        dead.close()
        slow.close()


def test_events_filter_and_no_targets(webhook: Webhook) -> None:
    n = Notifier(NotifyConfig(webhook=webhook.url, events=("fence",)), cluster="c", node="n1")
    try:
        assert not n.submit("error", "ERROR: x")
        assert n.submit("fence", "FENCE: y")
        wait_for(lambda: webhook.bodies)
        time.sleep(0.1)
        assert [b["event"] for b in webhook.bodies] == ["fence"]
    finally:
        n.close()
    empty = Notifier(NotifyConfig(), cluster="c", node="n1")
    assert not empty.submit("fence", "FENCE: z")
    empty.close()


def test_notify_section_validation() -> None:
    ok = NotifyConfig.from_dict({"webhook": "http://h:1/x", "smtp": "h:25", "mail_to": "a@b"}, "cluster.json")
    assert ok.targets == ["webhook", "smtp"]
    assert ok.mail_to == ("a@b",)
    assert NotifyConfig.from_dict(ok.to_dict(), "p") == ok
    for bad in (
        {"hook": "relative/cmd"},
        {"webhook": "ftp://h/x"},
        {"smtp": "h:25"},  # no mail_to
        {"smtp": "nohost", "mail_to": ["a@b"]},
        {"events": ["fence", "reboot"]},
        {"timeout": 0},
    ):
        with pytest.raises(ConfigError):
            NotifyConfig.from_dict(bad, "cluster.json")
