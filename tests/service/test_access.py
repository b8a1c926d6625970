"""Users, tokens and projects in a real workspace, with the audit trail of every change
and of every refused attempt."""

from __future__ import annotations

import datetime as dt
import getpass
from pathlib import Path

import pyarrow as pa
import pytest

from medlake.access import Permission, Role, store
from medlake.config import open_workspace
from medlake.errors import AccessDeniedError, AuthenticationError, UsageError
from medlake.service import access
from medlake.service.workspace import init_workspace, open_lake

#: These tests name their users (or resolve the login, as the CLI does): no test principal.
pytestmark = pytest.mark.acting_as(None)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    init_workspace(tmp_path / "ws", demo_vocabulary=False)
    return tmp_path / "ws"


def audit_rows(workspace: Path) -> list[dict]:
    with open_lake(open_workspace(workspace)) as engine:
        rows = engine.execute(engine.table("audit_event").order_by("event_id")).to_pylist()
    return rows


def test_the_login_that_creates_a_workspace_is_its_first_admin(workspace: Path) -> None:
    me = access.whoami(workspace)
    assert (me.user_name, me.role) == (getpass.getuser(), Role.ADMIN)
    [user] = access.list_users(workspace)
    assert user["created_by"] == "system:init"
    assert audit_rows(workspace) == []  # a new workspace's trail starts empty


def test_users_roles_and_projects_with_audit_events(workspace: Path) -> None:
    access.add_user(workspace, "li", "researcher")
    access.add_user(workspace, "wang", "steward")
    access.create_project(workspace, "t2d", "Type 2 diabetes genetics")
    access.add_member(workspace, "t2d", "li")
    li = access.whoami(workspace, user="li")
    assert (li.role, li.projects) == (Role.RESEARCHER, frozenset({"t2d"}))
    access.require(workspace, Permission.EXPORT, user="li", project_id="t2d")
    assert [p["project_id"] for p in access.list_projects(workspace, as_user="li")] == ["t2d"]
    access.set_role(workspace, "li", "steward")
    assert access.whoami(workspace, user="li").role is Role.STEWARD
    actions = [(r["action"], r["object_id"]) for r in audit_rows(workspace)]
    assert ("user.add", "li") in actions
    assert ("project.member.add", "li") in actions
    assert ("user.role", "li") in actions


def test_refused_attempts_are_denied_clearly_and_audited(workspace: Path) -> None:
    access.add_user(workspace, "li", "researcher")
    access.add_user(workspace, "audit1", "auditor")
    with pytest.raises(AccessDeniedError, match=r"li \(researcher\) may not manage users"):
        access.add_user(workspace, "eve", "admin", as_user="li")
    with pytest.raises(AccessDeniedError, match="in project 't2d': not a member"):
        access.require(workspace, Permission.EXPORT, user="li", project_id="t2d")
    with pytest.raises(AccessDeniedError, match=r"audit1 \(auditor\) may not read identified"):
        access.require(workspace, Permission.READ_IDENTIFIED, user="audit1")
    with pytest.raises(AuthenticationError, match="'mallory' is not a medlake user"):
        access.require(workspace, Permission.COUNT, user="mallory")
    denied = [r for r in audit_rows(workspace) if r["outcome"] == "denied"]
    assert [(r["actor"], r["action"]) for r in denied] == [
        ("li", "manage_users"), ("li", "export"), ("audit1", "read_identified"),
        ("mallory", "count")]  # fmt: skip
    assert access.list_users(workspace)[0]["user_name"] == "audit1"  # nothing was added


def test_tokens_authenticate_until_revoked_or_the_user_is_disabled(workspace: Path) -> None:
    access.add_user(workspace, "li", "researcher")
    first = access.issue_token(workspace, "li")
    second = access.issue_token(workspace, "li", as_user="li")  # a user may get their own
    assert access.authenticate(workspace, first.token).user_name == "li"
    with open_lake(open_workspace(workspace)) as engine:
        stored = engine.execute(engine.table("access_token")).to_pylist()
    assert all(first.token not in str(row) and second.token not in str(row) for row in stored)
    access.revoke_token(workspace, first.token_id)
    with pytest.raises(AuthenticationError, match="invalid, expired or revoked token"):
        access.authenticate(workspace, first.token)
    assert access.authenticate(workspace, second.token).user_name == "li"
    access.disable_user(workspace, "li")
    with pytest.raises(AuthenticationError):
        access.authenticate(workspace, second.token)
    with pytest.raises(AuthenticationError, match="user 'li' is disabled"):
        access.whoami(workspace, user="li")
    with pytest.raises(AccessDeniedError, match="cannot disable yourself"):
        access.disable_user(workspace, getpass.getuser())


def test_expired_tokens_are_refused(workspace: Path) -> None:
    with open_lake(open_workspace(workspace)) as engine:
        store.add_user(engine, "li", Role.RESEARCHER, created_by="test")
        token = store.issue_token(engine, "li", valid_days=1)
        row = engine.execute(engine.table("access_token")).to_pylist()[0]
        row["expires_at"] = dt.datetime(2000, 1, 1)
        t = engine.table("access_token")
        engine.delete_where("access_token", t.token_id == token.token_id)
        engine.load_arrow("access_token", pa.Table.from_pylist([row]))
        with pytest.raises(AuthenticationError):
            store.user_for_token(engine, token.token)


def test_bad_names_are_refused(workspace: Path) -> None:
    with pytest.raises(UsageError, match="no spaces"):
        access.add_user(workspace, "li ming", "researcher")
    with pytest.raises(UsageError, match="exists already"):
        access.add_user(workspace, getpass.getuser(), "steward")
    with pytest.raises(UsageError, match="letters, digits"):
        access.create_project(workspace, "t2d study!", "x")
