"""The ZAP handler's answers (RFC 27), without sockets: bus.zap.ZapHandler.authenticate."""

from __future__ import annotations

from zmq.utils import z85

from bus.ratelog import RateLimitedLog
from bus.zap import ZapHandler

KEY_A = bytes(range(32))
KEY_CLI = bytes(range(32, 64))


def handler() -> tuple[ZapHandler, list[str]]:
    counted: list[str] = []
    h = ZapHandler(
        "a", {"a": z85.encode(KEY_A), "cli": z85.encode(KEY_CLI)}, counted.append, RateLimitedLog()
    )
    return h, counted


def request(mechanism: bytes = b"CURVE", *creds: bytes) -> list[bytes]:
    # version, request id, domain, address, identity, mechanism, credentials...
    return [b"1.0", b"7", b"cluster", b"10.0.0.9", b"", mechanism, *creds]


def test_the_user_id_is_the_owner_of_the_key() -> None:
    h, counted = handler()
    assert h.authenticate(request(b"CURVE", KEY_A)) == (b"200", b"OK", b"a")
    assert h.authenticate(request(b"CURVE", KEY_CLI)) == (b"200", b"OK", b"cli")
    assert counted == []


def test_an_unknown_key_is_refused_and_counted() -> None:
    h, counted = handler()
    assert h.authenticate(request(b"CURVE", bytes(32))) == (b"400", b"unknown key", b"")
    assert counted == ["auth_denied"]


def test_other_mechanisms_and_malformed_credentials_are_refused() -> None:
    h, counted = handler()
    assert h.authenticate(request(b"NULL")) == (b"400", b"CURVE required", b"")
    assert h.authenticate(request(b"PLAIN", b"a", b"secret")) == (b"400", b"CURVE required", b"")
    assert h.authenticate(request(b"CURVE", KEY_A[:31])) == (b"400", b"CURVE required", b"")
    assert counted == ["auth_denied"] * 3


def test_a_request_that_is_not_zap_1_0_gets_a_500() -> None:
    h, counted = handler()
    assert h.authenticate([b"2.0", *request(b"CURVE", KEY_A)[1:]])[0] == b"500"
    assert h.authenticate([b"1.0", b"7"])[0] == b"500"
    assert counted == []
