"""Regenerate (or check) the option tables of docs/CONFIG.md from ``ha/config/schema.py``.

``python -m admin.configdocs`` rewrites the tables in place (between the
``<!-- schema:FILE -->`` and ``<!-- /schema:FILE -->`` markers);
``python -m admin.configdocs --check`` exits 1 when a table differs from
the schema (``tests/test_config_schema.py`` runs the same check).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from ha.config.schema import SCHEMAS, markdown_table

DOC = Path(__file__).resolve().parent.parent / "docs" / "CONFIG.md"


def render(text: str) -> str:
    """``text`` with every schema table replaced by the schema's current one."""
    for name, schema in SCHEMAS.items():
        begin, end = f"<!-- schema:{name} -->", f"<!-- /schema:{name} -->"
        pattern = re.compile(re.escape(begin) + r"\n.*?" + re.escape(end), re.DOTALL)
        m = pattern.search(text)
        if m is None:
            raise SystemExit(f"{DOC}: no '{begin}' ... '{end}' block for {name}")
        text = text[: m.start()] + f"{begin}\n{markdown_table(schema)}{end}" + text[m.end() :]
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m admin.configdocs", description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only compare; exit 1 when the doc is stale")
    ap.add_argument("--doc", type=Path, default=DOC)
    args = ap.parse_args(argv)
    old = args.doc.read_text()
    new = render(old)
    if args.check:
        if new != old:
            print(f"{args.doc}: option tables differ from the schema; run python -m admin.configdocs")
            return 1
        return 0
    if new != old:
        args.doc.write_text(new)
        print(f"{args.doc}: tables updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
