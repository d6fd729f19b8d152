"""Deliver the master's fence, recovery and error events to the targets of cluster.json's ``"notify"``.

The master's LiveEnv hands events to :meth:`Notifier.submit`, which never
blocks: a bounded queue (full: the event is dropped and counted) and one
sender thread that delivers each event to every target in turn, each delivery
bounded by the section's ``timeout``. A failed delivery is counted in the
metrics and logged, at most once per target every ``LOG_EVERY`` seconds (with
the number of failures in between). The manager round never waits for a target.

Targets (docs/OPERATIONS.md, "Notifications"):

- ``hook``: an executable run without a shell, the event as JSON on stdin and
  ``PYHA_EVENT``, ``PYHA_CLUSTER``, ``PYHA_NODE``, ``PYHA_SID``, ``PYHA_SUBJECT``
  in its environment;
- ``webhook``: an HTTP POST of the event as JSON (``Content-Type: application/json``);
- ``smtp``: a plain-text mail (subject as the reference's fence mail:
  ``FENCE: Try to fence node 'x'``) through the relay at ``host:port`` to ``mail_to``.
"""

from __future__ import annotations

import json
import os
import queue
import smtplib
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from email.message import EmailMessage
from typing import Any

from loguru import logger

from actors.metrics import NodeMetrics
from admin.cluster import NotifyConfig

QUEUE_SIZE = 256
LOG_EVERY = 60.0  # seconds between two logged failures of one target
_STOP = object()


class Notifier:
    def __init__(
        self,
        config: NotifyConfig,
        *,
        cluster: str,
        node: str,
        metrics: NodeMetrics | None = None,
        queue_size: int = QUEUE_SIZE,
    ) -> None:
        self.config = config
        self.cluster = cluster
        self.node = node
        self.metrics = metrics
        self.log = logger.bind(ident=f"{node}/notify")
        self._queue: queue.Queue[object] = queue.Queue(maxsize=queue_size)
        self._failed: dict[str, tuple[float, int]] = {}  # target -> (last logged, failures since)
        self._senders: dict[str, Callable[[dict[str, Any]], None]] = {
            "hook": self._hook,
            "webhook": self._webhook,
            "smtp": self._smtp,
        }
        self._thread = threading.Thread(target=self._run, name=f"notify-{node}", daemon=True)
        self._thread.start()

    # -- the master's side: never blocks -----------------------------------------------
    def submit(self, event: str, subject: str, **fields: Any) -> bool:
        """Queue an event for delivery; False when it is not wanted or the queue is full (dropped)."""
        if event not in self.config.events or not self.config.targets:
            return False
        body = {
            "event": event,
            "cluster": self.cluster,
            "reporter": self.node,
            "time": time.time(),
            "subject": subject,
            **fields,
        }
        try:
            self._queue.put_nowait(body)
        except queue.Full:
            if self.metrics is not None:
                self.metrics.notifications_dropped.inc()
            self._failure("queue", "queue full, event dropped")
            return False
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued (within ``timeout``), then stop the sender."""
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)

    # -- the sender thread -----------------------------------------------------------------
    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            assert isinstance(item, dict)
            for target in self.config.targets:
                try:
                    self._senders[target](item)
                except Exception as e:  # any failure of a target is counted, never raised
                    self._count(target, "failed")
                    self._failure(target, f"{type(e).__name__}: {e}")
                else:
                    self._count(target, "sent")
                    self._recovered(target)

    def _count(self, target: str, result: str) -> None:
        if self.metrics is not None:
            self.metrics.notifications.labels(target, result).inc()

    def _failure(self, target: str, why: str) -> None:
        now = time.monotonic()
        last, since = self._failed.get(target, (-LOG_EVERY, 0))
        if now - last >= LOG_EVERY:
            more = f" ({since} more failures since the last report)" if since else ""
            self.log.warning(f"notification to {target} failed: {why}{more}")
            self._failed[target] = (now, 0)
        else:
            self._failed[target] = (last, since + 1)

    def _recovered(self, target: str) -> None:
        if self._failed.pop(target, None) is not None:
            self.log.info(f"notification to {target} delivered again")

    def _hook(self, ev: dict[str, Any]) -> None:
        assert self.config.hook is not None
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYHA_EVENT": ev["event"],
            "PYHA_CLUSTER": self.cluster,
            "PYHA_NODE": str(ev.get("node") or ""),
            "PYHA_SID": str(ev.get("sid") or ""),
            "PYHA_SUBJECT": ev["subject"],
        }
        res = subprocess.run(
            [self.config.hook],
            input=json.dumps(ev).encode(),
            env=env,
            capture_output=True,
            timeout=self.config.timeout,
            check=False,
            start_new_session=True,
        )
        if res.returncode != 0:
            err = res.stderr.decode(errors="replace").strip()[-200:]
            raise RuntimeError(f"hook exited {res.returncode}" + (f": {err}" if err else ""))

    def _webhook(self, ev: dict[str, Any]) -> None:
        assert self.config.webhook is not None
        req = urllib.request.Request(
            self.config.webhook,
            data=json.dumps(ev).encode(),
            headers={"Content-Type": "application/json", "User-Agent": "pyha-notify"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=self.config.timeout) as resp:  # http(s) only (NotifyConfig)
            resp.read(4096)

    def _smtp(self, ev: dict[str, Any]) -> None:
        c = self.config
        msg = EmailMessage()
        msg["Subject"] = ev["subject"]
        msg["From"] = c.mail_from
        msg["To"] = ", ".join(c.mail_to)
        lines = [ev.get("message") or ev["subject"], ""]
        lines += [f"{k}: {v}" for k, v in ev.items() if k not in ("subject", "message")]
        msg.set_content("\n".join(lines) + "\n")
        host, port = c.smtp_address
        with smtplib.SMTP(host, port, timeout=c.timeout) as smtp:
            smtp.send_message(msg)
