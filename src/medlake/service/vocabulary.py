"""Loading vocabularies into a workspace's lake (the Athena download or the demo set)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from medlake.access import Permission
from medlake.audit import append_event
from medlake.config import open_workspace
from medlake.errors import InputError
from medlake.service.policy import acting_user_name, authorized
from medlake.service.workspace import open_lake
from medlake.vocab import VocabularyLoadSummary, load_athena_vocabulary, load_demo_vocabulary


@authorized(Permission.CHANGE_SETTINGS)  # vocabularies decide every concept mapping
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
            summary = load_demo_vocabulary(engine)
        else:
            summary = load_athena_vocabulary(engine, directory, progress=progress)
        append_event(engine, actor=acting_user_name(), action="vocabulary.load",
                     object_type="vocabulary", object_id=str(directory or "demo")[:255],
                     detail={"rows": summary.rows})  # fmt: skip
        return summary
