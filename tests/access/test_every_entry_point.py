"""Every service entry point passes the policy: each public function of ``medlake.service``
that takes a workspace folder (``workspace_dir``) is ``@authorized(Permission)``, calls
``require(...)`` itself, or is listed below with the reason it needs no check.

Functions that take an open engine or a ``Workspace`` object are building blocks that
only a checked entry point can reach, so the rule is about ``workspace_dir``.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable, Iterator

import medlake.service
from medlake.service.policy import permission_of

#: Entry points without their own check, and why.
EXEMPT: dict[str, str] = {
    "access.whoami": "says who the caller is: nothing to authorize",
    "access.authenticate": "is the authentication itself (a token to a principal)",
    "access.list_projects": "filters to the caller's own projects unless admin or steward",
    "cohort.members_for_service": "internal: returns members to checked entry points only",
    "demo.demo_users": "adds users through access.add_user, which checks manage_users",
    "demo.ingest_hospital": "ingests through ingest_paths, which checks ingest",
    "jobs.list_jobs": "authorizes the principal it is given (the server's signed-in user)",
    "jobs.get_job": "authorizes the principal it is given (the server's signed-in user)",
    "jobs.request_cancel": "authorizes the principal it is given (the server's signed-in user)",
    "policy.audit_read": "writes the audit event of a read its caller was allowed",
    "webui.analysis_jobs": "returns only the jobs the caller may analyse in (policy.may)",
    "webui.session_principal": "is the web session's authentication itself",
    "mirror.refuse_if_frozen": "a guard other checked entry points call",
    "workspace.schema_versions": "reads the schema version: the lake may predate the users",
    "workspace.upgrade_schema": "operator step on the files: the lake may predate the users",
}


def _entry_points() -> Iterator[tuple[str, Callable[..., object]]]:
    for info in pkgutil.iter_modules(medlake.service.__path__):
        module = importlib.import_module(f"medlake.service.{info.name}")
        for name, function in vars(module).items():
            if name.startswith("_") or not inspect.isfunction(function):
                continue
            if inspect.unwrap(function).__module__ != module.__name__:
                continue  # imported from elsewhere: checked where it is defined
            parameters = inspect.signature(function).parameters
            if "workspace_dir" in parameters:
                yield f"{info.name}.{name}", function


def _checks_itself(function: Callable[..., object]) -> bool:
    source = inspect.getsource(inspect.unwrap(function))
    return "require(" in source or "require_on(" in source


def test_every_entry_point_is_authorized_or_says_why_not() -> None:
    unchecked = [
        name
        for name, function in _entry_points()
        if permission_of(function) is None
        and not _checks_itself(function)
        and name not in EXEMPT
    ]
    assert not unchecked, f"service entry points without a policy check: {unchecked}"


def test_the_exemptions_are_still_entry_points() -> None:
    names = {name for name, _ in _entry_points()}
    assert not set(EXEMPT) - names, "an exempted function is gone: drop it from EXEMPT"


def test_the_scan_sees_the_entry_points() -> None:
    found = dict(_entry_points())
    assert len(found) > 40
    assert permission_of(found["extract.extract_cohort"]) is not None
