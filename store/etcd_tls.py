"""TLS for etcd: the cluster's small CA, its certificates, and the client's ``ssl.SSLContext``.

pyha talks to etcd only over TLS with a client certificate (docs/ETCD.md "TLS";
plain ``http://`` only with an explicit ``insecure=1``). This module is the one
place for the certificate files:

* :class:`TlsFiles` names a CA certificate and a certificate/key pair;
  :func:`client_context` turns one into the context the gateway
  (``store/etcd_gateway.py``) and the status probe (``store/etcd_launch.py``) use:
  the server is verified against the CA (and its name or IP), the client
  certificate is presented;
* :func:`make_ca`, :func:`issue` create a CA and certificates it signs, with the
  ``openssl`` command (Debian package ``openssl``; docs/ETCD.md says why this and
  not a Python package): ECDSA P-256 keys, files 0600 in a 0700 folder;
* :func:`make_cluster_pki` makes what an etcd cluster of pyha's own needs: the CA,
  one server/peer certificate per member (SANs: its host, 127.0.0.1, localhost),
  and client certificates (one per name given).
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    import ssl

OPENSSL: Final = "openssl"
CA_DAYS: Final = 3650
CERT_DAYS: Final = 825
CA_CERT: Final = "ca.pem"
CA_KEY: Final = "ca.key"
# the client certificate of the cluster's tools (ha-cluster, ha-manager --offline, benchmarks)
CLUSTER_CLIENT: Final = "client"
_FILE_MODE: Final = 0o600
_DIR_MODE: Final = 0o700


class TlsError(RuntimeError):
    """A certificate could not be made (openssl missing or failing)."""


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """A CA certificate to verify the other side, and our own certificate and key (PEM files)."""

    ca: Path
    cert: Path
    key: Path

    @staticmethod
    def of(folder: Path, name: str) -> TlsFiles:
        """``folder/ca.pem`` with ``folder/<name>.pem`` and ``folder/<name>.key``."""
        return TlsFiles(folder / CA_CERT, folder / f"{name}.pem", folder / f"{name}.key")

    def missing(self) -> list[Path]:
        return [p for p in (self.ca, self.cert, self.key) if not p.is_file()]


def client_context(files: TlsFiles) -> ssl.SSLContext:
    """A client context: TLS >= 1.2, the server verified against ``files.ca`` and its name,
    ``files.cert``/``files.key`` presented. ``OSError``/``ssl.SSLError`` when a file is bad."""
    import ssl  # noqa: PLC0415 - admin.cluster imports this module on every CLI start

    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(files.ca))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(files.cert), str(files.key))
    return ctx


def openssl_available() -> bool:
    return shutil.which(OPENSSL) is not None


def _private_dir(folder: Path) -> None:
    folder.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
    os.chmod(folder, _DIR_MODE)


def _openssl(args: list[str], cwd: Path) -> None:
    if not openssl_available():
        raise TlsError("'openssl' not found (Debian: apt-get install openssl)")
    # umask 077: the key exists with mode 0600 from its first byte
    proc = subprocess.run(
        [OPENSSL, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        preexec_fn=lambda: os.umask(0o077),
    )
    if proc.returncode != 0:
        raise TlsError(f"openssl {args[0]} failed: {proc.stderr.strip()[-400:]}")


def _finish(*paths: Path) -> None:
    for p in paths:
        os.chmod(p, _FILE_MODE)


def make_ca(folder: Path, subject: str) -> TlsFiles:
    """A new CA in ``folder`` (``ca.pem``, ``ca.key``); its :class:`TlsFiles` names the CA twice."""
    _private_dir(folder)
    cert, key = folder / CA_CERT, folder / CA_KEY
    _openssl(
        [
            "req", "-x509", "-new", "-nodes",
            "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-keyout", str(key), "-out", str(cert), "-days", str(CA_DAYS),
            "-subj", f"/CN={_subject(subject)}",
            "-addext", "basicConstraints=critical,CA:TRUE,pathlen:0",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        ],
        folder,
    )  # fmt: skip
    _finish(cert, key)
    return TlsFiles(cert, cert, key)


def san_entries(hosts: Iterable[str]) -> list[str]:
    """``IP:...``/``DNS:...`` entries for ``hosts``, without duplicates, in order."""
    out: list[str] = []
    for host in hosts:
        h = host.strip("[]")
        try:
            entry = f"IP:{ipaddress.ip_address(h)}"
        except ValueError:
            entry = f"DNS:{h}"
        if entry not in out:
            out.append(entry)
    return out


def issue(
    folder: Path, name: str, *, common_name: str, hosts: Iterable[str] = (), server: bool = False
) -> TlsFiles:
    """``folder/<name>.pem`` and ``.key``, signed by the CA in ``folder`` (new, or replacing
    the ones there: a renewal).

    ``server``: usable for both ends of a TLS connection (an etcd member: client port and
    peers), with ``hosts`` as subject alternative names; else a client certificate.
    """
    _private_dir(folder)
    ca = TlsFiles(folder / CA_CERT, folder / CA_CERT, folder / CA_KEY)
    if ca.missing():
        raise TlsError(f"no CA in {folder} ({', '.join(map(str, ca.missing()))})")
    files = TlsFiles.of(folder, name)
    ext = [
        "basicConstraints=critical,CA:FALSE",
        "keyUsage=critical,digitalSignature,keyEncipherment",
        f"extendedKeyUsage={'serverAuth,clientAuth' if server else 'clientAuth'}",
    ]
    sans = san_entries(hosts)
    if sans:
        ext.append(f"subjectAltName={','.join(sans)}")
    # made aside and moved in (key, then certificate): a running member reloads its certificate
    # at every new connection (etcd >= 3.2), so renewing in place never shows it a half-written file
    with tempfile.TemporaryDirectory(prefix=".new-", dir=folder) as tmp:
        t = Path(tmp)
        new = TlsFiles(ca.cert, t / files.cert.name, t / files.key.name)
        csr, extfile = t / "req.csr", t / "ext.cnf"
        extfile.write_text("\n".join(ext) + "\n")
        _openssl(
            [
                "req", "-new", "-nodes",
                "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-keyout", str(new.key), "-out", str(csr), "-subj", f"/CN={_subject(common_name)}",
            ],
            folder,
        )  # fmt: skip
        _openssl(
            [
                "x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key),
                "-set_serial", f"0x{secrets.token_hex(16)}", "-days", str(CERT_DAYS), "-sha256",
                "-extfile", str(extfile), "-out", str(new.cert),
            ],
            folder,
        )  # fmt: skip
        _finish(new.cert, new.key)
        os.replace(new.key, files.key)
        os.replace(new.cert, files.cert)
    return files


def _subject(text: str) -> str:
    """A subject value safe inside ``-subj /CN=...`` (no ``/``, ``+``, ``=``, ``\\``)."""
    bad = set('/+=\\,"')
    if not text or any(ch in bad for ch in text):
        raise TlsError(f"bad certificate name {text!r}")
    return text


@dataclass(frozen=True, slots=True)
class ClusterPki:
    """What :func:`make_cluster_pki` made: member name -> files, client name -> files."""

    folder: Path
    members: Mapping[str, TlsFiles]
    clients: Mapping[str, TlsFiles]


def member_cert_name(member: str) -> str:
    return f"member-{member}"


def client_cert_name(client: str) -> str:
    return CLUSTER_CLIENT if client == CLUSTER_CLIENT else f"client-{client}"


def renew_cluster_pki(
    folder: Path, cluster: str, members: Mapping[str, str], clients: Iterable[str] = (CLUSTER_CLIENT,)
) -> ClusterPki:
    """New member and client certificates from the CA already in ``folder`` (which stays):
    every certificate signed by it stays valid, so nothing has to stop (docs/ETCD.md "Rotation")."""
    return _issue_all(folder, cluster, members, clients)


def make_cluster_pki(
    folder: Path, cluster: str, members: Mapping[str, str], clients: Iterable[str] = (CLUSTER_CLIENT,)
) -> ClusterPki:
    """A fresh CA in ``folder``, a server/peer certificate per member (name -> host) and a client
    certificate per client name (common name = the name; etcd 3.4's JSON gateway cannot map it
    to an etcd user, see docs/ETCD.md "TLS")."""
    make_ca(folder, f"pyha {cluster} etcd CA")
    return _issue_all(folder, cluster, members, clients)


def _issue_all(folder: Path, cluster: str, members: Mapping[str, str], clients: Iterable[str]) -> ClusterPki:
    out_members = {
        m: issue(
            folder,
            member_cert_name(m),
            common_name=f"{cluster}-{m}",
            hosts=[host, "127.0.0.1", "localhost"],
            server=True,
        )
        for m, host in members.items()
    }
    out_clients = {c: issue(folder, client_cert_name(c), common_name=c) for c in clients}
    return ClusterPki(folder, out_members, out_clients)
