"""Content-addressed storage of omics files under the workspace's ``omics/`` folder.

Omics matrices stay in their field's formats (DESIGN: "Lake"); the lake registers them.
Each stored unit is a *fileset* (a PLINK ``.bed/.bim/.fam`` triple, a counts Parquet
with its sample sheet) in its own folder::

    omics/<kind>/<key>/<member files>
    omics/<kind>/<key>/SHA256SUMS

``SHA256SUMS`` lists every member as ``sha256sum`` writes it (``<hex>  <name>``, sorted by
name) and ``<key>`` is the first :data:`KEY_HEX` hex digits of the SHA-256 of that file.
So a folder's name depends only on its members' bytes and names: the same fileset
always lands in the same folder (re-ingest writes nothing), a ``.bed`` with a different
``.fam`` gets a folder of its own, and ``sha256sum -c SHA256SUMS`` checks a folder with
standard tools.

Writes are crash safe: members are written to a hidden temporary folder next to the
final one, fsynced, and the folder is renamed into place in one step. An existing
folder is never overwritten (content-addressed: it already holds the same bytes). A
crash leaves at most a ``.tmp-*`` folder, which a later run ignores.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from medlake.durable import fsync_dir
from medlake.errors import UsageError

KEY_HEX = 16  # 64 bits of SHA-256: collisions are not a practical concern at biobank scale
_COPY_BLOCK = 1 << 20


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_COPY_BLOCK):
            digest.update(block)
    return digest.hexdigest()


class HashingWriter:
    """A binary file handle that hashes what is written through it."""

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle
        self._digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self._digest.update(data)
        self.size += len(data)
        return self._handle.write(data)

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


@dataclass
class StoredFileset:
    """A fileset in place: its folder relative to ``omics/`` and each member's SHA-256."""

    omics_dir: Path
    folder: str  # e.g. "genotypes/0123456789abcdef"
    digests: dict[str, str] = field(default_factory=dict)  # member name -> sha256 hex
    created: bool = False  # False when the same fileset was already stored

    def uri(self, name: str) -> str:
        """A member's ``file_uri``: relative to ``omics/``, with forward slashes."""
        return f"{self.folder}/{name}"

    def path(self, name: str) -> Path:
        return self.omics_dir / self.folder / name


def sha256sums_text(digests: dict[str, str]) -> str:
    """``SHA256SUMS`` content for the members (``sha256sum`` text format, sorted by name)."""
    return "".join(f"{digests[name]}  {name}\n" for name in sorted(digests))


class FilesetBuilder:
    """Members of one fileset being written into a temporary folder.

    Use :func:`build_fileset`; add members with :meth:`copy` (stream a file) or
    :meth:`open` (write a converted file through a :class:`HashingWriter`).
    """

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.digests: dict[str, str] = {}

    def _check_name(self, name: str) -> None:
        if "/" in name or name in ("", ".", "..", "SHA256SUMS") or name in self.digests:
            raise UsageError(f"bad or repeated fileset member name {name!r}")

    def copy(self, source: Path, name: str) -> str:
        """Copy ``source`` in as ``name``; returns its SHA-256."""
        with source.open("rb") as src, self.open(name) as out:
            while block := src.read(_COPY_BLOCK):
                out.write(block)
        return self.digests[name]

    @contextmanager
    def open(self, name: str) -> Iterator[HashingWriter]:
        """Write member ``name``; its digest is recorded (and the file fsynced) on exit."""
        self._check_name(name)
        with (self.tmp / name).open("wb") as handle:
            writer = HashingWriter(handle)
            yield writer
            handle.flush()
            os.fsync(handle.fileno())
        self.digests[name] = writer.hexdigest()

    def adopt(self, name: str) -> str:
        """Record a member that a library wrote itself at ``tmp / name``; returns its SHA-256."""
        self._check_name(name)
        path = self.tmp / name
        with path.open("rb") as handle:
            os.fsync(handle.fileno())
        self.digests[name] = sha256_file(path)
        return self.digests[name]


@contextmanager
def build_fileset(omics_dir: Path, kind: str, result: StoredFileset) -> Iterator[FilesetBuilder]:
    """Build a fileset under ``omics_dir/kind`` and put it in place on a clean exit.

    ``result`` is filled on exit (folder, digests, created). On an exception the
    temporary folder is removed and nothing is stored.
    """
    parent = omics_dir / kind
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=parent))
    tmp.chmod(0o755)  # mkdtemp makes it 0700; the stored folder is read like any other
    try:
        builder = FilesetBuilder(tmp)
        yield builder
        sums = sha256sums_text(builder.digests).encode("ascii")
        with (tmp / "SHA256SUMS").open("wb") as handle:
            handle.write(sums)
            handle.flush()
            os.fsync(handle.fileno())
        key = hashlib.sha256(sums).hexdigest()[:KEY_HEX]
        final = parent / key
        result.omics_dir = omics_dir
        result.folder = f"{kind}/{key}"
        result.digests = dict(builder.digests)
        if final.exists():
            result.created = False
        else:
            try:
                os.rename(tmp, final)
                result.created = True
                fsync_dir(parent)
            except OSError:
                if not final.exists():  # not a concurrent writer of the same fileset
                    raise
                result.created = False
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
