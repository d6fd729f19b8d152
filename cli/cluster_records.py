"""``ha-cluster export`` / ``import``: every record of a cluster's store as one JSON file.

The file (format ``pyha-records``, version 1) holds each record's name and its
bytes in base64; leases are not records and stay behind. The same file moves
a cluster between the dir and etcd stores (tests/live/test_export_import.py).
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

from admin.cluster import ClusterConfig
from admin.errors import AdminError, ExitCode
from ha.errors import HaError
from store.base import check_record_name

EXPORT_FORMAT = "pyha-records"
EXPORT_VERSION = 1


def export_records(c: ClusterConfig, path: Path) -> int:
    """Write every record of C's store to PATH (atomically); how many."""
    store = c.open_store()
    try:
        records = []
        for name in store.list(""):
            rec = store.read(name)
            if rec is not None:
                records.append({"name": name, "data": base64.b64encode(rec.data).decode("ascii")})
    except HaError as e:
        raise AdminError(f"cannot read the store {c.store_url}: {e}", ExitCode.FAILED) from None
    finally:
        store.close()
    doc: dict[str, Any] = {"format": EXPORT_FORMAT, "version": EXPORT_VERSION, "cluster": c.cluster,
                           "store": c.store_kind, "records": records}  # fmt: skip
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return len(records)


def read_export(file: str, cluster: str | None = None) -> dict[str, bytes]:
    """The records of an export file; :class:`AdminError` (usage) for anything else.

    Every entry is checked before anything is written (issue #10: no partial
    import): a name no store accepts as a record (``locks/...``, where the dir
    store keeps its leases) is refused, and so is an export of another cluster
    than ``cluster`` (when given).
    """
    try:
        doc = json.loads(Path(file).read_text())
    except (OSError, ValueError) as e:
        raise AdminError(f"cannot read {file}: {e}", ExitCode.USAGE) from None
    if not isinstance(doc, dict) or (doc.get("format"), doc.get("version")) != (
        EXPORT_FORMAT,
        EXPORT_VERSION,
    ):
        raise AdminError(
            f"{file} is not a pyha export (format {EXPORT_FORMAT}, version {EXPORT_VERSION})", ExitCode.USAGE
        )
    source = doc.get("cluster")
    if cluster is not None and source != cluster:
        raise AdminError(
            f"{file} is an export of cluster '{source}', not of '{cluster}'"
            " (use --other-cluster to import it)",
            ExitCode.USAGE,
        )
    out: dict[str, bytes] = {}
    for r in doc.get("records") or []:
        try:
            name = check_record_name(str(r["name"]))
            out[name] = base64.b64decode(str(r["data"]), validate=True)
        except (KeyError, TypeError, ValueError) as e:
            raise AdminError(f"{file}: bad record entry {r!r}: {e}", ExitCode.USAGE) from None
    return out


def import_records(c: ClusterConfig, records: dict[str, bytes], file: str, *, force: bool) -> int:
    """Write RECORDS into C's store, deleting its other records only with ``force``; how many deleted.

    Read back after writing: an import must not lose anything.
    """
    store = c.open_store()
    try:
        extra = [n for n in store.list("") if n not in records]
        if extra and not force:
            raise AdminError(
                f"the cluster has records that {file} does not: {', '.join(extra[:5])}"
                + (" ..." if len(extra) > 5 else "")
                + " (use --force to delete them)",
                ExitCode.FAILED,
            )
        for name in sorted(records):
            store.write(name, records[name])
        for name in extra:
            store.delete(name)
        bad = [n for n in sorted(records) if (r := store.read(n)) is None or r.data != records[n]]
        if bad:
            raise AdminError(f"records differ after the import: {', '.join(bad[:5])}", ExitCode.FAILED)
        return len(extra)
    except AdminError:
        raise
    except HaError as e:
        raise AdminError(f"cannot write the store {c.store_url}: {e}", ExitCode.FAILED) from None
    finally:
        store.close()
