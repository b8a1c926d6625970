"""``medlake user ...`` and ``medlake project ...``: who may use the workspace, and how."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Annotated

import typer

from medlake.access.context import acting_as, acting_user_name, current_principal
from medlake.cli.lazy import lazy_module
from medlake.cli.options import JsonOption, WorkspaceOption
from medlake.cli.render import console, print_json, print_table

service = lazy_module("medlake.service.access")

AsOption = Annotated[
    str | None,
    typer.Option(
        "--as",
        help="Act as this medlake user (default: $MEDLAKE_USER, else your login name).",
        show_default=False,
    ),
]


def acting(as_user: str | None, project: str | None = None) -> AbstractContextManager[None]:
    """A command's own ``--as``/``--project``, over ``medlake --as``/``--project``: the
    services it calls check the policy as this user (see medlake.service.policy)."""
    if as_user is None and project is None:
        return nullcontext()
    who = as_user if as_user is not None else (current_principal() or acting_user_name())
    return acting_as(who, project=project)


user_app = typer.Typer(help="Users, their roles and API tokens.", no_args_is_help=True)
project_app = typer.Typer(help="Research projects and their members.", no_args_is_help=True)


@user_app.command("add")
def user_add(
    name: Annotated[str, typer.Argument(help="User name (no spaces).")],
    role: Annotated[str, typer.Option("--role", help="admin, steward, researcher or auditor.")],
    display_name: Annotated[str | None, typer.Option("--display-name")] = None,
    token: Annotated[bool, typer.Option("--token", help="Also issue an API token.")] = False,
    as_user: AsOption = None,
    workspace: WorkspaceOption = None,
) -> None:
    """Add a user with a role (admins only)."""
    service.add_user(workspace, name, role, display_name=display_name, as_user=as_user)
    console.print(f"added user [bold]{name}[/] ({role})")
    if token:
        _show_token(service.issue_token(workspace, name, as_user=as_user).token)


@user_app.command("list")
def user_list(json: JsonOption = False, as_user: AsOption = None,
              workspace: WorkspaceOption = None) -> None:  # fmt: skip
    """List users, their roles and whether they are disabled."""
    users = service.list_users(workspace, as_user=as_user)
    if json:
        print_json(users)
        return
    rows = [[u["user_name"], u["role"], u["display_name"] or "", str(u["created_at"]),
             "disabled" if u["disabled_at"] else "active"] for u in users]  # fmt: skip
    print_table(f"Users ({len(users)})", ["user", "role", "name", "created", "status"], rows)


@user_app.command("role")
def user_role(
    name: Annotated[str, typer.Argument(help="User name.")],
    role: Annotated[str, typer.Argument(help="admin, steward, researcher or auditor.")],
    as_user: AsOption = None,
    workspace: WorkspaceOption = None,
) -> None:
    """Change a user's role (admins only)."""
    service.set_role(workspace, name, role, as_user=as_user)
    console.print(f"{name} is now {role}")


@user_app.command("disable")
def user_disable(
    name: Annotated[str, typer.Argument(help="User name.")],
    as_user: AsOption = None,
    workspace: WorkspaceOption = None,
) -> None:
    """Disable a user and revoke their tokens (kept for the audit trail)."""
    service.disable_user(workspace, name, as_user=as_user)
    console.print(f"disabled {name}; their tokens are revoked")


@user_app.command("token")
def user_token(
    name: Annotated[str, typer.Argument(help="User name.")],
    days: Annotated[int | None, typer.Option("--days", help="Expire after N days.")] = None,
    as_user: AsOption = None,
    workspace: WorkspaceOption = None,
) -> None:
    """Issue an API token (shown once; only its hash is kept)."""
    _show_token(service.issue_token(workspace, name, valid_days=days, as_user=as_user).token)


@user_app.command("revoke")
def user_revoke(
    token_id: Annotated[str, typer.Argument(help="The 8-character id in mlk_<id>_...")],
    as_user: AsOption = None,
    workspace: WorkspaceOption = None,
) -> None:
    """Revoke an API token."""
    service.revoke_token(workspace, token_id, as_user=as_user)
    console.print(f"revoked token {token_id}")


@user_app.command("whoami")
def user_whoami(json: JsonOption = False, as_user: AsOption = None,
                workspace: WorkspaceOption = None) -> None:  # fmt: skip
    """Who commands run as here, with role and projects."""
    me = service.whoami(workspace, user=as_user)
    if json:
        print_json({"user": me.user_name, "role": me.role.value,
                    "projects": sorted(me.projects)})  # fmt: skip
        return
    projects = ", ".join(sorted(me.projects)) or "none"
    console.print(f"{me.user_name} ({me.role.value}); projects: {projects}")


def _show_token(token: str) -> None:
    console.print("API token (shown once, store it now):", highlight=False)
    print(token)


@project_app.command("create")
def project_create(
    project_id: Annotated[str, typer.Argument(help="Short id: letters, digits, - or _.")],
    title: Annotated[str, typer.Option("--title", help="What the project studies.")],
    description: Annotated[str | None, typer.Option("--description")] = None,
    as_user: AsOption = None,
    workspace: WorkspaceOption = None,
) -> None:
    """Create a research project (admins)."""
    service.create_project(workspace, project_id, title, description=description, as_user=as_user)
    console.print(f"created project [bold]{project_id}[/]")


@project_app.command("list")
def project_list(json: JsonOption = False, as_user: AsOption = None,
                 workspace: WorkspaceOption = None) -> None:  # fmt: skip
    """List projects (a researcher sees their own) with their members."""
    projects = service.list_projects(workspace, as_user=as_user)
    if json:
        print_json(projects)
        return
    rows = [[p["project_id"], p["title"], ", ".join(p["members"]),
             "closed" if p["closed_at"] else "open"] for p in projects]  # fmt: skip
    print_table(f"Projects ({len(projects)})", ["project", "title", "members", "status"], rows)


@project_app.command("add-member")
def project_add_member(
    project_id: Annotated[str, typer.Argument(help="Project id.")],
    user: Annotated[str, typer.Argument(help="User name.")],
    as_user: AsOption = None,
    workspace: WorkspaceOption = None,
) -> None:
    """Add a user to a project."""
    service.add_member(workspace, project_id, user, as_user=as_user)
    console.print(f"{user} is a member of {project_id}")


@project_app.command("remove-member")
def project_remove_member(
    project_id: Annotated[str, typer.Argument(help="Project id.")],
    user: Annotated[str, typer.Argument(help="User name.")],
    as_user: AsOption = None,
    workspace: WorkspaceOption = None,
) -> None:
    """Remove a user from a project."""
    removed = service.remove_member(workspace, project_id, user, as_user=as_user)
    console.print(f"{user} removed from {project_id}" if removed else f"{user} was not a member")
