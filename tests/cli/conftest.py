"""Run the real ``medlake`` console entry point in a subprocess, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

Medlake = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def medlake(tmp_path: Path) -> Medlake:
    def run(
        *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        full_env = {k: v for k, v in os.environ.items() if k != "MEDLAKE_WORKSPACE"}
        full_env.update({"COLUMNS": "200", "NO_COLOR": "1"})
        full_env.update(env or {})
        return subprocess.run(
            [sys.executable, "-m", "medlake.cli.main", *args],
            capture_output=True,
            text=True,
            env=full_env,
            cwd=cwd or tmp_path,
            timeout=300,
        )

    return run
