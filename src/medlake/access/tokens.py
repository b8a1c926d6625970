"""API tokens: random, shown once, stored only as a salted scrypt hash.

A token is ``mlk_<id>_<secret>``: the id (public, 8 characters) finds the stored hash,
the secret (43 characters, 256 bits) is checked against it in constant time. scrypt
from the standard library (RFC 7914, memory-hard like argon2) avoids a compiled
dependency; its cost parameters are stored with each hash so they can rise later.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

PREFIX = "mlk"
_N, _R, _P = 2**14, 8, 1


@dataclass(frozen=True)
class NewToken:
    token_id: str
    token: str  # give to the user once; never stored
    token_hash: str


def new_token() -> NewToken:
    token_id = secrets.token_hex(4)
    token = f"{PREFIX}_{token_id}_{secrets.token_urlsafe(32)}"
    return NewToken(token_id, token, hash_token(token))


def token_id_of(token: str) -> str | None:
    """The id part of a well-formed token, else ``None``."""
    parts = token.strip().split("_", 2)
    if len(parts) != 3 or parts[0] != PREFIX or len(parts[1]) != 8:
        return None
    return parts[1]


def hash_token(token: str, salt: bytes | None = None, n: int = _N, r: int = _R, p: int = _P) -> str:
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(token.encode(), salt=salt, n=n, r=r, p=p, dklen=32)
    return f"scrypt${n}${r}${p}${salt.hex()}${digest.hex()}"


def token_matches(token: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, _ = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = hash_token(token, bytes.fromhex(salt), int(n), int(r), int(p))
    except ValueError:
        return False
    return hmac.compare_digest(expected, stored)
