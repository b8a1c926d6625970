"""The audit journal: audited reads made durable in an fsync'd file, moved into the lake later.

Every patient-level read appends an event, and a DuckDB transaction for it (an INSERT,
the head's compare-and-set, a commit with its WAL fsync) costs about 2.8 ms of CPU per
group of events: a fifth of a patient 360 call. While ``medlake serve`` holds the lake,
events appended outside a caller's transaction go instead to an append-only journal
beside the lake (``<lake file>.audit-journal/journal-<n>.jsonl``): chained from the
current head exactly as in the table (same ``event_id``, ``prev_hash`` and
``event_hash``), one JSON line each, written with one ``write`` and one ``fdatasync``
per group of concurrent appends (group commit, :mod:`medlake.audit.group_commit`). A
call returns only after that fsync, so an acknowledged event is on disk before the data
it records are sent. The CPU cost is a canonical JSON text and a SHA-256 per event.

A background mover copies the journal's events into ``audit_event`` and moves
``audit_head`` in one transaction per round (every :data:`MOVE_EVERY_S`, or sooner when
:data:`MOVE_AT` events wait), then deletes the journal files whose events are all in the
table. The journal rotates to a new file (created and its folder fsync'd by the mover,
outside the appenders' lock) at each round, so a move never competes with appends for
a file and deleting is whole files.

One chain, wherever the events are:

* Only the process that holds the lake writes the journal: DuckDB lets one process
  open the lake file, ``serve`` holds it while serving, and the journal folder's
  ``lock`` file is also ``flock``-ed while live (a ``flock`` lock, unlike DuckDB's POSIX
  lock, survives the closing of other descriptors of the file). Inside the process,
  appends on every engine of the lake go to the live journal.
* An append inside a caller's open transaction (an ingest, a merge: the event must
  commit or roll back with the work) takes the journal's locks until that transaction
  ends (:meth:`~medlake.engine.Engine.after_transaction`) and writes the journal's
  unmoved events and its own into the table in the caller's transaction; if that rolls
  back, the journal still holds its events. Before, such a caller met the grouped
  appends as write conflicts on ``audit_head``; now it waits for the lock instead.
* Readers see every event: :func:`medlake.audit.read_events` adds the live journal's
  unmoved events, and ``chain_head`` is the journal's head; the audit search, verify,
  anchoring and backups move the journal into the table first (:func:`drain`), and so
  does the server at stop.
* Crash recovery (:func:`recover`): opening the lake (``service.workspace.open_lake``)
  and any direct append move the events of journal files left by a process that died.
  Lines are taken in file order: those whose ``event_id`` the table head already covers
  were moved before the crash and are skipped (no duplicate); the rest are inserted
  exactly as written, numbered by their position, with the head's compare-and-set, and
  the files are deleted only after that commits (kill -9 at any point loses nothing and
  duplicates nothing). A last line without its newline is a write that never finished
  its fsync (never acknowledged) and is dropped. Anything altered in a file is thereby
  carried into the table, where ``medlake audit verify`` names it: a changed line is
  *edited*, a removed one closes the ids up (a broken link), two swapped lines take each
  other's positions (*reordered*), an unreadable line leaves a gap (*deleted*; the file
  is kept as ``*.damaged`` for inspection).

Written here rather than taken from a library: a write-ahead log of JSON lines is a few
dozen lines over :func:`os.write`/:func:`os.fdatasync`, and the chain, the group commit
and the head's compare-and-set it must agree with are already this package's.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import threading
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from pathlib import Path

from medlake.audit import chain
from medlake.audit.chain import AuditEvent
from medlake.durable import fsync_dir
from medlake.engine import Engine, SupportsTransactions
from medlake.errors import EngineError
from medlake.log import get_logger

logger = get_logger(__name__)

#: The journal folder's name is the lake file's name plus this.
JOURNAL_SUFFIX = ".audit-journal"
#: Seconds between the mover's rounds.
MOVE_EVERY_S = 0.5
#: Unmoved events that wake the mover before its round is due.
MOVE_AT = 512
_PREFIX, _EXT = "journal-", ".jsonl"
_LOCK_FILE = "lock"
# One recovery at a time in this process (other processes are kept out by DuckDB's lock).
_RECOVERY = threading.RLock()


def journal_dir(engine: Engine) -> Path | None:
    """The journal folder of the engine's lake; None for a lake without a file, or an
    engine without transactions (Spark: a single writer appends to the table)."""
    path = str(getattr(engine, "path", "") or "")
    if not path or path == ":memory:" or not isinstance(engine, SupportsTransactions):
        return None
    return Path(os.path.realpath(path) + JOURNAL_SUFFIX)


def _segments(directory: Path) -> list[Path]:
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return sorted(directory / n for n in names if n.startswith(_PREFIX) and n.endswith(_EXT))


def has_unmoved(engine: Engine) -> bool:
    """Whether journal files wait to be moved into this lake (one ``listdir``)."""
    directory = journal_dir(engine)
    return directory is not None and bool(_segments(directory))


def _line(event: AuditEvent) -> str:
    fields = dict(event.__dict__)
    fields["occurred_at"] = chain._timestamp(event.occurred_at)
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n"


def _parse(text: str) -> AuditEvent:
    raw = json.loads(text)
    raw["occurred_at"] = dt.datetime.fromisoformat(raw["occurred_at"])
    return AuditEvent(**{name: raw[name] for name in AuditEvent.__dataclass_fields__})


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


# ------------------------------------------------------------------ recovery


def read_journal(paths: list[Path]) -> tuple[list[AuditEvent | None], list[Path]]:
    """The events of journal files in order (None for an unreadable line) and the files
    holding unreadable lines. A last line without its newline (an append killed before
    its fsync returned, never acknowledged) is left out."""
    events: list[AuditEvent | None] = []
    damaged: list[Path] = []
    for index, path in enumerate(paths):
        text = path.read_text(encoding="utf-8", errors="replace")
        lines = text.split("\n")
        tail = lines.pop()  # "" when the file ends with a newline
        if tail and index < len(paths) - 1:
            lines.append(tail)  # only the newest file can hold an unfinished write
        for line in lines:
            try:
                events.append(_parse(line))
            except (ValueError, KeyError, TypeError):
                events.append(None)
                if path not in damaged:
                    damaged.append(path)
    return events, damaged


def _unmoved(events: list[AuditEvent | None], head_id: int) -> list[AuditEvent | None]:
    """``events`` after those the table already holds, numbered by position from
    ``head_id + 1`` (a line's own ``event_id`` only says where moving stopped)."""
    start = 0
    while start < len(events):
        event = events[start]
        if event is not None and event.event_id > head_id:
            break
        start += 1
    out: list[AuditEvent | None] = []
    for offset, event in enumerate(events[start:], start=1):
        if event is not None and event.event_id != head_id + offset:
            event = AuditEvent(**{**event.__dict__, "event_id": head_id + offset})
        out.append(event)
    return out


def recover(engine: Engine) -> int:
    """Move the events of journal files a dead process left into the table; return how
    many. Nothing to do (one ``listdir``) when there are none or this process's journal
    is live (it moves its own)."""
    directory = journal_dir(engine)
    if directory is None or not _segments(directory) or chain.live_journal(engine) is not None:
        return 0
    with _RECOVERY:  # (a journal goes live under it too)
        if chain.live_journal(engine) is not None:
            return 0
        with _flocked(directory, wait=False):
            return _recover(engine, directory)


def _recover(engine: Engine, directory: Path) -> int:
    paths = _segments(directory)
    if not paths:
        return 0
    read, damaged = read_journal(paths)
    with engine.writes_while_frozen(), engine.transaction(tables=chain.TRAIL_TABLES):
        head = chain.claim_head(engine)
        events = [event for event in _unmoved(read, head[0]) if event is not None]
        if events:
            chain.store_events(engine, events, head)
        moved = len(events)
        engine.after_transaction(lambda ok: _delete(directory, paths, damaged) if ok else None)
    if moved:
        logger.warning("audit: moved %d event(s) left in %s into the trail", moved, directory)
    return moved


def _delete(directory: Path, paths: list[Path], damaged: list[Path]) -> None:
    for path in paths:
        if path in damaged:
            logger.error("audit journal %s has unreadable lines: kept as .damaged", path)
            path.replace(path.with_name(path.name + ".damaged"))
        else:
            path.unlink(missing_ok=True)
    fsync_dir(directory)


@contextmanager
def _flocked(directory: Path, *, wait: bool) -> Iterator[int]:
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / _LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError as exc:
            raise EngineError(
                f"{directory} is held by another process writing the audit journal"
            ) from exc
        yield fd
    finally:
        os.close(fd)  # drops the flock


# ------------------------------------------------------------------ the live journal


class _Segment:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o644)
        self.last_id = 0  # 0 while empty

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class LiveJournal:
    """The journal of one lake while this process serves it (see the module docstring).

    ``engine`` is a connection of the mover's own, used only under the move lock.
    """

    def __init__(self, engine: Engine, directory: Path) -> None:
        self.engine = engine
        self.directory = directory
        self.key: Hashable = chain.lake_key(engine)
        self._append_lock = threading.Lock()  # order of appends; segment swaps
        self._move_lock = threading.Lock()  # who writes the table: mover or a caller's tx
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._direct_owner: int | None = None
        self._direct_events: list[AuditEvent] = []
        self._sealed: list[_Segment] = []
        self._lock_fd = -1
        self._seq = 0
        self.closed = False
        self.pending: list[AuditEvent] = []  # in the journal, not yet in the table
        self.head = self.table_head = (0, chain.ZERO_HASH)
        self._current: _Segment | None = None
        self._mover: threading.Thread | None = None

    # lifecycle ----------------------------------------------------------------

    def start(self) -> LiveJournal:
        """Recover what a dead process left, take the lock, start the mover, go live."""
        # No direct append nor recovery in this process runs until the journal is live.
        with chain.direct_appends_held(), _RECOVERY:
            recover(self.engine)
            self.directory.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(self.directory / _LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                os.close(self._lock_fd)
                raise EngineError(f"{self.directory} is held by another process") from exc
            engine = self.engine
            with engine.writes_while_frozen(), engine.transaction(tables=chain.TRAIL_TABLES):
                self.head = self.table_head = chain.claim_head(engine)
            self._current = self._new_segment()
            chain.go_live(self)
        self._mover = threading.Thread(target=self._run, name="medlake-audit-mover", daemon=True)
        self._mover.start()
        return self

    def close(self) -> None:
        """Stop taking appends, move everything into the table, delete the files."""
        self._stop.set()
        self._wake.set()
        if self._mover is not None:
            self._mover.join()
        # Appends wait meanwhile; once it is offline they go to the table, which then
        # holds every journal event (or, if the last move failed, recovery moves them).
        with chain.direct_appends_held(), self._move_lock, self._append_lock:
            self.closed = True
            try:
                if self.pending:
                    self._move(self.pending)
                    self.pending.clear()
                for segment in [*self._sealed, self._current]:  # every event is moved
                    if segment is not None:
                        segment.close()
                        segment.path.unlink(missing_ok=True)
            finally:
                for segment in [*self._sealed, self._current]:
                    if segment is not None:
                        segment.close()
                self._sealed, self._current = [], None
                os.close(self._lock_fd)
                chain.go_offline(self)

    def _new_segment(self) -> _Segment:
        self._seq += 1
        while True:
            path = self.directory / f"{_PREFIX}{os.getpid()}-{self._seq:09d}{_EXT}"
            try:
                segment = _Segment(path)
                break
            except FileExistsError:
                self._seq += 1
        fsync_dir(self.directory)  # the file's name is durable before events land in it
        return segment

    # appends ---------------------------------------------------------------

    def append(self, drafts: list[AuditEvent]) -> list[int] | None:
        """Chain ``drafts`` after the head, write and fsync them; their ids, or None if
        the journal has closed meanwhile (the caller appends to the table instead)."""
        with self._append_lock:
            if self.closed:
                return None
            segment = self._current
            assert segment is not None
            events = chain.chained(drafts, *self.head)
            data = "".join(_line(event) for event in events).encode("utf-8")
            size = os.lseek(segment.fd, 0, os.SEEK_END)
            try:
                _write_all(segment.fd, data)
                os.fdatasync(segment.fd)
            except OSError as exc:
                # Leave no partial line behind a failed append (it was not acknowledged).
                try:
                    os.ftruncate(segment.fd, size)
                except OSError:
                    logger.exception("audit journal %s: a failed append not cut", segment.path)
                raise EngineError(f"audit journal {segment.path}: {exc}") from exc
            last = events[-1]
            self.head = (last.event_id, last.event_hash)
            segment.last_id = last.event_id
            self.pending.extend(events)
            waiting = len(self.pending)
        if waiting >= MOVE_AT:
            self._wake.set()
        return [event.event_id for event in events]

    def unmoved(self) -> list[AuditEvent]:
        """The events not yet in the table, in order (a copy)."""
        with self._append_lock:
            return list(self.pending)

    # the caller's transaction ----------------------------------------------

    def held_by_this_thread(self) -> bool:
        """Whether this thread's open transaction holds the journal (an append outside
        it would wait for itself)."""
        return self._direct_owner == threading.get_ident()

    def write_in_transaction(self, engine: Engine, drafts: list[AuditEvent]) -> list[int]:
        """Append ``drafts`` in ``engine``'s open transaction, after the journal's unmoved
        events (written there too); the journal waits until that transaction ends."""
        me = threading.get_ident()
        if self._direct_owner != me:
            self._move_lock.acquire()
            self._append_lock.acquire()
            self._direct_owner, self._direct_events = me, []
            engine.after_transaction(self._end_direct)
        stored = chain.claim_head(engine)
        carried = [event for event in self.pending if event.event_id > stored[0]]
        after = self._direct_events[-1] if self._direct_events else None
        base = (after.event_id, after.event_hash) if after else self.head
        events = chain.chained(drafts, *base)
        chain.store_events(engine, [*carried, *events], stored)
        self._direct_events.extend(events)
        return [event.event_id for event in events]

    def _end_direct(self, committed: bool) -> None:
        try:
            if committed and self._direct_events:
                last = self._direct_events[-1]
                self.head = self.table_head = (last.event_id, last.event_hash)
                self.pending.clear()  # all in the table now; their files go next round
        finally:
            self._direct_owner, self._direct_events = None, []
            self._append_lock.release()
            self._move_lock.release()

    # moving ------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(MOVE_EVERY_S)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.flush()
            except Exception:  # the events stay in the journal; the next round retries
                logger.exception("audit journal: moving events into the trail failed")

    def flush(self) -> int:
        """Move every unmoved event into the table now; delete the files moved; return how
        many events moved."""
        if not self.pending:
            return 0  # (a read of the list's length: no lock needed to see it empty)
        with self._move_lock:
            if self.closed:
                return 0
            fresh = None
            if self._current is not None and self._current.last_id:
                fresh = self._new_segment()  # created outside the appenders' lock
            with self._append_lock:
                batch = list(self.pending)
                if fresh is not None and self._current is not None:
                    self._sealed.append(self._current)
                    self._current = fresh
            if batch:
                self._move(batch)
                with self._append_lock:
                    del self.pending[: len(batch)]
            kept = []
            for segment in self._sealed:
                if segment.last_id <= self.table_head[0]:
                    segment.close()
                    segment.path.unlink(missing_ok=True)
                else:
                    kept.append(segment)
            self._sealed = kept
            return len(batch)

    def _move(self, batch: list[AuditEvent]) -> None:
        engine = self.engine
        with engine.writes_while_frozen(), engine.transaction(tables=chain.TRAIL_TABLES):
            stored = chain.claim_head(engine)
            todo = [event for event in batch if event.event_id > stored[0]]
            if todo:
                chain.store_events(engine, todo, stored)
        last = batch[-1]
        self.table_head = (last.event_id, last.event_hash)


def drain(engine: Engine) -> int:
    """Have every event of this lake's journal in the table: the live journal's, or a
    dead process's files. Returns how many events moved."""
    journal = chain.live_journal(engine)
    if journal is not None:
        if journal.held_by_this_thread():
            return 0  # this thread's open transaction carries the journal's events
        return journal.flush()  # type: ignore[no-any-return]
    return recover(engine)


@contextmanager
def live_journal(engine: Engine) -> Iterator[LiveJournal | None]:
    """Journal this lake's appends for the block (``engine`` becomes the mover's, and must
    stay open until the block ends); yields None for a lake without a journal folder."""
    directory = journal_dir(engine)
    if directory is None:
        yield None
        return
    with _RECOVERY:
        already = chain.live_journal(engine)
        if already is None:
            journal = LiveJournal(engine, directory).start()
    if already is not None:  # the lake served twice in one process: one journal
        yield already
        return
    try:
        yield journal
    finally:
        journal.close()


__all__ = [
    "JOURNAL_SUFFIX",
    "MOVE_AT",
    "MOVE_EVERY_S",
    "LiveJournal",
    "drain",
    "has_unmoved",
    "journal_dir",
    "live_journal",
    "read_journal",
    "recover",
]
