"""store package: durable records and leases behind one Protocol (see docs/STORE.md).

``open_store(url)`` is the one way to open a store: it picks the backend,
``dir:/path`` (or a plain path) for the one-host dir backend
(``store/dirstore.py``), ``etcd://h:p,.../cluster?timeout=S&ca=..&cert=..&key=..``
for the many-host etcd backend (``store/etcdstore.py``, docs/ETCD.md: TLS with a
client certificate, or plain http only with ``insecure=1``). A cluster's store is opened with
``admin.cluster.ClusterConfig.open_store``, which hands its URL to this function.
"""

from __future__ import annotations

from store.base import (
    ABSENT,
    Changes,
    LeaseInfo,
    Record,
    Store,
    StoreError,
    VersionConflict,
)

__all__ = [
    "ABSENT",
    "Changes",
    "LeaseInfo",
    "Record",
    "Store",
    "StoreError",
    "VersionConflict",
    "open_store",
]


def open_store(url: str) -> Store:
    """Open a store from its URL: ``dir:/abs/or/rel/path``, a bare path, or ``etcd://h:p,.../cluster``."""
    if url.startswith("etcd://"):
        from store.etcdstore import EtcdStore  # noqa: PLC0415 - only etcd clusters need it

        return EtcdStore.from_url(url)
    if url.startswith("dir:"):
        path = url[len("dir:") :]
    elif "://" in url:
        scheme = url.split("://", 1)[0]
        raise ValueError(f"store backend '{scheme}' is not available (known: dir, etcd)")
    else:
        path = url
    if not path:
        raise ValueError(f"store url {url!r} names no folder")
    from store.dirstore import DirStore  # noqa: PLC0415 - keep `import store` light

    return DirStore(path)
