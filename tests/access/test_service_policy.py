"""The policy inside the services: every role against every permission, through the real
service functions on a real lake, as the CLI runs them (a user name in context, resolved
against the workspace's users).

For each (role, permission) one service call that needs exactly that permission is made
as a user of that role: allowed ones must do their work, refused ones must raise
:class:`AccessDeniedError` saying who, what and why, write a ``denied`` audit event, and
leave no output behind. The expected outcome is the role table of
:mod:`medlake.access.policy` (``is_allowed``), which docs/access.md states in words.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from medlake.access import ROLE_PERMISSIONS, Permission, Principal, Role, is_allowed
from medlake.access.context import acting_as
from medlake.config import open_workspace
from medlake.errors import AccessDeniedError, AuthenticationError
from medlake.service import access
from medlake.service.workspace import open_lake

PROJECT = "p1"
#: (user name, role, projects): a researcher in the project and one outside it.
USERS = {
    "ada": ("admin", ()),
    "sam": ("steward", ()),
    "rita": ("researcher", (PROJECT,)),
    "otto": ("researcher", ()),
    "aud": ("auditor", ()),
}


@pytest.fixture(scope="module")
def lake(hospital_lake: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the test hospital with the five users and project p1."""
    root = hospital_lake.copy(tmp_path_factory.mktemp("policy") / "ws")
    admin = access.login_name()
    for name, (role, _) in USERS.items():
        access.add_user(root, name, role, as_user=admin)
    access.create_project(root, PROJECT, "policy tests", as_user=admin)
    access.add_member(root, PROJECT, "rita", as_user=admin)
    return root


def _person(root: Path) -> int:
    with open_lake(open_workspace(root)) as engine:
        return int(engine.scalar(engine.table("person").person_id.min()))


T2D = {
    "name": "t2d",
    "concept_sets": [{"id": 1, "name": "t2d", "items": [
        {"vocabulary_id": "ICD10CM", "concept_code": "E11", "include_descendants": True}]}],
    "primary_criteria": {
        "criteria": [{"domain": "condition_occurrence", "codeset_id": 1, "first": True}]
    },
}  # fmt: skip


def _example() -> Any:
    from medlake.cohort import example_path
    from medlake.service.cohort import load_definition

    return load_definition(example_path("t2d_hba1c_metformin"))


def _call(permission: Permission, root: Path, out: Path) -> Callable[[], object]:
    """One service call that needs exactly ``permission`` (inside project p1)."""
    from medlake.audit import EventFilter
    from medlake.service import (
        audit,
        cohort,
        empi,
        extract,
        gwas_lake,
        ingest,
        patient360,
        quality,
        vocabulary,
        watch,
    )
    from medlake.service.cohort import parse_definition

    calls: dict[Permission, Callable[[], object]] = {
        Permission.READ_IDENTIFIED: lambda: patient360.person_timeline(root, _person(root)),
        Permission.READ_DEIDENTIFIED: lambda: cohort.create_cohort(root, _example(), out.name),
        Permission.COUNT: lambda: cohort.count_cohort(root, _example()),
        Permission.COUNT_EXACT: lambda: cohort.count_cohort(root, _example(), exact=True),
        Permission.EXPORT: lambda: extract.extract_demo_cohort(root, out),
        Permission.ANALYZE: lambda: gwas_lake.run_gwas_lake(
            root,
            gwas_lake.LakePhenotype("T2D", case_cohort=parse_definition(T2D)),
            out / "t2d",
            n_pcs=0,
            plots=False,
        ),
        Permission.REVIEW_LINKS: lambda: empi.operations(root),
        Permission.INGEST: lambda: ingest.quarantine_entries(root),
        Permission.RUN_QC: lambda: quality.check_results(root),
        Permission.READ_AUDIT: lambda: audit.show_events(root, EventFilter()),
        Permission.MANAGE_USERS: lambda: access.list_users(root),
        Permission.MANAGE_PROJECTS: lambda: access.create_project(root, out.name, "t"),
        Permission.CHANGE_SETTINGS: lambda: vocabulary.load_vocabulary(root, None),
        Permission.PROTECT: lambda: watch.freeze_status(root),
        Permission.APPROVE_RELEASE: lambda: _approve(root, out),
    }
    return calls[permission]


