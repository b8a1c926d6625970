"""Who may do what: roles, permissions, and the one decision function every call passes.

Four roles, as the governance issue sets them:

* **admin** manages users, projects, settings, ingest and data protection, reads the
  audit trail, and sees only suppressed feasibility counts: no patient data by default;
* **steward** sees identified data (for EMPI review and data quality), approves
  releases, and may do everything a researcher may, in every project;
* **researcher** counts cohorts (small cells suppressed) anywhere, and reads
  de-identified data, extracts and analyses only inside projects they are a member of;
  never ``pii_*`` tables, raw notes or unshifted dates;
* **auditor** reads the audit trail, nothing else.

Permissions that hold "within a project" (:data:`PROJECT_SCOPED`) need the project and
the user's membership for a researcher; a steward holds them everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from medlake.errors import AccessDeniedError, UsageError


class Role(StrEnum):
    ADMIN = "admin"
    STEWARD = "steward"
    RESEARCHER = "researcher"
    AUDITOR = "auditor"


class Permission(StrEnum):
    """An action class; the value is how a refusal names it ("may not <description>")."""

    READ_IDENTIFIED = "read_identified"
    READ_DEIDENTIFIED = "read_deidentified"
    COUNT = "count"
    COUNT_EXACT = "count_exact"
    EXPORT = "export"
    ANALYZE = "analyze"
    APPROVE_RELEASE = "approve_release"
    REVIEW_LINKS = "review_links"
    INGEST = "ingest"
    RUN_QC = "run_qc"
    READ_AUDIT = "read_audit"
    MANAGE_USERS = "manage_users"
    MANAGE_PROJECTS = "manage_projects"
    CHANGE_SETTINGS = "change_settings"
    PROTECT = "protect"

    @property
    def description(self) -> str:
        return _DESCRIPTIONS[self]


_DESCRIPTIONS: dict[Permission, str] = {
    Permission.READ_IDENTIFIED: "read identified data (pii tables, raw notes, real dates)",
    Permission.READ_DEIDENTIFIED: "read de-identified person-level data",
    Permission.COUNT: "count cohorts",
    Permission.COUNT_EXACT: "see exact small counts",
    Permission.EXPORT: "extract datasets",
    Permission.ANALYZE: "run analyses (GWAS, differential expression)",
    Permission.APPROVE_RELEASE: "approve dataset releases",
    Permission.REVIEW_LINKS: "review, merge or unmerge patient links",
    Permission.INGEST: "ingest data",
    Permission.RUN_QC: "run data-quality checks",
    Permission.READ_AUDIT: "read the audit trail",
    Permission.MANAGE_USERS: "manage users and tokens",
    Permission.MANAGE_PROJECTS: "manage projects and their members",
    Permission.CHANGE_SETTINGS: "change settings",
    Permission.PROTECT: "run backups, restores, mirror resync or clear the ransomware watch",
}

#: Permissions a researcher holds only inside a project they are a member of.
PROJECT_SCOPED: frozenset[Permission] = frozenset(
    {Permission.READ_DEIDENTIFIED, Permission.EXPORT, Permission.ANALYZE}
)

P = Permission
ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset(
        {
            P.COUNT,
            P.INGEST,
            P.RUN_QC,
            P.READ_AUDIT,
            P.MANAGE_USERS,
            P.MANAGE_PROJECTS,
            P.CHANGE_SETTINGS,
            P.PROTECT,
        }
    ),
    Role.STEWARD: frozenset(
        {
            P.READ_IDENTIFIED,
            P.READ_DEIDENTIFIED,
            P.COUNT,
            P.COUNT_EXACT,
            P.EXPORT,
            P.ANALYZE,
            P.APPROVE_RELEASE,
            P.REVIEW_LINKS,
            P.INGEST,
            P.RUN_QC,
        }
    ),
    Role.RESEARCHER: frozenset({P.COUNT, P.READ_DEIDENTIFIED, P.EXPORT, P.ANALYZE}),
    Role.AUDITOR: frozenset({P.READ_AUDIT}),
}
del P


@dataclass(frozen=True)
class Principal:
    """The user a call runs as: name, role and the projects they are a member of."""

    user_name: str
    role: Role
    projects: frozenset[str] = field(default_factory=frozenset)

    @property
    def label(self) -> str:
        return f"{self.user_name} ({self.role})"


def parse_role(value: str) -> Role:
    """``value`` as a :class:`Role`; a clear error naming the four roles otherwise."""
    try:
        return Role(value.strip().lower())
    except ValueError:
        roles = ", ".join(role.value for role in Role)
        raise UsageError(f"unknown role {value!r}; roles are {roles}") from None


def is_allowed(principal: Principal, permission: Permission, project_id: str | None = None) -> bool:
    """Whether ``principal`` may do ``permission`` (in ``project_id`` when given)."""
    if permission not in ROLE_PERMISSIONS[principal.role]:
        return False
    if principal.role is Role.RESEARCHER and permission in PROJECT_SCOPED:
        return project_id is not None and project_id in principal.projects
    return True


def authorize(principal: Principal, permission: Permission, project_id: str | None = None) -> None:
    """Return when allowed; else raise :class:`AccessDeniedError` saying who, what and why.

    Raises:
        AccessDeniedError: e.g. "li (researcher) may not read identified data (...): the
            researcher role does not include it".
    """
    if is_allowed(principal, permission, project_id):
        return
    what = f"{principal.label} may not {permission.description}"
    if permission not in ROLE_PERMISSIONS[principal.role]:
        allowed = ", ".join(sorted(r.value for r in Role if permission in ROLE_PERMISSIONS[r]))
        raise AccessDeniedError(
            f"{what}: the {principal.role} role does not include it (roles that do: {allowed})"
        )
    if project_id is None:
        raise AccessDeniedError(f"{what} outside a project: name one of your projects")
    raise AccessDeniedError(f"{what} in project {project_id!r}: not a member of it")


def roles_with(permission: Permission) -> Iterable[Role]:
    return (role for role in Role if permission in ROLE_PERMISSIONS[role])
