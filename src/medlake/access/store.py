"""Users, tokens, projects and members in the lake's ``access_*`` tables, through the engine.

Rows are never updated in place: a change (disable a user, revoke a token, close a
project) deletes the row and writes the new version in one transaction, so the same
code runs on every engine.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pyarrow as pa

from medlake.access.policy import Principal, Role
from medlake.access.tokens import NewToken, new_token, token_id_of, token_matches
from medlake.engine import Engine
from medlake.errors import AuthenticationError, UsageError

USERS, TOKENS = "access_user", "access_token"
PROJECTS, MEMBERS = "access_project", "access_project_member"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)


def _rows(engine: Engine, table: str, **equal: object) -> list[dict[str, Any]]:
    expr = engine.table(table)
    for column, value in equal.items():
        expr = expr.filter(expr[column] == value)
    return engine.execute(expr).to_pylist()


def _replace(engine: Engine, table: str, key: dict[str, object], row: dict[str, Any]) -> None:
    t = engine.table(table)
    predicate = None
    for column, value in key.items():
        condition = t[column] == value
        predicate = condition if predicate is None else predicate & condition
    with engine.transaction():
        engine.delete_where(table, predicate)
        engine.load_arrow(table, pa.Table.from_pylist([row]))


def get_user(engine: Engine, user_name: str) -> dict[str, Any] | None:
    rows = _rows(engine, USERS, user_name=user_name)
    return rows[0] if rows else None


def list_users(engine: Engine) -> list[dict[str, Any]]:
    return sorted(engine.execute(engine.table(USERS)).to_pylist(), key=lambda r: r["user_name"])


def add_user(
    engine: Engine, user_name: str, role: Role, *, created_by: str, display_name: str | None = None
) -> dict[str, Any]:
    """Add a user. Raises :class:`UsageError` for a bad or taken name."""
    name = user_name.strip()
    if not name or len(name) > 100 or any(c.isspace() for c in name) or ":" in name:
        raise UsageError(f"user name {user_name!r}: 1-100 characters, no spaces or ':'")
    if get_user(engine, name) is not None:
        raise UsageError(f"user {name!r} exists already")
    row = {
        "user_name": name,
        "display_name": display_name,
        "role": role.value,
        "created_at": _now(),
        "created_by": created_by,
        "disabled_at": None,
    }
    engine.load_arrow(USERS, pa.Table.from_pylist([row]))
    return row


def set_role(engine: Engine, user_name: str, role: Role) -> dict[str, Any]:
    row = _require_user(engine, user_name)
    row["role"] = role.value
    _replace(engine, USERS, {"user_name": user_name}, row)
    return row


def disable_user(engine: Engine, user_name: str) -> dict[str, Any]:
    """Disable a user and revoke their tokens (the row stays for the audit trail)."""
    row = _require_user(engine, user_name)
    if row["disabled_at"] is None:
        row["disabled_at"] = _now()
        _replace(engine, USERS, {"user_name": user_name}, row)
    for token in _rows(engine, TOKENS, user_name=user_name):
        if token["revoked_at"] is None:
            token["revoked_at"] = _now()
            _replace(engine, TOKENS, {"token_id": token["token_id"]}, token)
    return row


def _require_user(engine: Engine, user_name: str) -> dict[str, Any]:
    row = get_user(engine, user_name)
    if row is None:
        raise UsageError(f"no user {user_name!r} (medlake user list shows them)")
    return row


def issue_token(engine: Engine, user_name: str, *, valid_days: int | None = None) -> NewToken:
    """A new token for an enabled user; only its hash is stored."""
    user = _require_user(engine, user_name)
    if user["disabled_at"] is not None:
        raise UsageError(f"user {user_name!r} is disabled")
    token = new_token()
    expires = _now() + dt.timedelta(days=valid_days) if valid_days else None
    engine.load_arrow(
        TOKENS,
        pa.Table.from_pylist(
            [
                {
                    "token_id": token.token_id,
                    "user_name": user_name,
                    "token_hash": token.token_hash,
                    "created_at": _now(),
                    "expires_at": expires,
                    "revoked_at": None,
                }
            ]
        ),
    )
    return token


def revoke_token(engine: Engine, token_id: str) -> None:
    rows = _rows(engine, TOKENS, token_id=token_id)
    if not rows:
        raise UsageError(f"no token {token_id!r}")
    if rows[0]["revoked_at"] is None:
        rows[0]["revoked_at"] = _now()
        _replace(engine, TOKENS, {"token_id": token_id}, rows[0])


def user_for_token(engine: Engine, token: str) -> str:
    """The user a token belongs to. Raises :class:`AuthenticationError` (one reason for all
    failures, so a caller learns nothing about which tokens exist)."""
    token_id = token_id_of(token)
    rows = _rows(engine, TOKENS, token_id=token_id) if token_id else []
    now = _now()
    if (
        not rows
        or rows[0]["revoked_at"] is not None
        or (rows[0]["expires_at"] is not None and rows[0]["expires_at"] <= now)
        or not token_matches(token, rows[0]["token_hash"])
    ):
        raise AuthenticationError("invalid, expired or revoked token")
    return rows[0]["user_name"]


def principal(engine: Engine, user_name: str) -> Principal:
    """The enabled user ``user_name`` with their role and projects."""
    user = get_user(engine, user_name)
    if user is None:
        raise AuthenticationError(
            f"{user_name!r} is not a medlake user of this workspace (an admin adds users "
            "with `medlake user add`)"
        )
    if user["disabled_at"] is not None:
        raise AuthenticationError(f"user {user_name!r} is disabled")
    projects = frozenset(
        row["project_id"]
        for row in _rows(engine, MEMBERS, user_name=user_name)
        if _project_open(engine, row["project_id"])
    )
    return Principal(user_name, Role(user["role"]), projects)


def _project_open(engine: Engine, project_id: str) -> bool:
    rows = _rows(engine, PROJECTS, project_id=project_id)
    return bool(rows) and rows[0]["closed_at"] is None


def create_project(
    engine: Engine, project_id: str, title: str, *, created_by: str, description: str | None = None
) -> dict[str, Any]:
    if (
        not project_id
        or len(project_id) > 64
        or not project_id.replace("-", "").replace("_", "").isalnum()
    ):
        raise UsageError(f"project id {project_id!r}: 1-64 letters, digits, '-' or '_'")
    if _rows(engine, PROJECTS, project_id=project_id):
        raise UsageError(f"project {project_id!r} exists already")
    row = {
        "project_id": project_id,
        "title": title,
        "description": description,
        "created_at": _now(),
        "created_by": created_by,
        "closed_at": None,
    }
    engine.load_arrow(PROJECTS, pa.Table.from_pylist([row]))
    return row


def list_projects(engine: Engine) -> list[dict[str, Any]]:
    projects = engine.execute(engine.table(PROJECTS)).to_pylist()
    members = engine.execute(engine.table(MEMBERS)).to_pylist()
    for project in projects:
        project["members"] = sorted(
            m["user_name"] for m in members if m["project_id"] == project["project_id"]
        )
    return sorted(projects, key=lambda p: p["project_id"])


def add_member(engine: Engine, project_id: str, user_name: str, *, added_by: str) -> None:
    if not _project_open(engine, project_id):
        raise UsageError(f"no open project {project_id!r}")
    _require_user(engine, user_name)
    if _rows(engine, MEMBERS, project_id=project_id, user_name=user_name):
        return
    engine.load_arrow(
        MEMBERS,
        pa.Table.from_pylist(
            [
                {
                    "project_id": project_id,
                    "user_name": user_name,
                    "added_at": _now(),
                    "added_by": added_by,
                }
            ]
        ),
    )


def remove_member(engine: Engine, project_id: str, user_name: str) -> bool:
    t = engine.table(MEMBERS)
    removed = engine.delete_where(
        MEMBERS, (t.project_id == project_id) & (t.user_name == user_name)
    )
    return removed > 0
