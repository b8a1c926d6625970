"""Landing: the one place that writes ``landing/``, append-only and content-addressed.

Every file or message medlake receives is stored unchanged before anything parses it,
named by its SHA-256: ``landing/<first two hex digits>/<sha256>``. The same content
always gets the same name, so landing it again finds it already there and nothing is
written; an existing landed file is never opened for writing, renamed over or deleted.
The curated lake can therefore always be rebuilt from ``landing/``.

Durability: the content goes to a temporary file inside ``landing/`` (same file system),
is fsync'd, then linked to its final name (``os.link`` fails rather than replacing an
existing name, so two concurrent landers of the same content cannot clobber each other)
and its folder is fsync'd (and ``landing/`` when the ``<ab>`` folder is new), so a landed
file survives a power cut once this returns.
The MLLP listener acknowledges a message only after :func:`land_bytes` returns.

Mirrored ("dual-write") landing: given a :class:`LandingStore` with a mirror root
instead of a plain folder, each block is written to a temporary file on both roots in
the same pass, both are fsync'd and linked, and only then does the call return — so an
acknowledged message is on two disks (RPO 0). A side that fails (read-only, gone, full)
is marked degraded in the store's state file (:mod:`medlake.ingest.landing_mirror`) and
the write goes on to the other side; a degraded side is not written again until
``medlake mirror resync`` has brought it back. Only when no side takes the content does
landing fail. A frozen workspace (the ransomware watch's read-only mode) lands nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from medlake.config import frozen_message
from medlake.durable import fsync_dir
from medlake.errors import InputError, WorkspaceFrozenError
from medlake.ingest.landing_mirror import LandingStore, Side, fetch_verified
from medlake.ingest.landing_remote import as_os_error

_READ_SIZE = 1 << 20  # 1 MiB: large enough for disk throughput, small enough for RSS
TEMPORARY_PREFIX = ".landing-"
_READ_ONLY = 0o444
# land_files: concurrent fsyncs of small files share the file system's journal commits
# (1,000 day files: 1.2-2.1 s one after another, 0.2 s from 8 threads).
_SYNC_THREADS = 8
_SYNCS_IN_FLIGHT = 64  # temporary files written and open, waiting for their fsync

__all__ = [
    "LandedFile",
    "LandingStore",
    "land_bytes",
    "land_file",
    "land_files",
    "landed_path",
    "leftover_temporaries",
]


@dataclass(frozen=True)
class LandedFile:
    """A file stored in ``landing/``: its content hash, where it lies, how big it is."""

    sha256: str
    path: Path
    size: int
    already_present: bool  # True when this content had been landed before
    degraded: tuple[str, ...] = ()  # sides that failed while landing this file

    @property
    def relative_path(self) -> str:
        """``<ab>/<sha256>``, relative to the landing folder (as ``ingest_batch`` stores it)."""
        return f"{self.sha256[:2]}/{self.sha256}"


def landed_path(landing_dir: Path, sha256: str) -> Path:
    """Where content with this SHA-256 lies (or would lie) in ``landing_dir``."""
    return landing_dir / sha256[:2] / sha256


def land_file(path: Path, landing: Path | LandingStore, *, likely_new: bool = False) -> LandedFile:
    """Store the file at ``path`` unchanged in ``landing``; return where it landed.

    The file is hashed first (one read) so content landed before costs no write; only
    new content is copied, and hashed again while copying, so what lands is what was
    hashed even if the source file changed in between.

    ``likely_new`` (the caller expects content never landed, e.g. no batch of its size):
    the file is copied and hashed in one pass, named by that hash, and the copy dropped
    if the name was taken after all — half the hashing for new content, a wasted copy
    for old. Only where every side is a local folder (a URL side needs the name first).
    """
    store = LandingStore.of(landing)
    _refuse_if_frozen(store)
    healthy = store.healthy_sides()
    if likely_new and healthy and all(side.root is not None for side in healthy):
        try:
            with path.open("rb") as source:
                return _store(iter(lambda: source.read(_READ_SIZE), b""), store, healthy, None)
        except OSError as exc:
            raise InputError(f"cannot land {path}: {exc.strerror or exc}") from exc
    try:
        size = path.stat().st_size
        digest = _hash_file(path)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    missing = _sides_missing(store, digest)
    if not missing:
        return _present(store, digest, size)
    try:
        with path.open("rb") as source:
            return _store(iter(lambda: source.read(_READ_SIZE), b""), store, missing, digest)
    except OSError as exc:
        raise InputError(f"cannot land {path}: {exc.strerror or exc}") from exc


def land_bytes(data: bytes, landing: Path | LandingStore) -> LandedFile:
    """Store ``data`` (a received message) in ``landing``; durable when this returns."""
    store = LandingStore.of(landing)
    _refuse_if_frozen(store)
    digest = hashlib.sha256(data).hexdigest()
    missing = _sides_missing(store, digest)
    if not missing:
        return _present(store, digest, len(data))
    return _store([data], store, missing, digest)


def land_files(
    paths: Sequence[Path],
    landing: Path | LandingStore,
    on_read: Callable[[int, str, bytes], None] | None = None,
) -> list[LandedFile | InputError]:
    """Land many small files: what :func:`land_file` does for each, durable together.

    Each file is read whole (the caller's files are small), hashed once and written to
    its temporary names; the fsyncs of the contents run in a pool of threads, then each
    is linked to its content name and every folder that got a name is fsync'd once
    (instead of two or three fsyncs one after another per file, most of a day file's
    landing). Every file is durable when this returns, as after :func:`land_file`; one
    that cannot be read or landed has its error in its place in the list.

    With a mirror, the files are landed one by one (:func:`land_file`): a side that
    fails is then marked degraded once and not written again for the files after it.

    ``on_read(i, sha256, content)``, without a mirror, is called as soon as file ``i``
    is read and hashed, in order, with the bytes that land: the caller may parse them
    while the files are landed (nothing about them may be recorded before this returns).
    """
    store = LandingStore.of(landing)
    _refuse_if_frozen(store)
    results: list[LandedFile | InputError | None] = [None] * len(paths)
    if store.mirror is not None:
        for index, path in enumerate(paths):
            try:
                results[index] = land_file(path, store)
            except InputError as error:
                results[index] = error
        return results  # type: ignore[return-value]
    store.primary.mkdir(parents=True, exist_ok=True)  # once, not for every file
    written: list[tuple[int, list[_SideWriter], str, int]] = []
    in_flight: deque[Future[None]] = deque()
    with ThreadPoolExecutor(_SYNC_THREADS, thread_name_prefix="medlake-land-sync") as pool:
        for index, path in enumerate(paths):
            try:
                data = path.read_bytes()
            except OSError as exc:
                results[index] = InputError(f"cannot read {path}: {exc.strerror or exc}")
                continue
            digest = hashlib.sha256(data).hexdigest()
            if on_read is not None:
                on_read(index, digest, data)
            missing = _sides_missing(store, digest)
            if not missing:
                results[index] = _present(store, digest, len(data))
                continue
            writers, sha256, size = _write_sides([data], store, missing, digest, made=True)
            written.append((index, writers, sha256, size))
            in_flight.extend(pool.submit(writer.sync) for writer in writers)
            while len(in_flight) > _SYNCS_IN_FLIGHT:
                in_flight.popleft().result()
        for future in in_flight:
            future.result()
    folders: _Folders = {}  # every fsync done: the names are linked after their content
    for _, writers, sha256, _ in written:
        for writer in writers:
            writer.link(sha256, folders)
    for folder, linked in folders.items():
        try:
            fsync_dir(folder)
        except OSError as exc:  # those names are not durable: that side failed them
            for writer in linked:
                writer.error = writer.error or exc
    for index, writers, sha256, size in written:
        try:
            results[index] = _landed(store, writers, sha256, size)
        except OSError as exc:
            results[index] = InputError(f"cannot land {paths[index]}: {exc.strerror or exc}")
    return results  # type: ignore[return-value]


def _refuse_if_frozen(store: LandingStore) -> None:
    message = frozen_message(store.freeze_file)
    if message is not None:
        raise WorkspaceFrozenError(message)


def _sides_missing(store: LandingStore, digest: str) -> list[Side]:
    """The healthy sides that do not hold this content yet.

    A URL root is asked (one request) only when the local roots hold the content already:
    content new to them is written to the store without asking, as a PUT of the same
    bytes under the same content key changes nothing if it was there.
    """
    healthy = store.healthy_sides()
    local_missing = [s for s in healthy if s.root is not None and not s.holds(digest)]
    remote = [s for s in healthy if s.root is None]
    if local_missing:
        return local_missing + remote
    return [s for s in remote if not s.holds(digest)]


def _local_path(store: LandingStore, holding: list[Side], digest: str) -> Path:
    """A local path of the landed content for the readers: a local side's file, else a
    verified copy fetched from the URL mirror (only when the primary disk has failed)."""
    for side in holding:
        if side.root is not None:
            return side.path(digest)
    return fetch_verified(store, holding[0], digest)


def _present(store: LandingStore, digest: str, size: int) -> LandedFile:
    path = _local_path(store, store.healthy_sides(), digest)
    return LandedFile(digest, path, size, already_present=True)


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while block := source.read(_READ_SIZE):
            digest.update(block)
    return digest.hexdigest()


class _SideWriter:
    """One side's temporary file; any OSError marks the side failed instead of raising."""

    def __init__(self, store: LandingStore, side: Side) -> None:
        self.store, self.side = store, side
        self.temp = side.root / f"{TEMPORARY_PREFIX}{uuid.uuid4().hex}"
        self.error: OSError | None = None
        self.out = None
        self.linked_new = False
        self._try("open", self._open)

    def _open(self) -> None:
        # Without a mirror the caller has just made the root (_write_sides).
        if self.store.mirror is not None and not self.side.root.is_dir():
            # A root that vanished (unmounted disk) is not silently recreated.
            raise FileNotFoundError(2, "landing root is missing", str(self.side.root))
        self.out = self.temp.open("xb")

    def _try(self, step: str, action: object) -> None:
        if self.error is not None:
            return
        try:
            self.store.fault_point(self.side.name, step)
            action()  # type: ignore[operator]
        except OSError as exc:
            self.error = exc
            self.abort()

    def write(self, block: bytes) -> None:
        self._try("write", lambda: self.out.write(block))  # type: ignore[union-attr]

    def finish(self, sha256: str) -> None:
        """fsync the temporary file, link it to its content name, fsync the folders."""
        self.sync()
        self.link(sha256)

    def sync(self) -> None:
        """fsync the temporary file (the content is durable; its name not yet)."""

        def sync() -> None:
            self.out.flush()  # type: ignore[union-attr]
            os.fsync(self.out.fileno())  # type: ignore[union-attr]
            self.out.close()  # type: ignore[union-attr]
            os.chmod(self.temp, _READ_ONLY)

        self._try("fsync", sync)

    def link(self, sha256: str, folders: _Folders | None = None) -> None:
        """Link the synced temporary file to its content name and fsync the folders, or
        (``folders``) leave the folders to the caller's one fsync each for many files."""

        def link() -> None:
            target = landed_path(self.side.root, sha256)
            new_folder = False
            if folders is None or target.parent not in folders:  # else linked in already
                try:
                    target.parent.mkdir()
                    new_folder = True
                except FileExistsError:
                    pass
            try:
                # link, not rename: it refuses to replace an existing name (append-only).
                os.link(self.temp, target)
                self.linked_new = True
            except FileExistsError:
                pass
            changed = [target.parent, self.side.root] if new_folder else [target.parent]
            if folders is None:
                for folder in changed:  # the <ab> folder's own name is durable too
                    fsync_dir(folder)
            else:
                for folder in changed:
                    folders.setdefault(folder, []).append(self)

        self._try("link", link)
        self.abort()  # the temporary name goes either way

    def abort(self) -> None:
        if self.out is not None:
            with contextlib.suppress(OSError):
                self.out.close()
        with contextlib.suppress(OSError):
            self.temp.unlink()


class _RemoteSideWriter(_SideWriter):
    """A URL root's write (fsspec): the same steps, with the store's own durability —
    for an object store the completed PUT (see :mod:`medlake.ingest.landing_remote`)."""

    def __init__(self, store: LandingStore, side: Side, sha256: str) -> None:
        self.store, self.side = store, side
        self.error: OSError | None = None
        self.out = None
        self.linked_new = False
        self.write_ = side.remote.writer(sha256)  # type: ignore[union-attr]
        self._try("open", self.write_.open)

    def _try(self, step: str, action: object) -> None:
        if self.error is not None:
            return
        try:
            self.store.fault_point(self.side.name, step)
            action()  # type: ignore[operator]
        except Exception as exc:  # a driver's error is a failed side, like a disk's
            self.error = as_os_error(exc, self.side.label)
            self.abort()

    def write(self, block: bytes) -> None:
        self._try("write", lambda: self.write_.write(block))

    def sync(self) -> None:
        self._try("fsync", self.write_.commit)  # the PUT completes: durable on the store

    def link(self, sha256: str, folders: _Folders | None = None) -> None:
        def link() -> None:
            self.linked_new = True

        self._try("link", link)
        self.abort()

    def abort(self) -> None:
        self.write_.abort()


_Folders = dict[Path, list[_SideWriter]]  # a folder to fsync: the writers that linked in it


def _writer(store: LandingStore, side: Side, sha256: str) -> _SideWriter:
    if side.root is None:
        return _RemoteSideWriter(store, side, sha256)
    return _SideWriter(store, side)


def _store(
    blocks: Iterable[bytes], store: LandingStore, sides: list[Side], expected: str | None
) -> LandedFile:
    """Write ``blocks`` to every side in one pass, fsync, link; mark failed sides degraded.

    ``expected``: the content's SHA-256 if known before (else only local sides).
    """
    writers, sha256, size = _write_sides(blocks, store, sides, expected)
    if len(writers) > 1:
        # fsync both roots at once: the waits overlap (and on one disk share a journal commit).
        threads = [threading.Thread(target=w.finish, args=(sha256,)) for w in writers[1:]]
        for thread in threads:
            thread.start()
        writers[0].finish(sha256)
        for thread in threads:
            thread.join()
    else:
        for writer in writers:
            writer.finish(sha256)
    return _landed(store, writers, sha256, size)


def _write_sides(
    blocks: Iterable[bytes],
    store: LandingStore,
    sides: list[Side],
    expected: str | None,
    *,
    made: bool = False,
) -> tuple[list[_SideWriter], str, int]:
    """The content written to a temporary file on every side (not synced yet); ``made``:
    the caller made the plain landing folder already."""
    if store.mirror is None and not made:
        store.primary.mkdir(parents=True, exist_ok=True)  # a plain landing folder is created
    writers = [_writer(store, side, expected or "") for side in sides]
    digest = hashlib.sha256()
    size = 0
    for block in blocks:
        digest.update(block)
        size += len(block)
        for writer in writers:
            writer.write(block)
    sha256 = digest.hexdigest()
    if expected is not None and sha256 != expected:
        for writer in writers:
            writer.abort()
        raise InputError(f"content changed while it was being landed (expected {expected})")
    return writers, sha256, size


def _landed(store: LandingStore, writers: list[_SideWriter], sha256: str, size: int) -> LandedFile:
    """The landing's outcome once every writer finished: failed sides marked degraded."""
    failed = [w for w in writers if w.error is not None]
    landed = [w for w in writers if w.error is None]
    written = {w.side.name for w in writers}
    held_before = [s for s in store.healthy_sides() if s.name not in written]
    # Sides that already held it, and sides written now; primary first.
    landed_names = {w.side.name for w in landed} | {s.name for s in held_before}
    holding = [side for side in store.sides() if side.name in landed_names]
    if not holding:
        # No side holds it: the landing fails and no side is marked (nothing to fall back on).
        first = failed[0].error
        raise OSError(first.errno or 5, f"{failed[0].side.label}: {first.strerror or first}")
    if failed and store.on_failure == "refuse":
        first = failed[0].error
        raise OSError(first.errno or 5, f"{failed[0].side.label}: {first.strerror or first}")
    for writer in failed:
        store.mark_degraded(writer.side.name, writer.error)  # type: ignore[arg-type]
    path = _local_path(store, holding, sha256)
    already = bool(held_before) or not any(w.linked_new for w in landed)
    return LandedFile(
        sha256, path, size, already_present=already,
        degraded=tuple(w.side.name for w in failed),
    )  # fmt: skip


def leftover_temporaries(landing_dir: Path) -> list[Path]:
    """Temporary files a killed lander left behind (never landed content; safe to remove)."""
    if not landing_dir.is_dir():
        return []
    return sorted(landing_dir.glob(f"{TEMPORARY_PREFIX}*"))
