"""Browser sessions: an HttpOnly cookie signed with a per-workspace secret.

Signing in checks the API token once (scrypt, deliberately slow) and stores only the
user name, the token's id and an expiry in the cookie, signed with HMAC-SHA256 under a
secret made on first use (``ui-session.key`` in the workspace, mode 0600). Every page
then checks the signature and the expiry, and reads the user afresh
(:func:`medlake.service.webui.session_principal`): a revoked token, a disabled user or a
changed role takes effect on the next page. Standard-library HMAC rather than a session
library: the cookie holds three fields and no secret data, and nothing else needs it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from pathlib import Path

from medlake.access.tokens import token_id_of
from medlake.privacy import read_or_create_key

COOKIE = "medlake_session"
LANGUAGE_COOKIE = "medlake_lang"
SECRET_FILE = "ui-session.key"
#: A working day: a session opened in the morning ends in the evening.
LIFETIME_S = 10 * 3600


@dataclass(frozen=True)
class Session:
    user_name: str
    token_id: str
    expires: int


def secret(workspace_root: Path) -> bytes:
    return read_or_create_key(workspace_root / SECRET_FILE)


def _mac(key: bytes, payload: bytes) -> str:
    return hmac.new(key, payload, hashlib.sha256).hexdigest()


def encode(key: bytes, user_name: str, token: str, now: float | None = None) -> str:
    """The cookie value for ``user_name`` signed in with ``token`` (only its id is kept)."""
    token_id = token_id_of(token) or ""
    expires = int((now or time.time()) + LIFETIME_S)
    body = json.dumps({"u": user_name, "t": token_id, "e": expires}, separators=(",", ":"))
    payload = base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")
    return f"{payload}.{_mac(key, payload.encode())}"


def decode(key: bytes, value: str | None, now: float | None = None) -> Session | None:
    """The session a cookie value stands for, or None (missing, forged or expired)."""
    if not value or "." not in value:
        return None
    payload, mac = value.rsplit(".", 1)
    if not hmac.compare_digest(mac, _mac(key, payload.encode())):
        return None
    try:
        body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        session = Session(str(body["u"]), str(body["t"]), int(body["e"]))
    except (ValueError, KeyError, TypeError):
        return None
    if session.expires <= (now or time.time()):
        return None
    return session
