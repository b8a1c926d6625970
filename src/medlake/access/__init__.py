"""Access control: users with roles, hashed API tokens, projects, and the policy every
service call passes (:func:`authorize`)."""

from medlake.access.policy import (
    PROJECT_SCOPED,
    ROLE_PERMISSIONS,
    Permission,
    Principal,
    Role,
    authorize,
    is_allowed,
    parse_role,
    roles_with,
)
from medlake.access.tokens import NewToken

__all__ = [
    "PROJECT_SCOPED",
    "ROLE_PERMISSIONS",
    "NewToken",
    "Permission",
    "Principal",
    "Role",
    "authorize",
    "is_allowed",
    "parse_role",
    "roles_with",
]