def _approve(root: Path, out: Path) -> object:
    """Approve for release an extract the researcher rita made (so that no approver made it)."""
    from medlake.service import extract, release

    folder = out.parent / f"{out.name}_extract"
    with acting_as("rita", project=PROJECT):
        extract.extract_demo_cohort(root, folder)
    return release.approve_release(root, folder, note="reviewed")


CASES = list(itertools.product(USERS, Permission))


def _denied_events(root: Path, user: str, action: str) -> int:
    with open_lake(open_workspace(root)) as engine:
        events = engine.table("audit_event")
        return engine.count(
            events.filter(
                (events.actor == user) & (events.action == action) & (events.outcome == "denied")
            )
        )


@pytest.mark.slow
@pytest.mark.parametrize(("user", "permission"), CASES, ids=[f"{u}-{p}" for u, p in CASES])
def test_every_role_gets_exactly_its_permissions(
    lake: Path, tmp_path: Path, user: str, permission: Permission
) -> None:
    role, projects = USERS[user]
    principal = Principal(user, Role(role), frozenset(projects))
    allowed = is_allowed(principal, permission, PROJECT)
    out = tmp_path / f"out_{user}_{permission.value}"
    before = _denied_events(lake, user, permission.value)
    with acting_as(user, project=PROJECT):
        call = _call(permission, lake, out)
        if allowed:
            call()
            return
        with pytest.raises(AccessDeniedError) as refused:
            call()
    message = str(refused.value)
    assert message.startswith(f"{user} ({role}) may not {permission.description}")
    if permission in ROLE_PERMISSIONS[Role(role)]:  # a researcher outside the project
        assert f"in project '{PROJECT}': not a member of it" in message
    else:
        assert f"the {role} role does not include it" in message
    assert _denied_events(lake, user, permission.value) == before + 1
    assert not out.exists()  # refused before any work


def test_an_unknown_user_is_refused_and_the_attempt_audited(lake: Path) -> None:
    from medlake.service import cohort

    with acting_as("mallory"), pytest.raises(AuthenticationError, match="mallory"):
        cohort.count_cohort(lake, _example())
    assert _denied_events(lake, "mallory", Permission.COUNT.value) >= 1


def test_the_principal_set_by_an_edge_is_used_without_a_lookup(lake: Path) -> None:
    """The API puts the token's principal in context; the services trust the edge's
    authentication and check the role (a refusal is still audited)."""
    from medlake.service import patient360

    researcher = Principal("api-user", Role.RESEARCHER, frozenset({PROJECT}))
    with acting_as(researcher), pytest.raises(AccessDeniedError, match="api-user"):
        patient360.person_timeline(lake, _person(lake))
    assert _denied_events(lake, "api-user", Permission.READ_IDENTIFIED.value) == 1


def test_nested_calls_inherit_the_checked_principal_and_project(lake: Path, tmp_path: Path) -> None:
    """A researcher's extract in their project reads the cohort's members through an
    internal call; the project goes with it (the member list itself stays refused)."""
    from medlake.service import cohort, extract

    with acting_as("rita", project=PROJECT):
        result = extract.extract_demo_cohort(lake, tmp_path / "x")
        assert result.members == cohort.members_for_service(lake, _example()).num_rows
        with pytest.raises(AccessDeniedError, match="may not read identified data"):
            cohort.cohort_members(lake, _example())


def _pii_values(root: Path) -> set[str]:
    """Every identifying string the lake holds about its patients (pii_person)."""
    with open_lake(open_workspace(root)) as engine:
        rows = engine.execute(engine.table("pii_person")).to_pylist()
    keep = ("name", "resident", "phone", "address", "email", "mrn")
    return {
        str(value)
        for row in rows
        for key, value in row.items()
        if value is not None and any(k in key for k in keep) and len(str(value)) >= 4
    }


