"""CURVE key pairs for node-to-node authentication.

Layout of a key directory (the same text format as ``zmq.auth``'s
certificates, so ``zmq.auth.load_certificate`` reads them too)::

    DIR/<node>.key          public key only            (mode 0644)
    DIR/<node>.key_secret   public and secret key      (mode 0600)

    DIR/clients/<role>/<name>.key   a client's public key (owner name ``<role>/<name>``)

A node needs its own ``.key_secret`` plus the ``.key`` of every member it
connects to; the public keys it accepts are exactly the ``.key`` files of the
directory and of ``clients/*/`` (members, plus clients). :class:`KeyRing`
re-reads them when the directory changes, so a client key is accepted or
revoked without restarting a node (docs/PROTOCOL.md section 2).

Command line::

    python -m bus.keys gen DIR NODE [NODE ...] [--force]
    python -m bus.keys show DIR NODE
"""

from __future__ import annotations

import argparse
import os
import re
import stat
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import zmq
from loguru import logger

from bus.errors import ConfigError, KeyFileError
from bus.membership import check_name

_KEY_RE = re.compile(r'^\s*(public|secret)-key\s*=\s*"([0-9A-Za-z.\-:+=^!/*?&<>()\[\]{}@%$#]{40})"\s*$')
LEGACY_CLIENT_PREFIX = "client."
# How often a node re-reads a changed key directory (at most; KeyRing.tick).
RELOAD_INTERVAL = 1.0
_BANNER = "#   ZeroMQ CURVE {kind} certificate for bus node {node}\n#   Keep {what}\n"


@dataclass(frozen=True)
class CurveKeys:
    """One node's key pair and the public keys it accepts (name -> z85 key)."""

    node: str
    public: bytes
    secret: bytes = field(repr=False)
    authorized: Mapping[str, bytes]
    # Where they were loaded from (None: built in memory), for KeyRing reloads.
    directory: Path | None = None

    def public_of(self, name: str) -> bytes:
        try:
            return self.authorized[name]
        except KeyError:
            raise KeyFileError(f"no public key for node {name!r}") from None

    def name_of(self, public: bytes) -> str | None:
        for name, key in self.authorized.items():
            if key == public:
                return name
        return None

    @classmethod
    def load(cls, directory: str | os.PathLike[str], node: str, required: Iterable[str] = ()) -> CurveKeys:
        """Load ``node``'s secret and every public key in ``directory``.

        ``required`` names nodes (e.g. all members) whose public keys must be
        present; a missing one is a :class:`KeyFileError`, not a silent hole.
        """
        d = Path(directory)
        public, secret = load_secret(d, node)
        authorized = public_keys(d)
        for name in required:
            if name not in authorized:
                raise KeyFileError(f"{d}: missing public key file {name}.key")
        if authorized.get(node, public) != public:
            raise KeyFileError(f"{d}: {node}.key does not match {node}.key_secret")
        authorized[node] = public
        return cls(node, public, secret, authorized, d)


def public_keys(directory: Path) -> dict[str, bytes]:
    """Every accepted public key of a key directory: ``<name>.key`` as ``name``,
    ``clients/<role>/<name>.key`` as ``<role>/<name>`` (``/`` is never in a member name).

    Flat ``client.*.key`` files (copies an earlier version made of client keys)
    are not read: a client key lives in ``clients/`` alone, so removing it there
    revokes it.
    """
    found = {
        p.name[: -len(".key")]: _read(p)[0]
        for p in sorted(directory.glob("*.key"))
        if not p.name.startswith(LEGACY_CLIENT_PREFIX)
    }
    for p in sorted(directory.glob("clients/*/*.key")):
        found[f"{p.parent.name}/{p.name[: -len('.key')]}"] = _read(p)[0]
    return found


def _signature(directory: Path) -> tuple[int, ...]:
    """Changes whenever a key file is added, removed or replaced (all writes are renames)."""
    out: list[int] = []
    for d in (directory, directory / "clients", *sorted((directory / "clients").glob("*/"))):
        try:
            out.append(d.stat().st_mtime_ns)
        except OSError:
            out.append(-1)
    return tuple(out)


