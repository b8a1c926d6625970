"""Options shared by many commands, as ``Annotated`` aliases."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medlake.config import WORKSPACE_ENV

WorkspaceOption = Annotated[
    Path | None,
    typer.Option(
        "--workspace",
        "-w",
        help=f"Workspace directory (default: ${WORKSPACE_ENV}, else the current directory).",
        show_default=False,
    ),
]

JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
