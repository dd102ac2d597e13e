"""CDP API keys and the per-request JWT that Coinbase Advanced Trade expects (ES256 or EdDSA)."""

from __future__ import annotations

import base64
import binascii
import os
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import jwt
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from shared.exchange.errors import AuthError
from shared.logging import register_secret

JWT_LIFETIME_S = 120
PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A CDP API key: its name (`organizations/.../apiKeys/...` or a bare id) and its private key."""

    name: str
    secret: str = field(repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> ApiKey:
        """The key from COINBASE_API_KEY_FILE (a CDP key download) or COINBASE_API_KEY_NAME/_SECRET."""
        path = environ.get("COINBASE_API_KEY_FILE")
        if path:
            return cls.from_file(Path(path))
        name = environ.get("COINBASE_API_KEY_NAME", "")
        secret = environ.get("COINBASE_API_KEY_SECRET", "")
        if not name or not secret:
            missing = [var for var, value in (("NAME", name), ("SECRET", secret)) if not value]
            raise AuthError(
                f"no Coinbase API key: set COINBASE_API_KEY_FILE or COINBASE_API_KEY_{' and _'.join(missing)}",
                key_name=name,
            )
        # A PEM pasted into a .env file usually arrives with literal "\n" instead of line breaks.
        return cls._registered(name, secret.replace("\\n", "\n"))

    @classmethod
    def from_file(cls, path: Path) -> ApiKey:
        """The key from a CDP JSON download: {"name" or "id": ..., "privateKey": ...}."""
        try:
            data = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise AuthError(f"cannot read the API key file {str(path)!r}: {type(exc).__name__}", key_name="") from None
        name = (data.get("name") or data.get("id")) if isinstance(data, dict) else None
        secret = data.get("privateKey") if isinstance(data, dict) else None
        if not isinstance(name, str) or not name or not isinstance(secret, str) or not secret:
            raise AuthError(
                f"API key file {str(path)!r} needs a string 'name' (or 'id') and 'privateKey'", key_name=str(name or "")
            )
        return cls._registered(name, secret)

    @classmethod
    def _registered(cls, name: str, secret: str) -> ApiKey:
        register_secret(secret)
        return cls(name=name, secret=secret)


def load_private_key(key: ApiKey) -> tuple[PrivateKey, str]:
    """The signing key and its JWT algorithm; AuthError naming the key (never the secret) when unusable."""
    if "-----BEGIN" in key.secret:
        try:
            private = serialization.load_pem_private_key(key.secret.strip().encode(), password=None)
        except (ValueError, TypeError):
            raise AuthError(
                f"API key {key.name!r}: the secret is not a readable PEM private key", key_name=key.name
            ) from None
        if isinstance(private, ec.EllipticCurvePrivateKey) and isinstance(private.curve, ec.SECP256R1):
            return private, "ES256"
        if isinstance(private, ed25519.Ed25519PrivateKey):
            return private, "EdDSA"
        raise AuthError(
            f"API key {key.name!r}: the PEM holds a {type(private).__name__}; expected EC P-256 or Ed25519",
            key_name=key.name,
        )
    try:
        raw = base64.b64decode(key.secret.strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) not in (32, 64):
        raise AuthError(
            f"API key {key.name!r}: the secret is neither a PEM private key nor base64 of a 32- or 64-byte Ed25519 key",
            key_name=key.name,
        )
    # The 64-byte form is libsodium's seed followed by the public key.
    private = ed25519.Ed25519PrivateKey.from_private_bytes(raw[:32])
    if len(raw) == 64 and private.public_key().public_bytes_raw() != raw[32:]:
        raise AuthError(
            f"API key {key.name!r}: the 64-byte Ed25519 secret's public half does not match its seed", key_name=key.name
        )
    return private, "EdDSA"


class JwtSigner:
    """Builds a fresh JWT for each REST request, as Coinbase requires."""

    def __init__(
        self,
        key: ApiKey,
        *,
        clock: Callable[[], float] = time.time,
        nonce: Callable[[], str] = secrets.token_hex,
    ):
        self.key_name = key.name
        self._private, self.algorithm = load_private_key(key)
        self.clock = clock
        self.nonce = nonce

    def __repr__(self) -> str:
        return f"JwtSigner(key_name={self.key_name!r}, algorithm={self.algorithm!r})"

    def token(self, method: str, host: str, path: str) -> str:
        """A JWT for `METHOD host/path`; the query string is not part of the signed uri."""
        now = int(self.clock())
        claims = {
            "sub": self.key_name,
            "iss": "cdp",
            "nbf": now,
            "exp": now + JWT_LIFETIME_S,
            "uri": f"{method.upper()} {host}{path.split('?', 1)[0]}",
        }
        headers = {"kid": self.key_name, "nonce": self.nonce(), "typ": "JWT"}
        return jwt.encode(claims, self._private, algorithm=self.algorithm, headers=headers)