class KeyRing:
    """The public keys a node accepts now: its start-up set, re-read when the directory changes.

    Members' keys stay what they were at start (a member is never cut off by
    an edit of the directory); every other name (clients) comes and goes
    with its ``.key`` file, so removing one revokes that key on a running node.
    :meth:`refresh` is cheap (a few ``stat`` calls) and is called by the ZAP
    handler before each handshake and by the transport about every second.
    ``names`` and ``by_key`` are replaced, never changed in place: other
    threads may read them without a lock.
    """

    def __init__(self, authorized: Mapping[str, bytes], directory: Path | None = None,
                 members: Iterable[str] = ()) -> None:  # fmt: skip
        self.directory = directory
        self._pinned = {n: authorized[n] for n in members if n in authorized}
        self._sig: tuple[int, ...] | None = _signature(directory) if directory is not None else None
        self.by_key: dict[bytes, str] = {}
        self.names: frozenset[str] = frozenset()
        self._set(authorized)

    @classmethod
    def of(cls, keys: CurveKeys, members: Iterable[str]) -> KeyRing:
        return cls(keys.authorized, keys.directory, members)

    def _set(self, authorized: Mapping[str, bytes]) -> None:
        merged = {**authorized, **self._pinned}
        self.by_key = {key: name for name, key in merged.items()}
        self.names = frozenset(self.by_key.values())

    def name_of(self, public: bytes) -> str | None:
        return self.by_key.get(public)

    def pin(self, members: Mapping[str, bytes]) -> frozenset[str]:
        """The membership changed: pin exactly these members' keys, re-read the rest.

        A member that left is unpinned: its key is accepted from then on only while
        its ``.key`` file is still in the directory (``ha-cluster remove-node``
        deletes it). Returns the names no longer accepted.
        """
        old = self.names
        self._pinned = dict(members)
        if self.directory is None:
            self._set({n: k for k, n in self.by_key.items() if n in members or "/" in n})
            return old - self.names
        self._sig = None  # re-read now, even if the directory looks unchanged
        self.refresh()
        if self._sig is None:  # a half-written key file: keep the others, pinned ones first
            self._set({n: k for k, n in self.by_key.items()})
        return old - self.names

    def tick(self, node: str) -> float:
        """The transport's periodic check: refresh, log what was revoked; seconds until the next."""
        if revoked := self.refresh():
            logger.warning("bus {}: keys no longer accepted: {}", node, ", ".join(sorted(revoked)))
        return RELOAD_INTERVAL

    def refresh(self) -> frozenset[str]:
        """Re-read the directory if it changed; returns the names no longer accepted."""
        if self.directory is None:
            return frozenset()
        sig = _signature(self.directory)
        if sig == self._sig:
            return frozenset()
        try:
            found = public_keys(self.directory)
        except KeyFileError:
            return frozenset()  # half-written? keep the old set, retry on the next change or turn
        self._sig = sig
        old = self.names
        self._set(found)
        return old - self.names


def _read(path: Path) -> tuple[bytes, bytes | None]:
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"cannot read {path}: {exc}") from None
    found: dict[str, bytes] = {}
    for line in text.splitlines():
        m = _KEY_RE.match(line)
        if m:
            found[m.group(1)] = m.group(2).encode("ascii")
    if "public" not in found:
        raise KeyFileError(f"{path}: no public-key line")
    return found["public"], found.get("secret")


def load_secret(directory: Path, node: str) -> tuple[bytes, bytes]:
    path = directory / f"{check_name(node)}.key_secret"
    try:
        st = path.stat()
    except OSError as exc:
        raise KeyFileError(f"cannot read {path}: {exc}") from None
    # SAFETY: like ssh, refuse a secret others can read; a leaked node key lets
    # anyone impersonate that node to the whole cluster.
    if stat.S_IMODE(st.st_mode) & 0o077:
        mode = stat.S_IMODE(st.st_mode)
        raise KeyFileError(f"{path} is accessible by group/others (mode {mode:o}); chmod 600")
    public, secret = _read(path)
    if secret is None:
        raise KeyFileError(f"{path}: no secret-key line")
    return public, secret


def _write(path: Path, content: str, mode: int, force: bool) -> None:
    if path.exists() and not force:
        raise KeyFileError(f"{path} exists (use --force to replace)")
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    # Created with the final mode from the start: no window where the secret
    # sits on disk world-readable.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, content.encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)  # the umask may have narrowed it; make it exact
    os.replace(tmp, path)


def generate(directory: str | os.PathLike[str], node: str, *, force: bool = False) -> tuple[Path, Path]:
    """Create ``node``'s key pair in ``directory``; returns (public file, secret file)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    public, secret = zmq.curve_keypair()
    pub_txt, sec_txt = public.decode("ascii"), secret.decode("ascii")
    pub_path, sec_path = d / f"{check_name(node)}.key", d / f"{node}.key_secret"
    body = f'metadata\ncurve\n    public-key = "{pub_txt}"\n'
    _write(
        sec_path,
        _BANNER.format(kind="secret", node=node, what="this file private!")
        + body
        + f'    secret-key = "{sec_txt}"\n',
        0o600,
        force,
    )
    _write(
        pub_path,
        _BANNER.format(kind="public", node=node, what="this file with every member") + body,
        0o644,
        force,
    )
    return pub_path, sec_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bus.keys", description="Manage bus CURVE keys.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    gen = sub.add_parser("gen", help="generate key pairs")
    gen.add_argument("dir")
    gen.add_argument("nodes", nargs="+")
    gen.add_argument("--force", action="store_true", help="replace existing keys")
    show = sub.add_parser("show", help="print a node's public key")
    show.add_argument("dir")
    show.add_argument("node")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "gen":
            for node in args.nodes:
                pub, sec = generate(args.dir, node, force=args.force)
                print(f"{node}: {pub} {sec}")
        else:
            print(_read(Path(args.dir) / f"{check_name(args.node)}.key")[0].decode("ascii"))
    except (ConfigError, OSError) as exc:
        print(f"bus.keys: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
