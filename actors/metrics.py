"""A node's Prometheus metrics (docs/OPERATIONS.md lists every one).

One :class:`NodeMetrics` per node, on its own ``CollectorRegistry`` (never the
process-global one: tests run several nodes in one process). The node runtime,
the LiveEnv and the CRM actor count into it; the core (``ha/``) knows nothing of
it. Gauges that mirror a state (quorum, peers, the service states of the last
``manager_status`` this node saw) are read when scraped; counters and histograms
are updated where the event happens.

:meth:`NodeMetrics.serve` starts prometheus_client's HTTP server on a thread,
bound to the node's bus address and its ``metrics_port`` from cluster.json.
The endpoint is read-only, unauthenticated and carries no secret (no keys, no
service commands): firewall it like any exporter (docs/SECURITY.md).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector

from ha.records import ManagerStatus
from ha.states import NodeState, ServiceState
from store.base import StoreError

SERVER_POLL = 30.0  # s between the metrics server's own wake-ups (close() wakes it at once)

# latency buckets (seconds) for store calls and lease renewals: a dir store answers in
# well under a millisecond, etcd in milliseconds; the renewal cap is ``margin/2`` (0.5 s)
FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
ROUND_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
FAILOVER_BUCKETS = (1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0, 300.0)
_LOST = frozenset({NodeState.UNKNOWN, NodeState.FENCE, NodeState.GONE})


class NodeMetrics:
    """Everything one node counts; thread-safe (prometheus_client's metrics are)."""

    def __init__(self, node: str, cluster: str = "") -> None:
        self.node = node
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.fences_started = Counter(
            "pyha_fence_attempts", "Nodes this master put in the fence state", ["node"], registry=r
        )
        self.fences = Counter(
            "pyha_fences",
            "Fences acknowledged by this master (it took the node's agent lease)",
            ["node"],
            registry=r,
        )
        self.recoveries = Counter(
            "pyha_recoveries", "Services this master recovered from a fenced node", ["from_node"], registry=r
        )
        self.migrations = Counter(
            "pyha_migrations", "Migrations and relocations this master started", ["kind"], registry=r
        )
        self.service_errors = Counter(
            "pyha_service_errors", "Services this master put in the error state", registry=r
        )
        self.failover = Histogram(
            "pyha_failover_seconds",
            "From a node's loss (last heard on the bus) to one of its services started on another node",
            buckets=FAILOVER_BUCKETS,
            registry=r,
        )
        self.lease_renewal = Histogram(
            "pyha_lease_renewal_seconds",
            "Duration of lease acquire/renew calls (lease: manager, agent = own, fence = another node's)",
            ["lease", "result"],
            buckets=FAST_BUCKETS,
            registry=r,
        )
        self.manager_round = Histogram(
            "pyha_manager_round_seconds",
            "Duration of one Manager round (master only)",
            buckets=ROUND_BUCKETS,
            registry=r,
        )
        self.store_latency = Histogram(
            "pyha_store_request_seconds", "Duration of store calls", ["op"], buckets=FAST_BUCKETS, registry=r
        )
        self.store_errors = Counter("pyha_store_errors", "Store calls that failed", ["op"], registry=r)
        self.notifications = Counter(
            "pyha_notifications", "Notification deliveries", ["target", "result"], registry=r
        )
        self.notifications_dropped = Counter(
            "pyha_notifications_dropped", "Events dropped because the notification queue was full", registry=r
        )
        self.master = Gauge("pyha_is_master", "This node's CRM is the master", registry=r)
        info = Gauge("pyha_node_info", "This node (value 1)", ["node", "cluster"], registry=r)
        info.labels(node, cluster).set(1)
        self._view = _View(node)
        r.register(self._view)
        # for failover durations: node -> when it was lost (wall time), as the master saw it
        self._lost_at: dict[str, float] = {}
        self._server: Any = None

    # -- state read at scrape time ---------------------------------------------------
    def watch_runtime(
        self,
        quorate: Callable[[], bool],
        bus_quorate: Callable[[], bool],
        store_healthy: Callable[[], bool],
        peers_up: Callable[[], Iterable[str]],
        members: Iterable[str],
        bus_stats: Callable[[], Mapping[str, int]] | None = None,
    ) -> None:
        """Gauges (and the bus's own counters) the node runtime answers when scraped."""
        self._view.runtime = (quorate, bus_quorate, store_healthy, peers_up, sorted(members))
        self._view.bus_stats = bus_stats

    def saw_raw_manager_status(self, raw: Any, ms: ManagerStatus) -> None:
        """As :meth:`saw_manager_status`, for a reader that parsed only its node's services (``ms``):
        the cluster-wide counts come from the decoded record ``raw``."""
        ss = raw.get("service_status") if isinstance(raw, dict) else None
        states = Tally(
            str(sd.get("state"))
            for sd in (ss.values() if isinstance(ss, dict) else ())
            if isinstance(sd, dict)
        )
        self._saw(states, ms)

    def saw_manager_status(self, ms: ManagerStatus) -> None:
        """The last manager_status this node read or wrote: its service and node states."""
        self._saw(Tally(sd.state for sd in ms.service_status.values()), ms)

    def _saw(self, states: Tally[str], ms: ManagerStatus) -> None:
        here = Tally(sd.state for sd in ms.service_status.values() if sd.node == self.node)
        self._view.status = (dict(states), dict(here), dict(ms.node_status), ms.master_node)

    # -- the master's events ---------------------------------------------------------
    def node_lost_at(self, node: str, when: float) -> None:
        self._lost_at.setdefault(node, when)

    def lost_at(self, node: str) -> float | None:
        return self._lost_at.get(node)

    def recovered(self, from_node: str, now: float | None = None) -> float | None:
        """Count a recovery from ``from_node``; the failover duration (s) when its loss is known."""
        self.recoveries.labels(from_node).inc()
        lost = self._lost_at.get(from_node)
        if lost is None:
            return None
        took = max(0.0, (time.time() if now is None else now) - lost)
        self.failover.observe(took)
        return took

    def node_back(self, node: str) -> None:
        self._lost_at.pop(node, None)

    # -- serving -------------------------------------------------------------------------
    def serve(self, host: str, port: int) -> None:
        """Serve ``/metrics`` on ``host:port`` from a daemon thread (OSError when the port is taken).

        prometheus-client's own ``start_http_server``, except that the server's loop wakes
        every SERVER_POLL s instead of every 0.5 s at rest (issue #17); :meth:`close` wakes it.
        """
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        server_class = type("MetricsServer", (ThreadingWSGIServer,), {"address_family": family})
        app = make_wsgi_app(self.registry)
        server: WSGIServer = make_server(host, port, app, server_class, handler_class=_QuietHandler)
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": SERVER_POLL}, name="metrics-http"
        )
        thread.daemon = True
        thread.start()
        self._server = (server, thread)

    def close(self) -> None:
        if self._server is None:
            return
        server, thread = self._server
        self._server = None
        stopper = threading.Thread(target=server.shutdown, name="metrics-stop", daemon=True)
        stopper.start()
        # serve_forever looks for the shutdown request after each wake-up: connect until it saw it
        address = server.server_address[:2]
        for _ in range(50):
            with contextlib.suppress(OSError), socket.create_connection(address, timeout=0.5):
                pass
            stopper.join(0.1)
            if not stopper.is_alive():
                break
        server.server_close()
        thread.join(timeout=5)