def test_a_researchers_extract_holds_no_identifiers_ids_or_real_dates(
    lake: Path, tmp_path: Path
) -> None:
    import datetime as dt

    import pandas as pd

    from medlake.service import cohort, extract

    with acting_as("rita", project=PROJECT):
        result = extract.extract_demo_cohort(lake, tmp_path / "x")
    dataset = pd.read_parquet(result.out_dir / "dataset.parquet")
    assert not {"person_id", "__person_id"} & set(dataset.columns)
    assert not [c for c in dataset.columns if c.startswith("pii") or "name" in c]
    text = {str(v) for c in dataset.columns for v in dataset[c].dropna().unique()}
    assert not text & _pii_values(lake)
    members = cohort.members_for_service(lake, _example()).to_pandas()
    assert not text & {str(p) for p in members.person_id}  # pseudonyms, never ids
    real = {
        (d.isoformat() if isinstance(d, dt.date) else str(d)) for d in members.cohort_start_date
    }
    dates = [c for c in dataset.columns if "date" in c]
    shown = {str(v)[:10] for c in dates for v in dataset[c].dropna()}
    assert len(shown & real) <= max(1, len(real) // 20)  # shifted (a shift can be 0 days)


@pytest.mark.parametrize(
    "read", ["timeline", "notes", "members", "genotypes", "pii_table", "quarantine"]
)
def test_a_researcher_gets_no_identified_data_even_in_their_project(lake: Path, read: str) -> None:
    from medlake.service import cohort, deid, gwas_lake, ingest, patient360, workspace

    calls = {
        "timeline": lambda: patient360.person_timeline(lake, _person(lake), with_note_text=True),
        "notes": lambda: deid.deidentified_notes(lake),
        "members": lambda: cohort.cohort_members(lake, _example()),
        "genotypes": lambda: gwas_lake.genotype_samples(lake),
        "pii_table": lambda: workspace.table_preview(lake, "pii_person"),
        "quarantine": lambda: ingest.quarantine_entries(lake),
    }
    with (
        acting_as("rita", project=PROJECT),
        pytest.raises(AccessDeniedError, match=r"^rita \(researcher\)"),
    ):
        calls[read]()


def test_quarantined_payloads_are_withheld_from_admins_and_shown_to_stewards(lake: Path) -> None:
    from medlake.service import ingest

    with acting_as("ada"):
        for_admin = ingest.quarantine_entries(lake)
    with acting_as("sam"):
        for_steward = ingest.quarantine_entries(lake)
    assert for_admin, "the test hospital plants defects that are quarantined"
    assert all(entry["raw_payload"] is None for entry in for_admin)
    assert all(entry["raw_payload"] for entry in for_steward)
    assert [{**e, "raw_payload": None} for e in for_steward] == for_admin


def test_reads_of_patient_data_are_audited_with_their_persons(lake: Path) -> None:
    from medlake.audit import EventFilter
    from medlake.service import audit, patient360

    person = _person(lake)
    with acting_as("sam"):
        patient360.person_timeline(lake, person)
    with acting_as("aud"):
        events = audit.show_events(lake, EventFilter(actor="sam", person_id=person, action="read"))
    assert events
    assert events[0]["object_type"] == "person"
    assert events[0]["object_id"] == str(person)


def test_a_release_needs_a_second_steward_and_the_files_as_exported(
    lake: Path, tmp_path: Path
) -> None:
    import json

    from medlake.errors import InputError
    from medlake.service import extract, release

    folder = tmp_path / "x"
    with acting_as("sam"):
        extract.extract_demo_cohort(lake, folder)
        with pytest.raises(AccessDeniedError, match="sam made this extract"):
            release.approve_release(lake, folder, note="mine")
    access.add_user(lake, "sue", "steward", as_user=access.login_name())
    (folder / "notes.txt").write_text("added later")
    with acting_as("sue"), pytest.raises(InputError, match=r"did not write: notes\.txt"):
        release.approve_release(lake, folder, note="x")
    (folder / "notes.txt").unlink()
    (folder / "dataset.csv").write_text("edited")
    with acting_as("sue"), pytest.raises(InputError, match=r"dataset\.csv: changed"):
        release.approve_release(lake, folder, note="x")

    again = tmp_path / "y"
    with acting_as("sam"):
        extract.extract_demo_cohort(lake, again)
    with acting_as("sue"):
        approval = release.approve_release(lake, again, note="k=5 checked")
    assert approval["approved_by"] == "sue"
    assert approval["exported_by"] == "sam"
    assert json.loads((again / "approval.json").read_text())["note"] == "k=5 checked"
