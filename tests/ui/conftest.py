"""Fixtures of the web UI tests: a private copy of the test hospital with one user per
role, its EMPI review queue filled and one GWAS result written, served by a real
``medlake serve`` process for the browser tests.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.serve_process import medlake_serve

from medlake.service import access

ROLES = ("steward", "researcher", "auditor")
REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class UiWorkspace:
    root: Path
    tokens: dict[str, str]  # role -> token
    users: dict[str, str]  # role -> user name
    #: What the lake holds, read before any server runs (a served DuckDB lake is not
    #: opened from a second process): a person with measurements and their timeline.
    person_id: int
    source_patient_id: str
    timeline: dict[str, Any]


@pytest.fixture(scope="session")
def ui_workspace(hospital_lake, tmp_path_factory: pytest.TempPathFactory) -> UiWorkspace:
    """The test hospital with users, a linked EMPI (one pair or more to review) and an
    LDL GWAS under ``analyses/``."""
    from medlake.access.context import acting_as
    from medlake.config import open_workspace, read_settings, write_settings
    from medlake.service.empi import link_workspace
    from medlake.service.gwas_lake import LakePhenotype, run_gwas_lake
    from medlake.service.patient360 import person_timeline
    from medlake.service.workspace import open_lake

    root = hospital_lake.copy(tmp_path_factory.mktemp("ui") / "ws")
    users = {"admin": access.login_name()} | {role: f"{role}1" for role in ROLES}
    for role in ROLES:
        access.add_user(root, users[role], role)
    tokens = {role: access.issue_token(root, name, as_user=name).token
              for role, name in users.items()}  # fmt: skip
    # A wide review band, so the queue has pairs whatever the model's current precision.
    settings = read_settings(root / "medlake.toml")
    settings.empi.link_threshold, settings.empi.review_threshold = 0.999999, 0.2
    write_settings(root / "medlake.toml", settings)
    with acting_as(users["steward"]):
        link_workspace(root)
        run_gwas_lake(root, LakePhenotype("LDL", measurement="22748-8"),
                      root / "analyses" / "ldl", plots=False)  # fmt: skip
        with open_lake(open_workspace(root)) as engine:
            person = int(engine.scalar(engine.table("measurement").person_id.min()))
            patients = engine.table("source_patient")
            source_id = engine.execute(
                patients.filter(patients.person_id == person).limit(1)
            ).to_pylist()[0]["source_patient_id"]
        timeline = person_timeline(root, person).as_dict()
    return UiWorkspace(root, tokens, users, person, source_id, timeline)


@pytest.fixture(scope="session")
def served_ui(ui_workspace: UiWorkspace) -> Iterator[str]:
    """A real ``medlake serve`` on a free port over a copy of the workspace (a served
    DuckDB lake cannot be opened by the in-process tests at the same time); yields its
    base URL."""
    served = ui_workspace.root.parent / "served"
    shutil.copytree(ui_workspace.root, served, symlinks=True)
    log = ui_workspace.root.parent / "serve.log"
    with medlake_serve(served, log=log, timeout=60) as server:
        yield server.url


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where screenshots go: ``$MEDLAKE_TEST_ARTIFACTS`` or ``test-artifacts/ui``."""
    folder = Path(os.environ.get("MEDLAKE_TEST_ARTIFACTS", REPO / "test-artifacts")) / "ui"
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nweb UI screenshots: {folder}")
    return folder
