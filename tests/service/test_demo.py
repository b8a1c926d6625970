"""`make demo` end to end on a small hospital: every step runs and reports what it did."""

from __future__ import annotations

from pathlib import Path

import pytest

from medlake.service.demo import run_demo
from medlake.service.demo_steps import STEPS


@pytest.mark.slow
def test_demo_runs_every_step_and_reports_it(tmp_path: Path) -> None:
    result = run_demo(tmp_path / "demo", patients=250, seed=5)
    titles = [section.title for section in result.sections]
    assert len(titles) == len(STEPS)
    assert set(result.timings) >= {name for name, _ in STEPS}
    by_title = {section.title.split(":")[0]: section for section in result.sections}
    empi = by_title["EMPI"].rows[0]
    records, before, after, precision = empi[0], empi[1], empi[2], float(empi[3])
    assert records == before > after  # source patients were linked into fewer persons
    assert precision >= 0.99
    audit = by_title["Audit trail (hash chain and anchors)"].rows[0]
    assert audit[-1] == "yes"
    drill = by_title["Backup (BorgBackup) and restore drill"].rows[0]
    assert drill[-1] == "yes"
    deid = next(s for s in result.sections if s.title.startswith("De-identification"))
    assert all(float(row[2]) >= 0.95 for row in deid.rows)  # recall per PHI type
    assert (tmp_path / "demo" / "extract" / "manifest.json").is_file()
