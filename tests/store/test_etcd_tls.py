"""etcd over TLS with client certificates: who is refused, who gets in, and the files (docs/ETCD.md "TLS")."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from store import StoreError, open_store
from store.etcd_harness import EtcdCluster
from store.etcd_tls import TlsFiles, client_context, make_cluster_pki, renew_cluster_pki
from store.etcd_url import parse_url, with_options
from store.etcdstore import EtcdStore
from tests.store.etcd_fixtures import cluster_fixture, unique_cluster_name

# -- no server needed ----------------------------------------------------------------------------

TLS_OPTS = "ca=/t/ca.pem&cert=/t/c.pem&key=/t/c.key"


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("etcd://10.0.0.1:2379/c", "no TLS"),
        ("etcd://10.0.0.1:2379/c?timeout=1&insecure=0", "no TLS"),
        ("etcd://10.0.0.1:2379/c?ca=/t/ca.pem&cert=/t/c.pem", "key= missing"),
        (f"etcd://http://10.0.0.1:2379/c?{TLS_OPTS}", "plain http endpoint refused"),
        (f"etcd://10.0.0.1:2379/c?{TLS_OPTS}&insecure=1", "contradict"),
        ("etcd://https://10.0.0.1:2379/c?insecure=1", "contradict"),
    ],
)
def test_a_plain_http_url_is_refused_unless_insecure(url: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_url(url)
    with pytest.raises(ValueError, match=why):
        open_store(url)


def test_plain_http_is_taken_only_when_asked_for() -> None:
    with pytest.raises(ValueError, match="plain http refused"):
        EtcdStore("127.0.0.1:2379")
    with pytest.raises(ValueError, match="plain http refused"):
        EtcdStore("http://127.0.0.1:2379")
    assert EtcdStore("http://127.0.0.1:2379", insecure=True).url == "etcd://127.0.0.1:2379/default?insecure=1"
    assert parse_url("etcd://http://127.0.0.1:2379/c?insecure=1").insecure


def test_missing_certificate_files_fail_at_once(tmp_path: Path) -> None:
    ca, cert, key = (str(tmp_path / name) for name in ("ca.pem", "c.pem", "c.key"))
    with pytest.raises(StoreError, match="cannot load the TLS files"):
        open_store(with_options("etcd://127.0.0.1:2379/c", ca=ca, cert=cert, key=key))


def test_the_cluster_pki_is_private_and_names_the_members(tmp_path: Path) -> None:
    folder = tmp_path / "etcd-tls"
    pki = make_cluster_pki(folder, "c1", {"node1": "10.9.0.1", "node2": "n2.example"}, ["client", "tool"])
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    files = sorted(p.name for p in folder.iterdir())
    assert files == sorted(
        ["ca.pem", "ca.key", "client.pem", "client.key", "client-tool.pem", "client-tool.key"]
        + [f"member-{n}.{ext}" for n in ("node1", "node2") for ext in ("pem", "key")]
    )
    for p in folder.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    sans = openssl_text(pki.members["node1"].cert)
    assert "IP Address:10.9.0.1" in sans and "IP Address:127.0.0.1" in sans and "DNS:localhost" in sans
    assert "DNS:n2.example" in openssl_text(pki.members["node2"].cert)
    assert "TLS Web Server Authentication" in sans  # a member serves clients and peers
    client = openssl_text(pki.clients["client"].cert)
    assert "TLS Web Client Authentication" in client and "Server Authentication" not in client
    assert "Subject: CN = tool" in openssl_text(pki.clients["tool"].cert)
    # every certificate is signed by the CA
    for f in [*pki.members.values(), *pki.clients.values()]:
        ok = subprocess.run(
            ["openssl", "verify", "-CAfile", str(f.ca), str(f.cert)], capture_output=True, check=False
        )
        assert ok.returncode == 0, ok.stderr


def openssl_text(cert: Path) -> str:
    return subprocess.run(
        ["openssl", "x509", "-noout", "-text", "-in", str(cert)], capture_output=True, text=True, check=True
    ).stdout


# -- against a real member ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[EtcdCluster]:
    yield from cluster_fixture(1)


@pytest.fixture(scope="module")
def stranger(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A client certificate of another CA (another cluster's, say)."""
    folder = tmp_path_factory.mktemp("other") / "tls"
    return make_cluster_pki(folder, "other", {}, ["client"]).clients["client"]


