"""A refused long command says so before it draws a progress bar: ``medlake qc run`` as a
user who may not run checks prints the one-line refusal and nothing else on stderr."""

from __future__ import annotations

from pathlib import Path

from tests.cli.conftest import Medlake

from medlake.service import access
from medlake.service.workspace import init_workspace


def test_qc_run_refuses_before_its_progress_bar(medlake: Medlake, tmp_path: Path) -> None:
    root = tmp_path / "ws"
    init_workspace(root, demo_vocabulary=False)
    access.add_user(root, "aud", "auditor", as_user=access.login_name())
    done = medlake("--as", "aud", "qc", "run", "-w", str(root))
    assert done.returncode == 77, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr  # no progress bar before (or after) the refusal
    assert lines[0].startswith("error:")
    assert "may not run data-quality checks" in lines[0]
    assert done.stdout == ""
