"""Sign-in while serving: a verified token is reused for a while, then checked again.

The token check runs on the event loop when the token was verified within
``AUTH_CACHE_SECONDS`` and in a worker thread (scrypt) otherwise. Whatever the path, the
answers must be the service's: the token's own user, a revoked token or a disabled user
refused once the time is up, a wrong token refused at once, as RFC 9457 problems.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest
from tests.server.conftest import Api, is_problem

from medlake.server import deps
from medlake.service import access


def test_a_revoked_token_is_refused_once_its_verification_is_stale(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(deps, "AUTH_CACHE_SECONDS", 0.5)
    verified: Counter[str] = Counter()
    real = access.authenticate

    def counted(root, token):  # type: ignore[no-untyped-def]
        verified[token] += 1
        return real(root, token)

    monkeypatch.setattr(deps.access, "authenticate", counted)
    if "cache-user" not in {u["user_name"] for u in access.list_users(api.root)}:
        access.add_user(api.root, "cache-user", "auditor")
    issued = access.issue_token(api.root, "cache-user")
    headers = {"Authorization": f"Bearer {issued.token}"}

    for _ in range(5):
        me = api.client.get("/api/v1/me", headers=headers)
        assert me.status_code == 200, me.text
        assert me.json()["user"] == "cache-user"
        assert me.json()["role"] == "auditor"
    assert verified[issued.token] == 1  # verified once, then reused

    access.revoke_token(api.root, issued.token_id)
    time.sleep(0.6)
    is_problem(api.client.get("/api/v1/me", headers=headers), 401)
    assert verified[issued.token] == 2  # checked again once stale, and refused

    wrong = {"Authorization": "Bearer not-a-token"}
    body = is_problem(api.client.get("/api/v1/me", headers=wrong), 401)
    assert body["type"].endswith("/AuthenticationError")
    assert is_problem(api.client.get("/api/v1/me"), 401)["type"].endswith("/AuthenticationError")
