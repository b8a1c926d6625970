"""Loading vocabularies into a workspace's lake (the Athena download or the demo set)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from medlake.config import open_workspace
from medlake.errors import InputError
from medlake.service.workspace import open_lake
from medlake.vocab import VocabularyLoadSummary, load_athena_vocabulary, load_demo_vocabulary


def load_vocabulary(
    workspace_dir: Path | None,
    directory: Path | None,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> VocabularyLoadSummary:
    """Load Athena files from ``directory`` (or the demo vocabulary when None)."""
    workspace = open_workspace(workspace_dir)
    if directory is not None and not directory.is_dir():
        raise InputError(f"{directory}: not a folder of Athena vocabulary files")
    with open_lake(workspace) as engine:
        if directory is None:
            return load_demo_vocabulary(engine)
        return load_athena_vocabulary(engine, directory, progress=progress)
