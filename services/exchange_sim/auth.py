"""Checks the CDP JWT that Coinbase requires on private calls: structure, lifetime, uri, and the signature
when a public key is configured."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives.serialization import load_pem_public_key

ALGORITHMS = ("ES256", "EdDSA")
# `cdp` is what the official SDK writes; Coinbase still accepts the legacy `coinbase-cloud` that CCXT writes.
ISSUERS = ("cdp", "coinbase-cloud")
MAX_LIFETIME_S = 120
CLOCK_SKEW_S = 5


class JwtRejected(Exception):
    """Why a private call is unauthenticated (answered 401)."""


@dataclass
class NonceRegistry:
    """Coinbase wants a new JWT for every request: a nonce seen before, while its JWT lives, is a replay."""

    seen: dict[str, float] = field(default_factory=dict)
    next_prune: float = 0.0

    def check(self, nonce: str, *, exp: float, now: float) -> None:
        if now >= self.next_prune:
            self.seen = {n: e for n, e in self.seen.items() if e > now - CLOCK_SKEW_S}
            self.next_prune = now + 1.0
        if nonce in self.seen:
            raise JwtRejected("JWT replayed: its nonce was used before; make a new JWT for every request")
        self.seen[nonce] = exp


def verify_jwt(
    authorization: str | None,
    *,
    method: str,
    host: str,
    path: str,
    now: float,
    public_key_pem: str | None,
    nonces: NonceRegistry | None = None,
) -> str:
    """Return the key name (`sub`) of a valid `Authorization: Bearer <jwt>`, else raise JwtRejected."""
    if not authorization or not authorization.startswith("Bearer "):
        raise JwtRejected("missing 'Authorization: Bearer <jwt>' on a private endpoint")
    token = authorization[7:].strip()
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise JwtRejected(f"malformed JWT: {exc}") from None
    if header.get("alg") not in ALGORITHMS:
        raise JwtRejected(f"JWT alg must be one of {ALGORITHMS}, got {header.get('alg')!r}")
    if not header.get("kid"):
        raise JwtRejected("JWT header has no kid (the API key name)")
    if not header.get("nonce"):
        raise JwtRejected("JWT header has no nonce")
    claims = _claims(token, header["alg"], public_key_pem)
    _check_claims(claims, header=header, method=method, host=host, path=path, now=now)
    if nonces is not None:
        nonces.check(str(header["nonce"]), exp=claims["exp"], now=now)
    return str(claims["sub"])


def _claims(token: str, alg: str, public_key_pem: str | None) -> dict[str, Any]:
    try:
        if public_key_pem is None:
            return jwt.decode(token, options={"verify_signature": False, "verify_exp": False, "verify_nbf": False})
        key = load_pem_public_key(public_key_pem.encode())
        return jwt.decode(
            token, key, algorithms=[alg], options={"verify_exp": False, "verify_nbf": False, "verify_aud": False}
        )
    except jwt.InvalidSignatureError:
        raise JwtRejected("JWT signature does not match the configured public key") from None
    except (jwt.PyJWTError, ValueError) as exc:
        raise JwtRejected(f"JWT could not be decoded: {exc}") from None


def _check_claims(
    claims: dict[str, Any], *, header: dict[str, Any], method: str, host: str, path: str, now: float
) -> None:
    for name in ("sub", "iss", "nbf", "exp"):
        if name not in claims:
            raise JwtRejected(f"JWT has no {name!r} claim")
    if claims["iss"] not in ISSUERS:
        raise JwtRejected(f"JWT iss must be one of {ISSUERS}, got {claims['iss']!r}")
    if claims["sub"] != header["kid"]:
        raise JwtRejected("JWT sub must equal the kid header (the API key name)")
    nbf, exp = claims["nbf"], claims["exp"]
    if not isinstance(nbf, int | float) or not isinstance(exp, int | float):
        raise JwtRejected("JWT nbf and exp must be Unix seconds")
    if exp - nbf > MAX_LIFETIME_S:
        raise JwtRejected(f"JWT lifetime {exp - nbf:.0f}s is above {MAX_LIFETIME_S}s")
    if nbf > now + CLOCK_SKEW_S:
        raise JwtRejected("JWT is not valid yet (nbf in the future; check the clock)")
    if exp <= now - CLOCK_SKEW_S:
        raise JwtRejected("JWT has expired (exp in the past; a JWT lives 120 s, make one per request)")
    expected = f"{method} {host}{path}"
    uris = _uris(claims)
    if not any(_without_scheme(uri) == expected for uri in uris):
        raise JwtRejected(f"JWT uri {uris[0] if len(uris) == 1 else uris!r} does not match this request {expected!r}")


def _uris(claims: dict[str, Any]) -> list[Any]:
    """The request(s) the JWT is for: `uri`, or the `uris` list Ed25519 keys sign."""
    if "uri" in claims:
        return [claims["uri"]]
    uris = claims.get("uris")
    if isinstance(uris, list) and uris:
        return uris
    raise JwtRejected("JWT has no 'uri' claim (nor a non-empty 'uris' list)")


def _without_scheme(uri: Any) -> Any:
    """`GET https://host/path` as `GET host/path`: clients that keep the base URL's scheme sign it so."""
    if not isinstance(uri, str) or " " not in uri:
        return uri
    method, _, rest = uri.partition(" ")
    for scheme in ("https://", "http://"):
        if rest.startswith(scheme):
            return f"{method} {rest[len(scheme) :]}"
    return uri
