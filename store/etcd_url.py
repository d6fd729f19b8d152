"""The ``etcd://`` store URL: ``etcd://HOST:PORT[,HOST:PORT...]/CLUSTER[?timeout=SECONDS]``.

The client endpoints of the etcd members (a host without a port means 2379;
IPv6 hosts in brackets); ``CLUSTER`` names the key prefix ``/pyha/CLUSTER/``,
so several pyha clusters can share one etcd; ``timeout`` bounds every Store
call (default 2 s). See docs/ETCD.md.
"""

from __future__ import annotations

import math
import urllib.parse
from dataclasses import dataclass
from typing import Final

from store.base import LEASE_NAME_RE

SCHEME: Final = "etcd://"
DEFAULT_PORT: Final = 2379
DEFAULT_CLUSTER: Final = "default"
DEFAULT_TIMEOUT: Final = 2.0


def hostport(host: str, port: int) -> str:
    """``host:port``, with an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True, slots=True)
class EtcdUrl:
    endpoints: tuple[tuple[str, int], ...]
    cluster: str
    timeout: float

    def __str__(self) -> str:
        hosts = ",".join(hostport(h, p) for h, p in self.endpoints)
        extra = "" if self.timeout == DEFAULT_TIMEOUT else f"?timeout={self.timeout:g}"
        return f"{SCHEME}{hosts}/{self.cluster}{extra}"


def parse_endpoint(text: str) -> tuple[str, int]:
    """``host:port`` (or ``[v6]:port``, or a host alone) as (host, port); ValueError with the reason."""
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not host:
            raise ValueError(f"bad etcd endpoint {text!r}")
        port_text = rest[1:] if rest.startswith(":") else ""
        if rest and not rest.startswith(":"):
            raise ValueError(f"bad etcd endpoint {text!r}")
    else:
        host, _, port_text = text.partition(":")
    if not host:
        raise ValueError(f"bad etcd endpoint {text!r}")
    try:
        port = int(port_text) if port_text else DEFAULT_PORT
    except ValueError:
        raise ValueError(f"bad port in etcd endpoint {text!r}") from None
    if not 0 < port < 65536:
        raise ValueError(f"bad port in etcd endpoint {text!r}")
    return host, port


def parse_url(url: str) -> EtcdUrl:
    """Split ``etcd://h1:p1,h2:p2/cluster?timeout=2``; ValueError with the reason."""
    if not url.startswith(SCHEME):
        raise ValueError(f"not an etcd store url: {url!r}")
    rest, _, query = url[len(SCHEME) :].partition("?")
    hosts, _, cluster = rest.partition("/")
    cluster = cluster.strip("/") or DEFAULT_CLUSTER
    if not LEASE_NAME_RE.fullmatch(cluster):
        raise ValueError(f"etcd store url {url!r}: bad cluster name {cluster!r}")
    endpoints = tuple(parse_endpoint(h) for h in hosts.split(",") if h.strip())
    if not endpoints:
        raise ValueError(f"etcd store url {url!r} names no endpoint")
    timeout = DEFAULT_TIMEOUT
    for key, values in urllib.parse.parse_qs(query, keep_blank_values=True).items():
        if key != "timeout":
            raise ValueError(f"etcd store url {url!r}: unknown option {key!r} (known: timeout)")
        try:
            timeout = float(values[-1])
        except ValueError:
            raise ValueError(f"etcd store url {url!r}: timeout {values[-1]!r} is not a number") from None
        if not (timeout > 0 and math.isfinite(timeout)):
            raise ValueError(f"etcd store url {url!r}: timeout must be > 0")
    return EtcdUrl(endpoints, cluster, timeout)