def ask(cluster: EtcdCluster, context: ssl.SSLContext | None) -> tuple[int, bytes] | str:
    """POST /v3/maintenance/status to the member: (status, body), or the error's name."""
    host, port = cluster.members[0].spec.host, cluster.members[0].spec.client_port
    conn = (
        http.client.HTTPSConnection(host, port, timeout=3, context=context)
        if context is not None
        else http.client.HTTPConnection(host, port, timeout=3)
    )
    try:
        conn.request("POST", "/v3/maintenance/status", body=b"{}")
        resp = conn.getresponse()
        return resp.status, resp.read()
    except (OSError, http.client.HTTPException) as e:
        return type(e).__name__
    finally:
        conn.close()


def answered(result: tuple[int, bytes] | str) -> bool:
    """The member gave a real answer (its status, with a header)."""
    if isinstance(result, str) or result[0] != 200:
        return False
    return "header" in json.loads(result[1])


def test_a_client_with_the_cluster_certificate_gets_in(cluster: EtcdCluster) -> None:
    assert cluster.client_tls is not None
    assert answered(ask(cluster, client_context(cluster.client_tls)))
    st = open_store(cluster.url(unique_cluster_name(), timeout=1))
    try:
        st.write("resources.cfg", b"x")
        assert st.acquire_lease("node1", "node1", 2)
        rec = st.read("resources.cfg")
        assert rec is not None and rec.data == b"x"
    finally:
        st.close()


def test_plain_http_to_the_client_port_gets_nothing_useful(cluster: EtcdCluster) -> None:
    result = ask(cluster, None)
    assert not answered(result), result


def test_https_without_a_client_certificate_is_rejected(cluster: EtcdCluster) -> None:
    assert cluster.client_tls is not None
    no_cert = ssl.create_default_context(cafile=str(cluster.client_tls.ca))
    result = ask(cluster, no_cert)
    assert isinstance(result, str), result  # the TLS handshake fails: no HTTP answer at all


def test_a_certificate_of_another_ca_is_rejected(cluster: EtcdCluster, stranger: TlsFiles) -> None:
    assert cluster.client_tls is not None
    # the stranger trusts our members (so only its own certificate is in question)
    ctx = client_context(TlsFiles(cluster.client_tls.ca, stranger.cert, stranger.key))
    assert isinstance(ask(cluster, ctx), str)


def test_the_store_refuses_a_member_it_cannot_verify_and_is_refused_without_a_certificate(
    cluster: EtcdCluster, stranger: TlsFiles
) -> None:
    hosts = ",".join(cluster.endpoints())
    for url in (
        f"etcd://{hosts}/c?timeout=0.5&insecure=1",  # plain http to a TLS member
        # verifies the member against another CA: refused by the client itself
        with_options(f"etcd://{hosts}/c?timeout=0.5", ca=str(stranger.ca), cert=str(stranger.cert),
                     key=str(stranger.key)),
    ):  # fmt: skip
        st = open_store(url)
        try:
            with pytest.raises(StoreError):
                st.write("resources.cfg", b"cmd=evil")
        finally:
            st.close()
    st = open_store(cluster.url("c"))
    try:
        assert st.read("resources.cfg") is None  # nothing got through
    finally:
        st.close()


def served_serial(cluster: EtcdCluster, context: ssl.SSLContext) -> str:
    """The serial number of the certificate the member shows a new connection."""
    m = cluster.members[0].spec
    with (
        socket.create_connection((m.host, m.client_port), timeout=3) as sock,
        context.wrap_socket(sock, server_hostname=m.host) as tls,
    ):
        cert = tls.getpeercert()
        assert cert is not None
        return str(cert["serialNumber"])


def test_renewed_certificates_are_used_without_a_restart(cluster: EtcdCluster) -> None:
    assert cluster.client_tls is not None
    old_client = client_context(cluster.client_tls)
    before = served_serial(cluster, old_client)
    st = open_store(cluster.url(unique_cluster_name(), timeout=1))  # holds the old client certificate
    try:
        renew_cluster_pki(cluster.tls_dir, cluster.token, {m.name: m.spec.host for m in cluster.members})
        new_client = client_context(cluster.client_tls)
        assert served_serial(cluster, new_client) != before  # the member reloaded its certificate
        assert answered(ask(cluster, new_client))
        # the old client certificate (same CA) still gets in: nodes renew when they restart
        st.close()  # a new connection, with the old certificate
        st.write("a", b"1")
        assert answered(ask(cluster, old_client))
    finally:
        st.close()


def test_a_plain_http_cluster_works_with_insecure() -> None:
    with EtcdCluster(1, die_with_parent=True, tls=False) as c:
        assert c.client_tls is None and "insecure=1" in c.url("c")
        st = open_store(c.url("c", timeout=1))
        try:
            st.write("a", b"1")
            rec = st.read("a")
            assert rec is not None and rec.data == b"1"
        finally:
            st.close()
