"""The Store contract on the dir backend."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.store.contract import StoreContract


class TestDirStoreContract(StoreContract):
    @pytest.fixture
    def store_url(self, tmp_path: Path) -> str:
        return f"dir:{tmp_path / 'store'}"
