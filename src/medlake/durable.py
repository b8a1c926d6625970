"""Making a new name in a folder durable: the one ``fsync`` of a directory medlake needs.

A file written, fsync'd and renamed or linked into a folder is only safely there once the
folder itself is fsync'd (POSIX says nothing of the entry otherwise). Landing, its mirror,
the omics store, the audit journal and its anchors all rely on it; it lives here, below
every domain, so they share one version (which fails loudly: a folder that cannot be
synced is not durable).
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    """Make ``directory``'s new entries (a renamed, linked or created name) durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
