"""A workspace for tests of ingest alone: EMPI linking after ingest is off (tests/empi's)."""

from __future__ import annotations

from pathlib import Path

from medlake.config import open_workspace, write_settings
from medlake.service.workspace import init_workspace


def ingest_only_workspace(root: Path) -> Path:
    """A new workspace at ``root`` whose ingests do not link persons afterwards."""
    root = init_workspace(root).root
    settings = open_workspace(root).settings
    settings.empi.link_after_ingest = False
    write_settings(root / "medlake.toml", settings)
    return root
