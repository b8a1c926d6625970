"""The real ``medlake`` console script, as users run it: every command runs as a user
(``medlake --as USER``, else ``$MEDLAKE_USER``, else the login), refused ones exit 77 with
one line saying who, what and why, and allowed ones work."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from medlake.service import access
from medlake.service.workspace import init_workspace


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli-policy") / "ws"
    init_workspace(root, demo_vocabulary=False)
    admin = access.login_name()
    for name, role in (("rita", "researcher"), ("aud", "auditor"), ("sam", "steward")):
        access.add_user(root, name, role, as_user=admin)
    return root


def medlake(*args: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MEDLAKE_WORKSPACE", "MEDLAKE_USER")}
    env |= {"COLUMNS": "200", "NO_COLOR": "1"} | ({"MEDLAKE_USER": user} if user else {})
    return subprocess.run(
        [sys.executable, "-m", "medlake.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


REFUSED = [
    (
        ["--as", "rita", "person", "timeline", "1"],
        None,
        "rita (researcher) may not read identified data",
    ),
    (["--as", "aud", "qc", "run"], None, "aud (auditor) may not run data-quality checks"),
    (["backup", "list"], "rita", "rita (researcher) may not run backups"),
    (["--as", "sam", "audit", "verify"], None, "sam (steward) may not read the audit trail"),
    (["--as", "sam", "user", "list"], None, "sam (steward) may not manage users"),
    (["--as", "mallory", "status"], None, "mallory"),
]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "env_user", "message"), REFUSED, ids=[" ".join(a) for a, _, _ in REFUSED]
)
def test_a_refused_command_exits_77_with_one_line(
    workspace: Path, args: list[str], env_user: str | None, message: str
) -> None:
    done = medlake(*args, "-w", str(workspace), user=env_user)
    assert done.returncode == 77, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr  # one line (a progress bar may precede it)
    assert message in errors[0]
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_allowed_commands_run_as_their_user(workspace: Path) -> None:
    verified = medlake("--as", "aud", "audit", "verify", "-w", str(workspace))
    assert verified.returncode == 0, verified.stderr
    status = medlake("status", "-w", str(workspace), user="rita")
    assert status.returncode == 0, status.stderr
    me = medlake("--as", "sam", "user", "whoami", "-w", str(workspace))
    assert me.stdout.startswith("sam (steward)")
