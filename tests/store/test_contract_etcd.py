"""The Store contract on the etcd backend, against a real 3-member etcd cluster."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from store.etcd_harness import EtcdCluster
from store.etcdstore import open_url
from tests.store import contract
from tests.store.contract import StoreContract
from tests.store.etcd_fixtures import cluster_fixture, etcd_worker, unique_cluster_name


@pytest.fixture(scope="module")
def etcd_cluster() -> Iterator[EtcdCluster]:
    yield from cluster_fixture(3)


@pytest.fixture(autouse=True)
def _open_etcd_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    # Until store.open_store dispatches etcd:// itself: the contract's own open_store and
    # worker processes go through store.etcdstore.open_url (which falls back to open_store).
    monkeypatch.setattr(contract, "open_store", open_url)
    monkeypatch.setattr(contract, "worker", etcd_worker)


class TestEtcdStoreContract(StoreContract):
    @pytest.fixture
    def store_url(self, etcd_cluster: EtcdCluster) -> str:
        return etcd_cluster.url(unique_cluster_name())
