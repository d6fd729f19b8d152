"""``tests.store.worker`` for ``etcd://`` URLs, until ``store.open_store`` dispatches them itself.

Run as ``python -m tests.store.etcd_worker URL OP ARGS...`` (same ops as the worker).
"""

from __future__ import annotations

import sys

from store.etcdstore import open_url
from tests.store import worker

if __name__ == "__main__":
    setattr(worker, "open_store", open_url)  # noqa: B010 - replace the name its main() uses
    worker.main(sys.argv[1:])
