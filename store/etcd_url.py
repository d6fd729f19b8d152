"""The ``etcd://`` store URL: ``etcd://HOST:PORT[,HOST:PORT...]/CLUSTER[?OPTIONS]``.

The client endpoints of the etcd members (a host without a port means 2379;
IPv6 hosts in brackets; an endpoint may be written ``https://HOST:PORT``);
``CLUSTER`` names the key prefix ``/pyha/CLUSTER/``, so several pyha clusters
can share one etcd. Options (docs/ETCD.md):

* ``timeout=SECONDS`` bounds every Store call (default 2 s);
* ``ca=PATH&cert=PATH&key=PATH``: TLS, the members verified against the CA
  certificate ``ca``, our client certificate ``cert`` (key ``key``) presented.
  This is the only way pyha talks to etcd unless
* ``insecure=1``: plain ``http``, no certificate. Without it a URL that names no
  certificates, or an ``http://`` endpoint, is refused.
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
TLS_OPTIONS: Final = ("ca", "cert", "key")
OPTIONS: Final = ("timeout", *TLS_OPTIONS, "insecure")
_TRUE: Final = ("1", "true", "yes")
_FALSE: Final = ("0", "false", "no")
INSECURE_HINT: Final = (
    "give ca=, cert= and key= (TLS with a client certificate) or insecure=1 for plain http (docs/ETCD.md)"
)


def hostport(host: str, port: int) -> str:
    """``host:port``, with an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True, slots=True)
class EtcdUrl:
    endpoints: tuple[tuple[str, int], ...]
    cluster: str
    timeout: float
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    insecure: bool = False

    @property
    def tls(self) -> tuple[str, str, str] | None:
        """(ca, cert, key) when the URL names certificates."""
        if self.ca is None or self.cert is None or self.key is None:
            return None
        return self.ca, self.cert, self.key

    def __str__(self) -> str:
        hosts = ",".join(hostport(h, p) for h, p in self.endpoints)
        opts: list[tuple[str, str]] = []
        if self.timeout != DEFAULT_TIMEOUT:
            opts.append(("timeout", f"{self.timeout:g}"))
        opts += [(k, v) for k, v in zip(TLS_OPTIONS, (self.ca, self.cert, self.key), strict=True) if v]
        if self.insecure:
            opts.append(("insecure", "1"))
        extra = f"?{urllib.parse.urlencode(opts, safe='/')}" if opts else ""
        return f"{SCHEME}{hosts}/{self.cluster}{extra}"


def split_scheme(text: str) -> tuple[str | None, str]:
    """(``http``/``https``/None, the endpoint without it)."""
    text = text.strip()
    for scheme in ("https", "http"):
        if text.lower().startswith(f"{scheme}://"):
            return scheme, text[len(scheme) + 3 :].rstrip("/")
    return None, text


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
    """Split ``etcd://h1:p1,h2:p2/cluster?timeout=2&ca=..&cert=..&key=..``; ValueError with the reason.

    Refuses a URL that would talk plain http unless it says ``insecure=1``.
    """
    if not url.startswith(SCHEME):
        raise ValueError(f"not an etcd store url: {url!r}")
    rest, _, query = url[len(SCHEME) :].partition("?")
    # an endpoint may carry its own scheme (https://h:p): split on the first '/' after the hosts
    hosts_text, cluster = _split_hosts(rest)
    cluster = cluster.strip("/") or DEFAULT_CLUSTER
    if not LEASE_NAME_RE.fullmatch(cluster):
        raise ValueError(f"etcd store url {url!r}: bad cluster name {cluster!r}")
    schemes: set[str | None] = set()
    endpoints: list[tuple[str, int]] = []
    for h in hosts_text.split(","):
        if h.strip():
            scheme, bare = split_scheme(h)
            schemes.add(scheme)
            endpoints.append(parse_endpoint(bare))
    if not endpoints:
        raise ValueError(f"etcd store url {url!r} names no endpoint")
    values: dict[str, str] = {}
    for key, vals in urllib.parse.parse_qs(query, keep_blank_values=True).items():
        if key not in OPTIONS:
            raise ValueError(f"etcd store url {url!r}: unknown option {key!r} (known: {', '.join(OPTIONS)})")
        values[key] = vals[-1]
    timeout = DEFAULT_TIMEOUT
    if "timeout" in values:
        try:
            timeout = float(values["timeout"])
        except ValueError:
            raise ValueError(
                f"etcd store url {url!r}: timeout {values['timeout']!r} is not a number"
            ) from None
        if not (timeout > 0 and math.isfinite(timeout)):
            raise ValueError(f"etcd store url {url!r}: timeout must be > 0")
    insecure_text = values.get("insecure", "0").lower()
    if insecure_text not in (*_TRUE, *_FALSE):
        raise ValueError(f"etcd store url {url!r}: insecure must be 1 or 0")
    insecure = insecure_text in _TRUE
    tls = {k: values[k] for k in TLS_OPTIONS if values.get(k)}
    if insecure:
        if tls or "https" in schemes:
            raise ValueError(f"etcd store url {url!r}: insecure=1 (plain http) and TLS options contradict")
    else:
        if "http" in schemes:
            raise ValueError(f"etcd store url {url!r}: plain http endpoint refused; {INSECURE_HINT}")
        if len(tls) != len(TLS_OPTIONS):
            missing = ", ".join(f"{k}=" for k in TLS_OPTIONS if k not in tls)
            raise ValueError(f"etcd store url {url!r}: no TLS ({missing} missing); {INSECURE_HINT}")
    return EtcdUrl(
        tuple(endpoints), cluster, timeout, tls.get("ca"), tls.get("cert"), tls.get("key"), insecure
    )


def _split_hosts(rest: str) -> tuple[str, str]:
    """(hosts, cluster) of ``h1,https://h2:p/cluster``: the first '/' not part of a ``scheme://``."""
    i = 0
    while True:
        j = rest.find("/", i)
        if j < 0:
            return rest, ""
        if rest[j : j + 2] == "//" and rest[max(0, j - 1)] == ":":
            i = j + 2
            continue
        return rest[:j], rest[j + 1 :]


def with_options(url: str, **options: str | None) -> str:
    """``url`` with the given query options set (None: removed), others kept."""
    base, _, query = url.partition("?")
    pairs = [(k, v) for k, v in urllib.parse.parse_qsl(query, keep_blank_values=True) if k not in options]
    pairs += [(k, v) for k, v in options.items() if v is not None]
    return base + (f"?{urllib.parse.urlencode(pairs, safe='/')}" if pairs else "")
