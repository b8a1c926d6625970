"""Every workspace has its own pseudonym secret, made at init with owner-only permissions."""

from __future__ import annotations

import stat
from pathlib import Path

from medlake.config import open_workspace
from medlake.service.workspace import init_workspace, pseudonym_secret


def test_init_creates_a_private_secret_and_older_workspaces_get_one_on_first_use(
    tmp_path: Path,
) -> None:
    first = init_workspace(tmp_path / "a", demo_vocabulary=False)
    second = init_workspace(tmp_path / "b", demo_vocabulary=False)
    path = first.root / "secrets" / "pseudonym.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert pseudonym_secret(open_workspace(first.root)) != pseudonym_secret(second)

    path.unlink()  # a workspace made before secrets existed
    made = pseudonym_secret(open_workspace(first.root))
    assert path.is_file()
    assert pseudonym_secret(open_workspace(first.root)) == made
