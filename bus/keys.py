"""CURVE key pairs for node-to-node authentication.

Layout of a key directory (the same text format as ``zmq.auth``'s
certificates, so ``zmq.auth.load_certificate`` reads them too)::

    DIR/<node>.key          public key only            (mode 0644)
    DIR/<node>.key_secret   public and secret key      (mode 0600)

A node needs its own ``.key_secret`` plus the ``.key`` of every member it
connects to; the public keys it accepts are exactly the ``.key`` files of the
directory (members, plus any CLI clients given a key pair the same way).

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

from bus.errors import ConfigError, KeyFileError
from bus.membership import check_name

_KEY_RE = re.compile(r'^\s*(public|secret)-key\s*=\s*"([0-9A-Za-z.\-:+=^!/*?&<>()\[\]{}@%$#]{40})"\s*$')
_BANNER = "#   ZeroMQ CURVE {kind} certificate for bus node {node}\n#   Keep {what}\n"


@dataclass(frozen=True)
class CurveKeys:
    """One node's key pair and the public keys it accepts (name -> z85 key)."""

    node: str
    public: bytes
    secret: bytes = field(repr=False)
    authorized: Mapping[str, bytes]

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
        authorized = {p.name[: -len(".key")]: _read(p)[0] for p in sorted(d.glob("*.key"))}
        for name in required:
            if name not in authorized:
                raise KeyFileError(f"{d}: missing public key file {name}.key")
        if authorized.get(node, public) != public:
            raise KeyFileError(f"{d}: {node}.key does not match {node}.key_secret")
        authorized[node] = public
        return cls(node, public, secret, authorized)


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
