"""A local cluster's bootstrap file, ``DIR/cluster.json``, and the paths derived from it.

Written by ``ha-cluster init``; read by every ``ha-node``. It names the
members and their bus endpoints, the store, the keys and the timing. The
cluster's records (resources.cfg, manager_status, ...) live in the store.

The store setting (``"store"``) is ``"dir"`` (default: the folder
``DIR/store``, one host) or an etcd URL
``etcd://h1:p1,h2:p2/<cluster>?timeout=SECONDS`` (docs/ETCD.md). Everything
that opens the cluster's store goes through :meth:`ClusterConfig.open_store`.
With ``ha-cluster init --store etcd --netns`` the etcd members are run by
``ha-cluster`` itself, one per node in the node's network namespace; the
``"etcd"`` section (:class:`LocalEtcd`) describes them.

etcd is reached over TLS with a client certificate (docs/ETCD.md "TLS"): the
``"etcd_tls"`` section (:class:`EtcdTlsPaths`) names the CA certificate and the
client certificate and key (paths relative to the cluster directory, or
absolute), which :attr:`ClusterConfig.store_url` adds to the store URL. Plain
http only with ``insecure=1`` in the store URL itself.

Operations (docs/OPERATIONS.md): a node entry may name a ``metrics_port``, where
the node serves Prometheus metrics on its bus address; the ``"notify"`` section
(:class:`NotifyConfig`) names where fence, recovery and error events go.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from admin.timing import LeaseTiming
from fence.procfs import cgroup2_mount
from ha.constants import Timing as CoreTiming
from ha.errors import ConfigError
from store import open_store as open_store_url
from store.base import Store

if TYPE_CHECKING:  # the etcd modules load only where a cluster uses etcd (ha-manager start-up time)
    from store.etcd_launch import EtcdMember, MemberTls
    from store.etcd_tls import TlsFiles

CLUSTER_FILE = "cluster.json"
# DIR/<this>: the CA and certificates of the etcd ha-cluster runs itself (store/etcd_tls.py)
ETCD_TLS_DIR = "etcd-tls"
# run/<node>/<this>: why a node is stopping ("shutdown", "reboot" or "restart"), written by
# ha-cluster stop/reboot/restart before it signals the node, read by the node on SIGTERM
SHUTDOWN_FILE = "shutdown-request"
WATCHDOG_DRIVERS = ("auto", "device", "userspace")
_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")

STORE_DIR = "dir"
# Every Store call of a node gives up after this long on etcd (docs/ETCD.md: "timeout=1 is a
# good choice for the agents' renewals"); see ClusterConfig.store_problems for the bound.
DEFAULT_ETCD_TIMEOUT = 1.0


@dataclass(frozen=True)
class LocalEtcd:
    """The etcd cluster ``ha-cluster`` runs itself (``init --store etcd --netns``)."""

    token: str
    members: dict[str, EtcdMember]
    heartbeat_ms: int = 100
    election_ms: int = 1000

    @property
    def tls(self) -> bool:
        """The members speak https (every member alike; a cluster.json of before TLS: no)."""
        return all(m.tls for m in self.members.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "token": self.token,
            "tls": self.tls,
            "heartbeat_ms": self.heartbeat_ms,
            "election_ms": self.election_ms,
            "members": {
                n: {"host": m.host, "client_port": m.client_port, "peer_port": m.peer_port}
                for n, m in sorted(self.members.items())
            },
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], path: str) -> LocalEtcd:
        from store.etcd_launch import EtcdMember  # noqa: PLC0415 - see TYPE_CHECKING above

        try:
            tls = bool(d.get("tls", False))
            members = {
                str(n): EtcdMember(str(n), str(v["host"]), int(v.get("client_port", 2379)),
                                   int(v.get("peer_port", 2380)), tls=tls)
                for n, v in dict(d["members"]).items()
            }  # fmt: skip
            return cls(
                str(d["token"]), members, int(d.get("heartbeat_ms", 100)), int(d.get("election_ms", 1000))
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ConfigError(f"bad 'etcd' section: {e!r}", path) from None

    @property
    def initial_cluster(self) -> str:
        from store.etcd_launch import initial_cluster  # noqa: PLC0415 - see TYPE_CHECKING above

        return initial_cluster([m for _, m in sorted(self.members.items())])


@dataclass(frozen=True)
class EtcdTlsPaths:
    """The ``"etcd_tls"`` section: the CA that signed the etcd members' certificates, and the
    client certificate and key the nodes and tools present (relative to the cluster dir)."""

    ca: str
    cert: str
    key: str

    def files(self, root: Path) -> TlsFiles:
        from store.etcd_tls import TlsFiles  # noqa: PLC0415 - see TYPE_CHECKING above

        return TlsFiles(*(root / p for p in (self.ca, self.cert, self.key)))

    def to_dict(self) -> dict[str, str]:
        return {"ca": self.ca, "cert": self.cert, "key": self.key}

    @classmethod
    def from_dict(cls, d: dict[str, Any], path: str) -> EtcdTlsPaths:
        try:
            values = [d[k] for k in ("ca", "cert", "key")]
        except KeyError as e:
            raise ConfigError(f"'etcd_tls' needs ca, cert and key (missing {e})", path) from None
        if not all(isinstance(v, str) and v for v in values):
            raise ConfigError("'etcd_tls': ca, cert and key must be file paths", path)
        return cls(*values)


NOTIFY_EVENTS = ("fence", "fenced", "recovery", "error")


@dataclass(frozen=True)
class NotifyConfig:
    """The ``"notify"`` section: where the master sends fence, recovery and error events.

    ``hook``: an executable (absolute path, run without a shell; the event as JSON on
    stdin and ``PYHA_*`` variables); ``webhook``: an http(s) URL (a JSON POST);
    ``smtp``: ``host:port`` of a mail relay, with ``mail_to`` (and ``mail_from``);
    ``events``: which events (default all of :data:`NOTIFY_EVENTS`); ``timeout``: the
    seconds one delivery may take.
    """

    hook: str | None = None
    webhook: str | None = None
    smtp: str | None = None
    mail_to: tuple[str, ...] = ()
    mail_from: str = "pyha@localhost"
    events: tuple[str, ...] = NOTIFY_EVENTS
    timeout: float = 5.0

    @property
    def targets(self) -> list[str]:
        return [t for t in ("hook", "webhook", "smtp") if getattr(self, t)]

    @property
    def smtp_address(self) -> tuple[str, int]:
        assert self.smtp is not None
        host, _, port = self.smtp.rpartition(":")
        return host.strip("[]"), int(port)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {k: getattr(self, k) for k in ("hook", "webhook", "smtp") if getattr(self, k)}
        if self.mail_to:
            d["mail_to"] = list(self.mail_to)
            d["mail_from"] = self.mail_from
        d["events"] = list(self.events)
        d["timeout"] = self.timeout
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], path: str) -> NotifyConfig:
        def text(key: str) -> str | None:
            v = d.get(key)
            if v is not None and (not isinstance(v, str) or not v):
                raise ConfigError(f"'notify': {key} must be a non-empty string", path)
            return v

        mail_to = d.get("mail_to") or []
        if isinstance(mail_to, str):
            mail_to = [mail_to]
        events = d.get("events", list(NOTIFY_EVENTS))
        try:
            cfg = cls(
                hook=text("hook"),
                webhook=text("webhook"),
                smtp=text("smtp"),
                mail_to=tuple(str(m) for m in mail_to),
                mail_from=text("mail_from") or "pyha@localhost",
                events=tuple(str(e) for e in events),
                timeout=float(d.get("timeout", 5.0)),
            )
        except (TypeError, ValueError) as e:
            raise ConfigError(f"bad 'notify' section: {e}", path) from None
        if cfg.hook is not None and not cfg.hook.startswith("/"):
            raise ConfigError("'notify': hook must be an absolute path", path)
        if cfg.webhook is not None and not cfg.webhook.startswith(("http://", "https://")):
            raise ConfigError("'notify': webhook must be an http:// or https:// URL", path)
        if cfg.smtp is not None:
            try:
                cfg.smtp_address  # noqa: B018 - validates host:port
            except ValueError:
                raise ConfigError("'notify': smtp must be HOST:PORT", path) from None
            if not cfg.mail_to:
                raise ConfigError("'notify': smtp needs mail_to", path)
        unknown = sorted(set(cfg.events) - set(NOTIFY_EVENTS))
        if unknown:
            raise ConfigError(f"'notify': unknown events {unknown} (known: {', '.join(NOTIFY_EVENTS)})", path)
        if not 0 < cfg.timeout <= 60:
            raise ConfigError("'notify': timeout must be > 0 and <= 60 seconds", path)
        return cfg


def _version(value: object, path: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError("config_version must be a whole number >= 1", path)
    return value


@dataclass
class ClusterConfig:
    root: Path
    cluster: str
    nodes: dict[str, str]  # node name -> bus endpoint (tcp://host:port)
    curve: bool = True
    timing: LeaseTiming = field(default_factory=LeaseTiming)
    max_workers: int = 4
    # how often the watchdog actor considers a pet (below the client timeout, renew_interval +
    # margin/2). Liveness only: the watchdog's deadline is bounded by the last lease renewal
    # that let a client update, not by this interval (docs/RUNTIME.md, "Safety: leases and the
    # watchdog"). 0.5 s: one wake-up of the ticker per lease round (issue #17; was 0.1, 0.25).
    pet_interval: float = 0.5
    # seconds a worker may run one agent command before it is declared hung
    command_timeout: float = 60.0
    # seconds between two status checks of a running service (the reference's 10 s round);
    # failure detection of a node does not depend on it (docs/RUNTIME.md, "At rest")
    recheck_interval: float = 10.0
    cgroups: bool = True
    # node name -> network namespace the node runs in (partition tests), optional
    netns: dict[str, str] = field(default_factory=dict)
    # what ``ha-cluster init --netns`` created (cli/netns.py), for partition/heal/destroy
    network: dict[str, Any] | None = None
    # "dir" or an etcd:// URL (docs/ETCD.md)
    store: str = STORE_DIR
    # the etcd members ha-cluster runs itself (init --store etcd --netns), else None
    etcd: LocalEtcd | None = None
    # the certificates the nodes and tools present to etcd (docs/ETCD.md "TLS")
    etcd_tls: EtcdTlsPaths | None = None
    # the watchdog driver (docs/RUNTIME.md): "auto" (the device where it exists, else user
    # space), "device" (refuse to start without it) or "userspace"
    watchdog: str = "auto"
    watchdog_device: str = "/dev/watchdog"
    # node name -> the TCP port its Prometheus metrics are served on (its bus address); a node
    # without one serves none (docs/OPERATIONS.md)
    metrics_ports: dict[str, int] = field(default_factory=dict)
    # where the master sends fence, recovery and error events (None: nowhere)
    notify: NotifyConfig | None = None
    # the membership's version: ``ha-cluster add-node``/``remove-node`` raise it by one with
    # each change of ``nodes`` (one member at a time; running nodes follow, docs/OPERATIONS.md)
    config_version: int = 1

    # -- store ----------------------------------------------------------------
    @property
    def store_kind(self) -> str:
        """``dir`` or ``etcd``."""
        return "etcd" if self.store.startswith("etcd://") else STORE_DIR

    @property
    def store_url(self) -> str:
        """The URL :meth:`open_store` opens: ``store`` with the ``etcd_tls`` files (absolute)
        unless ``store`` names certificates itself."""
        if self.store_kind == STORE_DIR:
            return f"dir:{self.store_dir}"
        from store.etcd_url import TLS_OPTIONS, with_options  # noqa: PLC0415 - see TYPE_CHECKING above

        named = urllib.parse.parse_qs(self.store.partition("?")[2], keep_blank_values=True)
        if self.etcd_tls is None or any(k in named for k in TLS_OPTIONS):
            return self.store
        f = self.etcd_tls.files(self.root)
        return with_options(self.store, ca=str(f.ca), cert=str(f.cert), key=str(f.key))

    def open_store(self) -> Store:
        """The cluster's store: the one way every node and tool opens it."""
        return open_store_url(self.store_url)

    @property
    def store_timeout(self) -> float | None:
        """The etcd store's per-call timeout (None for ``dir``)."""
        if self.store_kind == STORE_DIR:
            return None
        from store.etcd_url import parse_url  # noqa: PLC0415

        return parse_url(self.store_url).timeout

    @property
    def renew_latency_cap(self) -> float:
        """A lease call that took longer than this does not count as a renewal (docs/RUNTIME.md).

        SAFETY: the watchdog argument anchors the last pet at the renewal's start ``t0``
        plus the call's duration; capping the duration at ``margin/2`` keeps the rule
        ``lease_ttl > watchdog_timeout + renew_interval + margin`` sufficient.
        """
        return self.timing.margin / 2

    @property
    def watchdog_guard_timeout(self) -> float:
        """Silence from ha-watchdog after which the node fences itself (actors/watchdog.py).

        SAFETY: ``margin``; docs/RUNTIME.md shows that the guard then fires before
        the node's lease can expire in every order of faults it covers.
        """
        return self.timing.margin

    @property
    def store_quorum_window(self) -> float:
        """The node is quorate only if a store round trip that started this recently succeeded.

        ``lease_ttl - watchdog_timeout``: a node out of reach of the store (the etcd
        majority) for this long stops petting, so its watchdog fires at most
        ``lease_ttl`` after its last successful store contact.
        """
        return self.timing.lease_ttl - self.timing.watchdog_timeout

    def store_problems(self) -> list[str]:
        """Why the store setting is unusable with this timing (empty when fine)."""
        if self.store == STORE_DIR:
            return []
        if not self.store.startswith("etcd://"):
            return [f"store must be 'dir' or an etcd://host:port,.../cluster URL, got {self.store!r}"]
        from store.etcd_url import parse_url  # noqa: PLC0415

        try:
            u = parse_url(self.store_url)
        except ValueError as e:
            return [str(e)]
        missing = [p for p in u.tls or () if not Path(p).is_file()]
        if missing:
            return [f"etcd TLS file(s) not found: {', '.join(missing)}"]
        t = self.timing
        bound = t.lease_ttl - t.watchdog_timeout - t.renew_interval - t.margin / 2
        if u.timeout > bound:
            # a renewal attempt must end (succeed or fail) well before the lease could be
            # taken over, so the node stops updating its watchdog in time
            return [
                f"etcd store timeout {u.timeout:g}s must be at most lease_ttl - watchdog_timeout"
                f" - renew_interval - margin/2 = {bound:g}s"
            ]
        return []

    # -- paths ----------------------------------------------------------------
    @property
    def store_dir(self) -> Path:
        return self.root / "store"

    @property
    def keys_dir(self) -> Path:
        return self.root / "keys"

    @property
    def state_dir(self) -> Path:
        """Resource agents' per-node state (agents/proc.py: ``<state>/<node>/proc``)."""
        return self.root / "state"

    def run_dir(self, node: str) -> Path:
        return self.root / "run" / node

    def log_file(self, node: str) -> Path:
        return self.root / "logs" / f"{node}.log"

    @property
    def cgroup_base(self) -> Path | None:
        """Where this cluster's services get their cgroups: ``<cgroup2>/pyha/<cluster>-<tag>``.

        Scoped per cluster (the tag hashes the cluster directory), so a node's
        watchdog or ``ha-cluster kill`` never touches another cluster's services
        on the same host. None when cgroups are off or cgroup v2 is not mounted.
        """
        if not self.cgroups:
            return None
        mount = cgroup2_mount()
        if mount is None:
            return None
        tag = hashlib.sha1(str(self.root).encode()).hexdigest()[:8]
        return mount / "pyha" / f"{self.cluster}-{tag}"

    def metrics_address(self, node: str) -> tuple[str, int] | None:
        """Where NODE serves its metrics: its bus host and its ``metrics_port`` (None: no metrics)."""
        port = self.metrics_ports.get(node)
        if port is None:
            return None
        host = urllib.parse.urlsplit(self.nodes[node]).hostname or "127.0.0.1"
        return host, port

    def watchdog_socket(self, node: str) -> Path:
        return self.run_dir(node) / "watchdog.sock"

    # the locally run etcd members (ha-cluster init --store etcd --netns)
    def etcd_data_dir(self, node: str) -> Path:
        return self.root / "etcd" / f"{node}.etcd"

    def etcd_log(self, node: str) -> Path:
        return self.root / "logs" / f"{node}.etcd.log"

    def etcd_pid_file(self, node: str) -> Path:
        return self.run_dir(node) / "etcd.pid"

    @property
    def etcd_tls_dir(self) -> Path:
        """The CA and certificates of the locally run etcd members (0700, files 0600)."""
        return self.root / ETCD_TLS_DIR

    def etcd_member_tls(self, node: str) -> MemberTls | None:
        """NODE's member certificate, for its command line (None for plain-http members)."""
        if self.etcd is None or not self.etcd.members[node].tls:
            return None
        from store.etcd_launch import MemberTls  # noqa: PLC0415 - see TYPE_CHECKING above
        from store.etcd_tls import TlsFiles, member_cert_name  # noqa: PLC0415

        return MemberTls(TlsFiles.of(self.etcd_tls_dir, member_cert_name(node)))

    def core_timing(self) -> CoreTiming:
        """The core's timings for live rounds: ticks of ``renew_interval``, short fence delay."""
        t = self.timing
        return CoreTiming(
            fence_delay=t.fence_delay,
            gone_delete_delay=3600.0,
            crm_loop=t.renew_interval,
            lrm_loop=t.renew_interval,
            lrm_maintenance_loop=t.renew_interval,
            wait_sleep=t.renew_interval,
            lock_max_seconds=0.0,  # no blocking retries: the next tick retries
            lrm_restart_give_up=90.0,
            worker_slot_budget=0.0,
            # idle limits in rounds: keep the reference's wall-clock order of magnitude
            crm_max_idle_rounds=int(900 / t.renew_interval),
            lrm_max_idle_rounds=int(600 / t.renew_interval),
        )

    # -- file -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        t = self.timing
        return {
            "cluster": self.cluster,
            "config_version": self.config_version,
            "nodes": {n: self._node_dict(n) for n in sorted(self.nodes)},
            "curve": self.curve,
            "timing": {
                "lease_ttl": t.lease_ttl,
                "renew_interval": t.renew_interval,
                "watchdog_timeout": t.watchdog_timeout,
                "margin": t.margin,
                "fence_delay": t.fence_delay,
            },
            "max_workers": self.max_workers,
            "command_timeout": self.command_timeout,
            "recheck_interval": self.recheck_interval,
            "cgroups": self.cgroups,
            "netns": dict(self.netns),
            "network": self.network,
            "store": self.store,
            "etcd": self.etcd.to_dict() if self.etcd is not None else None,
            "etcd_tls": self.etcd_tls.to_dict() if self.etcd_tls is not None else None,
            "watchdog": self.watchdog,
            "watchdog_device": self.watchdog_device,
            "notify": self.notify.to_dict() if self.notify is not None else None,
        }

    def _node_dict(self, node: str) -> dict[str, Any]:
        d: dict[str, Any] = {"endpoint": self.nodes[node]}
        if node in self.metrics_ports:
            d["metrics_port"] = self.metrics_ports[node]
        return d

    def save(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / CLUSTER_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        os.replace(tmp, path)

    @classmethod
    def load(cls, root: str | Path) -> ClusterConfig:
        root = Path(root).resolve()
        path = root / CLUSTER_FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError("no cluster here (run 'ha-cluster init' first)", str(path)) from None
        except (OSError, ValueError) as e:
            raise ConfigError(f"cannot read: {e}", str(path)) from None
        if not isinstance(data, dict):
            raise ConfigError("expected a JSON object", str(path))
        nodes_raw = data.get("nodes")
        if not isinstance(nodes_raw, dict) or not nodes_raw:
            raise ConfigError("'nodes' must map node names to {endpoint}", str(path))
        nodes: dict[str, str] = {}
        metrics_ports: dict[str, int] = {}
        for name, spec in nodes_raw.items():
            if not _NAME.match(name):
                raise ConfigError(f"invalid node name '{name}'", str(path))
            endpoint = spec.get("endpoint") if isinstance(spec, dict) else None
            if not isinstance(endpoint, str) or not endpoint.startswith("tcp://"):
                raise ConfigError(f"node '{name}': endpoint must be tcp://HOST:PORT", str(path))
            nodes[name] = endpoint
            port = spec.get("metrics_port")
            if port is not None:
                if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
                    raise ConfigError(f"node '{name}': metrics_port must be a TCP port number", str(path))
                metrics_ports[name] = port
        timing = LeaseTiming.from_mapping(data.get("timing") or {}, str(path))
        cfg = cls(
            root=root,
            cluster=str(data.get("cluster") or "pyha"),
            nodes=nodes,
            curve=bool(data.get("curve", True)),
            timing=timing,
            max_workers=int(data.get("max_workers", 4)),
            command_timeout=float(data.get("command_timeout", 60.0)),
            recheck_interval=float(data.get("recheck_interval", 10.0)),
            cgroups=bool(data.get("cgroups", True)),
            netns={str(k): str(v) for k, v in (data.get("netns") or {}).items()},
            network=data.get("network") if isinstance(data.get("network"), dict) else None,
            store=str(data.get("store") or STORE_DIR),
            etcd=LocalEtcd.from_dict(data["etcd"], str(path)) if isinstance(data.get("etcd"), dict) else None,
            etcd_tls=(
                EtcdTlsPaths.from_dict(data["etcd_tls"], str(path))
                if isinstance(data.get("etcd_tls"), dict)
                else None
            ),
            watchdog=str(data.get("watchdog") or "auto"),
            watchdog_device=str(data.get("watchdog_device") or "/dev/watchdog"),
            metrics_ports=metrics_ports,
            config_version=_version(data.get("config_version", 1), str(path)),
            notify=(
                NotifyConfig.from_dict(data["notify"], str(path))
                if isinstance(data.get("notify"), dict)
                else None
            ),
        )
        if cfg.watchdog not in WATCHDOG_DRIVERS:
            raise ConfigError(
                f"watchdog must be one of {', '.join(WATCHDOG_DRIVERS)}, got {cfg.watchdog!r}", str(path)
            )
        if cfg.max_workers < 1:
            raise ConfigError("max_workers must be >= 1", str(path))
        if not 0 < cfg.recheck_interval <= 3600:
            raise ConfigError("recheck_interval must be > 0 and <= 3600 seconds", str(path))
        probs = cfg.store_problems()
        if probs:
            raise ConfigError("; ".join(probs), str(path))
        if cfg.etcd is not None and (not cfg.etcd.members or not set(cfg.etcd.members) <= set(cfg.nodes)):
            # a member runs in its node's namespace (init --etcd-members: on the first nodes)
            raise ConfigError(
                "the 'etcd' section's members must be nodes of the cluster (one at least)", str(path)
            )
        return cfg
