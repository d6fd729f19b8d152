"""The Store contract on the etcd backend, against a real 3-member etcd cluster."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from store.etcd_harness import EtcdCluster
from tests.store.contract import StoreContract
from tests.store.etcd_fixtures import cluster_fixture, unique_cluster_name


@pytest.fixture(scope="module")
def etcd_cluster() -> Iterator[EtcdCluster]:
    yield from cluster_fixture(3)


class TestEtcdStoreContract(StoreContract):
    @pytest.fixture
    def store_url(self, etcd_cluster: EtcdCluster) -> str:
        return etcd_cluster.url(unique_cluster_name())