class _QuietHandler(WSGIRequestHandler):
    """No access log line per scrape (prometheus-client's handler does the same)."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _View(Collector):
    """Gauges read at scrape time from what the runtime and the last manager_status say."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.runtime: tuple[Any, ...] | None = None
        self.status: tuple[dict[str, int], dict[str, int], dict[str, str], str | None] | None = None
        self.bus_stats: Callable[[], Mapping[str, int]] | None = None

    def describe(self) -> Iterable[Any]:
        return []  # collected on demand (auto_describe does not call collect for an empty answer)

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        if self.bus_stats is not None:
            stats = self.bus_stats()
            frames = CounterMetricFamily(
                "pyha_bus_frames",
                "Bus frames this node sent (heartbeats not counted) and received (all, heartbeats included)",
                labels=["direction"],
            )
            frames.add_metric(["sent"], float(stats.get("sent", 0)))
            frames.add_metric(["received"], float(stats.get("received", 0)))
            yield frames
        if self.runtime is not None:
            quorate, bus_quorate, store_healthy, peers_up, members = self.runtime
            yield _gauge("pyha_quorate", "This node is quorate (bus majority and store reachable)", quorate())
            yield _gauge("pyha_bus_quorate", "The bus sees a majority of the members", bus_quorate())
            yield _gauge("pyha_store_healthy", "A store round trip succeeded recently", store_healthy())
            up = set(peers_up()) - {self.node}
            yield _gauge("pyha_bus_peers_up", "Other members the bus hears", len(up))
            yield _gauge("pyha_cluster_members", "Members in cluster.json (this node included)", len(members))
            per = GaugeMetricFamily("pyha_bus_peer_up", "The bus hears this other member", labels=["peer"])
            for m in members:
                if m != self.node:
                    per.add_metric([m], 1.0 if m in up else 0.0)
            yield per
        if self.status is not None:
            states, here, nodes, _master = self.status
            total = GaugeMetricFamily(
                "pyha_services", "Services by state (the last manager_status this node saw)", labels=["state"]
            )
            local = GaugeMetricFamily(
                "pyha_node_services", "Services on this node by state (same source)", labels=["state"]
            )
            for st in ServiceState:
                total.add_metric([st.value], float(states.get(st.value, 0)))
                local.add_metric([st.value], float(here.get(st.value, 0)))
            yield total
            yield local
            ns = GaugeMetricFamily(
                "pyha_node_state",
                "Each member's state in the last manager_status (1 = current)",
                labels=["node", "state"],
            )
            for n, state in sorted(nodes.items()):
                for s in NodeState:
                    ns.add_metric([n, s.value], 1.0 if state == s.value else 0.0)
            yield ns


def _gauge(name: str, doc: str, value: float | bool) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=float(value))


def lost(state: str) -> bool:
    """A node state in which the master counts the node as lost (failover starts)."""
    return state in _LOST


class TimedStore:
    """A Store whose calls are timed into ``pyha_store_request_seconds{op}`` (errors counted too).

    Wraps the node's store (actors/node.py); anything else the backend offers passes through.
    """

    OPS = ("read", "write", "delete", "list", "append", "take", "acquire_lease", "release_lease",
           "lease_info", "changed_since")  # fmt: skip

    def __init__(self, store: Any, metrics: NodeMetrics) -> None:
        self._store = store
        self._metrics = metrics
        for op in self.OPS:
            setattr(self, op, self._timed(op, getattr(store, op)))

    def _timed(self, op: str, call: Callable[..., Any]) -> Callable[..., Any]:
        hist = self._metrics.store_latency.labels(op)
        errors = self._metrics.store_errors.labels(op)

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return call(*args, **kwargs)
            except StoreError:
                errors.inc()  # not a VersionConflict: that is an answer
                raise
            finally:
                hist.observe(time.perf_counter() - t0)

        return timed

    def close(self) -> None:
        self._store.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)
