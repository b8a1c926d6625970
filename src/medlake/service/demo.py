"""The demo: synthesize a hospital, create a workspace, and report what was made.

``make demo`` runs this. Each capability that lands adds its step here (ingest, link,
check, count a cohort, analyses, serve), so the demo always shows the whole platform as
far as it exists.

Every step runs as the user whose role would do it, through the same access policy as
the CLI and the API: the login that made the workspace is its admin (ingest, backups),
and the demo adds a data steward (EMPI, quality, extraction), a researcher in project
``t2d`` (the cohort count, GWAS, DE) and an auditor (the audit trail). The steward gets an
API token, printed at the end as the demo's web UI login.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from medlake.access.context import acting_as, login_name
from medlake.errors import UsageError
from medlake.service.demo_steps import STEPS, DemoContext, DemoSection
from medlake.service.ingest import IngestProgress, IngestReport, ingest_paths
from medlake.service.workspace import LakeSummary, init_workspace, lake_summary
from medlake.synth import SynthSummary, generate_hospital

DEMO_MARKER = ".medlake-demo"
#: The synthetic HIS's visit numbers: 门诊/住院/急诊 prefix, patient number, visit count.
HIS_VISIT_NUMBER = r"^(MZ|ZY|JZ)\d+$"


@dataclass(frozen=True)
class DemoResult:
    hospital_dir: Path
    workspace_dir: Path
    synth: SynthSummary
    ingest: IngestReport
    lake: LakeSummary
    timings: dict[str, float]
    sections: list[DemoSection] = field(default_factory=list)
    users: DemoUsers | None = None


@dataclass(frozen=True)
class DemoUsers:
    """Who the demo's steps run as, and the token the demo prints to sign in with."""

    admin: str
    steward: str = "zhang.steward"
    researcher: str = "li.researcher"
    auditor: str = "chen.auditor"
    project: str = "t2d"
    login_token: str = ""

    def acting(self, role: str) -> object:
        """The scope a step of ``role`` runs in (a researcher's inside the project)."""
        user = {"admin": self.admin, "steward": self.steward, "researcher": self.researcher,
                "auditor": self.auditor}[role]  # fmt: skip
        return acting_as(user, project=self.project if role == "researcher" else None)


#: The role each demo step runs as (steps not named here run as the admin).
STEP_ROLES = {
    "link persons": "steward", "quality checks": "steward", "count cohort": "researcher",
    "extract dataset": "steward", "GWAS": "researcher", "differential expression": "researcher",
    "de-identify notes": "steward", "verify audit trail": "auditor", "backup and drill": "admin",
}  # fmt: skip


def run_demo(
    out_dir: Path,
    *,
    patients: int = 5000,
    seed: int = 42,
    progress: Callable[[int, int], None] | None = None,
    ingest_progress: Callable[[IngestProgress], None] | None = None,
    step_started: Callable[[str], None] | None = None,
) -> DemoResult:
    """Build the demo in ``out_dir`` (replacing an earlier demo there, nothing else)."""
    out_dir = out_dir.expanduser().resolve()
    _clear_previous_demo(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / DEMO_MARKER).write_text("made by medlake demo; safe to delete\n", encoding="utf-8")
    timings: dict[str, float] = {}

    started = time.perf_counter()
    hospital_dir = out_dir / "hospital"
    synth_summary = generate_hospital(hospital_dir, patients, seed, progress=progress)
    timings["synthesize"] = time.perf_counter() - started

    started = time.perf_counter()
    workspace_dir = out_dir / "workspace"
    init_workspace(workspace_dir, name="medlake-demo")
    _link_after_ingest(workspace_dir)
    users = demo_users(workspace_dir)
    timings["init workspace"] = time.perf_counter() - started

    with users.acting("admin"):
        report, ingest_timings = ingest_hospital(workspace_dir, hospital_dir,
                                                 progress=ingest_progress)  # fmt: skip
    timings.update(ingest_timings)

    context = DemoContext(hospital_dir, workspace_dir, out_dir)
    sections: list[DemoSection] = []
    for name, step in STEPS:
        if step_started is not None:
            step_started(name)
        started = time.perf_counter()
        with users.acting(STEP_ROLES.get(name, "admin")):
            sections.append(step(context))
        timings[name] = time.perf_counter() - started
    with users.acting("admin"):
        lake = lake_summary(workspace_dir)
    return DemoResult(hospital_dir, workspace_dir, synth_summary, report, lake, timings,
                      sections, users)  # fmt: skip


def demo_users(workspace_dir: Path) -> DemoUsers:
    """Add the demo's steward, researcher (in project ``t2d``) and auditor, as the admin
    the workspace's creator is; issue the steward's API token."""
    from medlake.service import access

    users = DemoUsers(admin=login_name())
    with users.acting("admin"):
        for name, role in ((users.steward, "steward"), (users.researcher, "researcher"),
                           (users.auditor, "auditor")):  # fmt: skip
            access.add_user(workspace_dir, name, role)
        access.create_project(workspace_dir, users.project, "Type 2 diabetes: metformin, HbA1c, "
                              "LDL genetics and expression")  # fmt: skip
        access.add_member(workspace_dir, users.project, users.researcher)
        token = access.issue_token(workspace_dir, users.steward).token
    return DemoUsers(admin=users.admin, login_token=token)


def ingest_hospital(
    workspace_dir: Path,
    hospital_dir: Path,
    *,
    progress: Callable[[IngestProgress], None] | None = None,
) -> tuple[IngestReport, dict[str, float]]:
    """Ingest a synthetic hospital's four systems as the demo does; the report and timings."""
    report = IngestReport()
    timings: dict[str, float] = {}
    for system, options in _hospital_sources(hospital_dir):
        started = time.perf_counter()
        part = ingest_paths(
            workspace_dir,
            [hospital_dir / system],
            source_system="biobank" if system == "omics" else system,
            options=options,
            progress=progress,
        )
        report.files.extend(part.files)
        report.ignored.extend(part.ignored)
        timings[f"ingest {system}"] = time.perf_counter() - started
    return report, timings


def _hospital_sources(hospital_dir: Path) -> list[tuple[str, dict[str, object]]]:
    """The synthetic hospital's systems in ingest order, identities first."""
    return [
        ("his", {"mapping": hospital_dir / "his" / "medlake-mapping.toml"}),
        ("emr", {}),
        # the LIS writes the HIS visit number (就诊号) in PV1-19: link results to HIS visits
        ("lis", {"visit_systems": {HIS_VISIT_NUMBER: "his"}}),
        ("omics", {}),
    ]


def _clear_previous_demo(out_dir: Path) -> None:
    if not out_dir.exists():
        return
    if not (out_dir / DEMO_MARKER).exists() and any(out_dir.iterdir()):
        raise UsageError(
            f"{out_dir} exists, is not empty and was not made by the demo; choose another"
        )
    shutil.rmtree(out_dir)


def _link_after_ingest(workspace_dir: Path) -> None:
    """The demo's ingest links each system's patients as they come (``[empi]
    link_after_ingest``), so the EMPI step finds them linked and scores the lake."""
    from medlake.config import open_workspace, write_settings

    workspace = open_workspace(workspace_dir)
    workspace.settings.empi.link_after_ingest = True
    write_settings(workspace.settings_file, workspace.settings)
