"""Access control tables: users with their role, hashed API tokens, projects, members."""

from __future__ import annotations

from medlake.engine import ColumnSpec, TableSpec

_USER = ("access_user", "user_name")
_PROJECT = ("access_project", "project_id")

ACCESS_USER = TableSpec(
    name="access_user",
    group="medlake",
    description="A person (or service) who runs medlake commands and API calls, and their role.",
    columns=(
        ColumnSpec("user_name", "varchar(100)", required=True, primary_key=True),
        ColumnSpec("display_name", "varchar(255)"),
        ColumnSpec(
            "role", "varchar(20)", required=True, description="admin, steward, researcher, auditor"
        ),
        ColumnSpec("created_at", "datetime", required=True),
        ColumnSpec("created_by", "varchar(100)", required=True),
        ColumnSpec("disabled_at", "datetime", description="set when the user may no longer act"),
    ),
)

ACCESS_TOKEN = TableSpec(
    name="access_token",
    group="restricted",
    restricted=True,
    description="API tokens, stored as a salted scrypt hash; the token is shown once.",
    columns=(
        ColumnSpec(
            "token_id",
            "varchar(20)",
            required=True,
            primary_key=True,
            description="public prefix of the token, to find its hash",
        ),
        ColumnSpec("user_name", "varchar(100)", required=True, foreign_key=_USER),
        ColumnSpec(
            "token_hash", "varchar(255)", required=True, description="scrypt$n$r$p$salt$hash"
        ),
        ColumnSpec("created_at", "datetime", required=True),
        ColumnSpec("expires_at", "datetime"),
        ColumnSpec("revoked_at", "datetime"),
    ),
)

ACCESS_PROJECT = TableSpec(
    name="access_project",
    group="medlake",
    description="A research project: its members may work on its approved cohorts and datasets.",
    columns=(
        ColumnSpec("project_id", "varchar(64)", required=True, primary_key=True),
        ColumnSpec("title", "varchar(255)", required=True),
        ColumnSpec("description", "varchar(MAX)"),
        ColumnSpec("created_at", "datetime", required=True),
        ColumnSpec("created_by", "varchar(100)", required=True),
        ColumnSpec("closed_at", "datetime"),
    ),
)

ACCESS_PROJECT_MEMBER = TableSpec(
    name="access_project_member",
    group="medlake",
    description="Who works in which project.",
    columns=(
        ColumnSpec(
            "project_id", "varchar(64)", required=True, primary_key=True, foreign_key=_PROJECT
        ),
        ColumnSpec("user_name", "varchar(100)", required=True, primary_key=True, foreign_key=_USER),
        ColumnSpec("added_at", "datetime", required=True),
        ColumnSpec("added_by", "varchar(100)", required=True),
    ),
)

ACCESS_TABLES: tuple[TableSpec, ...] = (
    ACCESS_USER,
    ACCESS_TOKEN,
    ACCESS_PROJECT,
    ACCESS_PROJECT_MEMBER,
)

__all__ = ["ACCESS_TABLES"]
