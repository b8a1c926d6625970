"""The role policy as the governance issue states it, checked action by action."""

from __future__ import annotations

import pytest

from medlake.access import Permission, Principal, Role, authorize, is_allowed, parse_role
from medlake.errors import AccessDeniedError, UsageError

P = Permission
# Written from the words, not from the code's table: researchers never read
# identified data and only work inside their projects; stewards see identified data
# and approve releases; auditors read the audit trail only; admins manage users but do
# not read patient data.
EXPECTED: dict[Role, set[Permission]] = {
    Role.ADMIN: {P.COUNT, P.INGEST, P.RUN_QC, P.READ_AUDIT, P.MANAGE_USERS, P.MANAGE_PROJECTS,
                 P.CHANGE_SETTINGS, P.PROTECT},
    Role.STEWARD: {P.READ_IDENTIFIED, P.READ_DEIDENTIFIED, P.COUNT, P.COUNT_EXACT, P.EXPORT,
                   P.ANALYZE, P.APPROVE_RELEASE, P.REVIEW_LINKS, P.INGEST, P.RUN_QC},
    Role.RESEARCHER: {P.COUNT, P.READ_DEIDENTIFIED, P.EXPORT, P.ANALYZE},
    Role.AUDITOR: {P.READ_AUDIT},
}  # fmt: skip
PATIENT_DATA = {P.READ_IDENTIFIED, P.READ_DEIDENTIFIED, P.EXPORT, P.ANALYZE, P.COUNT_EXACT}


def member(role: Role) -> Principal:
    return Principal(f"u-{role}", role, frozenset({"t2d"}))


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize("permission", list(Permission))
def test_each_role_may_do_exactly_what_the_policy_says(role: Role, permission: Permission) -> None:
    principal = member(role)
    if permission in EXPECTED[role]:
        authorize(principal, permission, project_id="t2d")
        return
    with pytest.raises(AccessDeniedError) as denied:
        authorize(principal, permission, project_id="t2d")
    message = denied.value.message
    assert message.startswith(f"u-{role} ({role}) may not {permission.description}")
    assert f"the {role} role does not include it" in message


def test_only_stewards_read_identified_data_and_admins_and_auditors_no_patient_data() -> None:
    for role in (Role.ADMIN, Role.AUDITOR, Role.RESEARCHER):
        assert not is_allowed(member(role), P.READ_IDENTIFIED, "t2d")
    for role in (Role.ADMIN, Role.AUDITOR):
        assert not any(is_allowed(member(role), p, "t2d") for p in PATIENT_DATA)


def test_researchers_work_only_inside_their_own_projects() -> None:
    researcher = Principal("li", Role.RESEARCHER, frozenset({"t2d"}))
    for permission in (P.READ_DEIDENTIFIED, P.EXPORT, P.ANALYZE):
        assert is_allowed(researcher, permission, "t2d")
        with pytest.raises(AccessDeniedError, match="in project 'ldl': not a member of it"):
            authorize(researcher, permission, "ldl")
        with pytest.raises(AccessDeniedError, match="outside a project"):
            authorize(researcher, permission)
    assert is_allowed(researcher, P.COUNT)  # feasibility counts need no project
    steward = Principal("wang", Role.STEWARD)
    assert is_allowed(steward, P.EXPORT, "ldl")  # stewards are not limited to projects


def test_roles_are_parsed_with_a_clear_error() -> None:
    assert parse_role(" Steward ") is Role.STEWARD
    with pytest.raises(UsageError, match="roles are admin, steward, researcher, auditor"):
        parse_role("doctor")
