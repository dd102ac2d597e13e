"""The simulator's checks on private calls (CDP JWT) and its own Coinbase limits."""

from __future__ import annotations

from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from services.exchange_sim.auth import JwtRejected, NonceRegistry, verify_jwt
from services.exchange_sim.throttle import SlidingWindow

NOW = 1_800_000_000
HOST = "exchange_sim:8010"
PATH = "/api/v3/brokerage/accounts"
KEY = "organizations/o/apiKeys/k"


def token(key: Any, alg: str = "ES256", headers: dict[str, Any] | None = None, **claims: Any) -> str:
    body = {"sub": KEY, "iss": "cdp", "nbf": NOW, "exp": NOW + 120, "uri": f"GET {HOST}{PATH}"} | claims
    header = {"kid": KEY, "nonce": "ab" * 16} | (headers or {})
    return jwt.encode({k: v for k, v in body.items() if v is not None}, key, algorithm=alg, headers=header)


def public_pem(key: Any) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def check(value: str, public_key: str | None = None, **kwargs: Any) -> str:
    args = {"method": "GET", "host": HOST, "path": PATH, "now": NOW + 1} | kwargs
    return verify_jwt(f"Bearer {value}", public_key_pem=public_key, **args)


@pytest.fixture
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def test_valid_es256_and_eddsa_tokens_name_the_key(ec_key: ec.EllipticCurvePrivateKey) -> None:
    assert check(token(ec_key), public_pem(ec_key)) == KEY
    ed = ed25519.Ed25519PrivateKey.generate()
    assert check(token(ed, "EdDSA"), public_pem(ed)) == KEY
    assert check(token(ec_key)) == KEY  # no public key configured: structure only


@pytest.mark.parametrize(
    ("claims", "headers", "reason"),
    [
        ({"exp": NOW - 10, "nbf": NOW - 130}, None, "expired"),
        ({"nbf": NOW + 60, "exp": NOW + 180}, None, "not valid yet"),
        ({"exp": NOW + 600}, None, "lifetime"),
        ({"uri": f"GET {HOST}{PATH}?limit=1"}, None, "does not match"),
        ({"uri": f"POST {HOST}{PATH}"}, None, "does not match"),
        ({"iss": "someone"}, None, "iss must be one of"),
        ({"uri": f"GET ftp://{HOST}{PATH}"}, None, "does not match"),
        ({"uri": None, "uris": [f"GET {HOST}/api/v3/brokerage/orders"]}, None, "does not match"),
        ({"uri": None, "uris": []}, None, "no 'uri' claim"),
        ({"sub": "someone-else"}, None, "sub must equal the kid"),
        ({"uri": None}, None, "no 'uri' claim"),
        ({}, {"nonce": ""}, "no nonce"),
    ],
)
def test_bad_tokens_are_refused_with_a_reason(
    ec_key: ec.EllipticCurvePrivateKey, claims: dict[str, Any], headers: dict[str, Any] | None, reason: str
) -> None:
    with pytest.raises(JwtRejected, match=reason):
        check(token(ec_key, headers=headers, **claims))


def test_what_coinbase_also_accepts_is_accepted(ec_key: ec.EllipticCurvePrivateKey) -> None:
    """The legacy issuer and audience CCXT writes, a scheme kept from an http base URL, and Ed25519's `uris`."""
    legacy = token(ec_key, iss="coinbase-cloud", aud=["retail_rest_api_proxy"], uri=f"GET http://{HOST}{PATH}")
    assert check(legacy, public_pem(ec_key)) == KEY
    assert check(token(ec_key, uri=f"GET https://{HOST}{PATH}")) == KEY
    ed = ed25519.Ed25519PrivateKey.generate()
    listed = token(ed, "EdDSA", uri=None, uris=[f"GET {HOST}{PATH}"], aud=["cdp_service"])
    assert check(listed, public_pem(ed)) == KEY


def test_a_replayed_jwt_is_refused(ec_key: ec.EllipticCurvePrivateKey) -> None:
    nonces = NonceRegistry()
    once = token(ec_key)
    assert check(once, nonces=nonces) == KEY
    with pytest.raises(JwtRejected, match="replayed"):
        check(once, nonces=nonces)
    assert check(token(ec_key, headers={"nonce": "cd" * 16}), nonces=nonces) == KEY
    assert len(nonces.seen) == 2
    later = token(ec_key, headers={"nonce": "ef" * 16}, nbf=NOW + 190, exp=NOW + 300)
    check(later, nonces=nonces, now=NOW + 200)
    assert list(nonces.seen) == ["ef" * 16]  # expired nonces are forgotten


def test_signature_from_another_key_is_refused(ec_key: ec.EllipticCurvePrivateKey) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(JwtRejected, match="signature"):
        check(token(other), public_pem(ec_key))


def test_missing_or_wrong_scheme_is_refused() -> None:
    with pytest.raises(JwtRejected, match="missing"):
        verify_jwt(None, method="GET", host=HOST, path=PATH, now=NOW, public_key_pem=None)
    with pytest.raises(JwtRejected, match="alg"):
        check(jwt.encode({"sub": KEY}, "a-shared-secret-of-32-bytes-or-more!", algorithm="HS256", headers={"kid": KEY}))


def test_sliding_window_refuses_the_eleventh_call_in_a_second() -> None:
    window = SlidingWindow(limit=10)
    results = [window.hit("1.2.3.4", 100.0 + i * 0.05) for i in range(11)]
    assert [r.allowed for r in results] == [True] * 10 + [False]
    assert results[-1].reset_s == pytest.approx(0.5)
    assert window.hit("5.6.7.8", 100.6).allowed  # per client
    assert window.hit("1.2.3.4", 101.0).allowed  # the first call has left the window
