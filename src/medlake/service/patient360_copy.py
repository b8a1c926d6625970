"""Patient 360's serving copy: every person's timeline rows in one table, in person order.

The live read (:mod:`medlake.service.patient360`) runs one ``UNION ALL`` over a dozen
tables for each call; DuckDB binds, plans and scans a row group of each (about 4.7 ms of
CPU on the 1M lake, a third of a call). The serving copy holds exactly the rows that
statement gives, for every person at once (:func:`~medlake.service.patient360_sql.
copy_statement`: all domains, current source records, source patients, omics samples,
note text, and the person's own row), sorted by person, so a call reads one table with
one range. The rows go through the same Python as the live path's (concept names,
provenance, sorting, note text left out for roles that may not see it), so the answer
is the same by construction; only where the rows come from differs.

**When the copy is used.** Only while it is known to be current. It is built (or
verified) at data version V of its source tables (:meth:`Engine.data_version`: the
in-process write counters every write through :mod:`medlake.engine` moves after it
commits; while ``medlake serve`` holds the lake no other process can write it), and a
call uses it only while the version is still V. When a write moves the version (a
Bundle POSTed, an upload ingested, an EMPI merge, a delete, the person-order rewrite),
calls go back to the live path at once, and the serving thread rebuilds the copy once
the version has stood still for :data:`DEBOUNCE_S` (one build at a time, in the
background; requests never wait for it). A rebuild is whole: which persons a write
touched is not known exactly (a merge moves rows between persons, a rewrite moves row
ids), and a partial refresh that might miss one would serve a wrong timeline.

**When it is kept.** In ``medlake serve``, from the first patient 360 call on (the lake
answers that call): a server used only for cohort counts never pays for the copy, and
its build (77 s of both cores at 1M persons) does not meet a fresh server's first
counts, whose cold p95 it nearly doubled.

**Across restarts.** The in-process version starts afresh with each process, so a copy
left by an earlier server is not trusted as it is: at start the serving thread computes,
in DuckDB, a fingerprint of what the copy statement gives on the lake now (row count,
XOR and sum of the 64-bit hash of every row, row ids included) and compares it with the
one stored with the copy when it was built; until they match (and the version has not
moved meanwhile) the live path serves. Hashing the statement's output rather than whole
tables checks exactly what the copy depends on (a column the timeline does not show may
change without a rebuild) and costs one scan, no sort, no write: far less than a
rebuild. A persistent version mark written by every writer would be cheaper still, but
it would take a change to every write path of the engine and a schema migration.

**Where it lives.** Its own DuckDB file, ``cache/patient360-timeline.duckdb`` under the
workspace, attached to the lake's DuckDB instance only while serving (the engine's
:class:`~medlake.engine.capabilities.SupportsSideDatabases`). It is derived data: not in
the lake's schema, left out of backups, ignored by the ransomware watch, and safe to
delete at any time (when the server is stopped; the next start builds it again). Other
engines (Spark) have no side databases: they always serve the live path.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlglot.expressions as sge

from medlake.config import SERVING_CACHE, Workspace
from medlake.engine import Engine
from medlake.engine.capabilities import SupportsSideDatabases
from medlake.engine.prepared import PreparedQuery
from medlake.service.lake_pool import pooled_lake
from medlake.service.patient360_sql import (
    CONCEPT,
    DOMAIN,
    DOMAINS,
    END,
    OMICS,
    ORDER,
    PERSON,
    ROW,
    SOURCE_RECORD,
    SOURCE_VALUE,
    SOURCES,
    START,
    TABLE,
    VISIT,
    copy_statement,
)
from medlake.service.serving_threads import around_lifespan

log = logging.getLogger(__name__)

#: The copy's file, relative to the workspace.
COPY_FILE = Path(SERVING_CACHE) / "patient360-timeline.duckdb"
#: The copy's catalog name while attached.
ALIAS = "medlake_patient360_copy"
#: The tables the copy is made of (``concept`` is not: names are looked up live).
SOURCE_TABLES = (*(d.table for d in DOMAINS), SOURCE_RECORD, SOURCES, OMICS, "person")
#: Seconds the data version must stand still before a rebuild starts (a burst of
#: Bundles POSTed rebuilds once, after it).
DEBOUNCE_S = 2.0
#: After a build, the thread waits this many times as long as it took before the next,
#: so rebuilding takes at most a quarter of the time on a lake written all the time.
IDLE_SHARE = 3.0
#: How often the serving thread looks at the data version when no call told it.
POLL_S = 5.0
#: Seconds before a build that failed is tried again.
RETRY_S = 60.0
#: Rows per build statement (about): each sorts only its own rows, so memory stays
#: bounded (100,000 persons of the 1M lake, 10.7M rows, ran out of a 4 GB limit), and on
#: a lake in person order each reads only its persons' row groups. On a lake not in
#: person order each statement scans the tables whole (``[layout]`` keeps the order).
CHUNK_ROWS = 2_000_000
#: Bumped when what the copy holds changes in a way its statement text does not show.
FORMAT = 1

_TIMELINE, _NEXT, _META = "timeline", "timeline_next", "meta"


def _table(name: str) -> sge.Table:
    return sge.table_(name, db="main", catalog=ALIAS)


@dataclass
class _Current:
    version: Hashable  # the data version of SOURCE_TABLES the copy equals the lake at
    read: PreparedQuery  # the person's rows
    slots: dict[int, dict[str, str]]  # per _domain: shared column -> statement column


@dataclass
class CopyStatus:
    """What the serving thread did (for tests, logs and the benchmark)."""

    builds: int = 0
    verified: int = 0
    served: int = 0  # calls answered from the copy
    last_build_s: float | None = None
    rows: int | None = None
    errors: list[str] = field(default_factory=list)


class ServingCopy:
    """The copy of one workspace's lake, and the daemon thread that keeps it current."""

    def __init__(self, workspace: Workspace, *, debounce_s: float = DEBOUNCE_S,
                 poll_s: float = POLL_S, on_first_call: bool = False) -> None:  # fmt: skip
        self.workspace = workspace
        self.path = workspace.root / COPY_FILE
        self.debounce_s = debounce_s
        self.poll_s = poll_s
        self.status = CopyStatus()
        self._current: _Current | None = None
        self._wake = threading.Event()
        # Set by the first call when the copy is kept only once patient 360 is used.
        self._wanted = threading.Event()
        if not on_first_call:
            self._wanted.set()
        self._hurry = threading.Event()
        self._built_at = 0.0  # time.monotonic() when the last build ended
        self._attempt_s = 0.0  # how long it took (given up or not)
        self.stopping = threading.Event()
        self.ready = threading.Event()  # set once the first verify/build round ended
        self._thread = threading.Thread(target=self._run, name="medlake-p360-copy",
                                        daemon=True)  # fmt: skip

    # ------------------------------------------------------------------ serving side

    def rows(self, engine: Engine, pid: int, with_text: bool) -> list[dict[str, Any]] | None:
        """The person's rows from the copy, or None when it is not known to be current
        (the caller reads the lake)."""
        current = self._current
        if current is None:
            self._wanted.set()
            return None
        if engine.data_version(SOURCE_TABLES) != current.version:
            self._current = None
            self._wake.set()
            return None
        try:
            stored = engine.run_prepared_rows(current.read, [pid])
        except Exception:  # the copy is only a faster path: the lake still answers
            log.exception("patient 360 serving copy: read failed; rebuilding it")
            self._current = None
            self._wake.set()
            return None
        # Still current after the read (a write may have committed meanwhile): the rows
        # are then those of a moment when the copy equalled the lake.
        if self._current is not current:
            return None
        self.status.served += 1  # unlocked: a statistic, not a decision
        # Stored in this order; sorted here rather than by ORDER BY (1.7 ms in DuckDB).
        stored.sort(key=lambda row: (row[DOMAIN], row[ORDER]))
        return [_unslotted(row, current.slots, with_text) for row in stored]

    @property
    def current(self) -> bool:
        """Whether calls are answered from the copy now."""
        return self._current is not None

    def refresh(self) -> None:
        """Rebuild now if stale, without waiting for writes to pause (tests, tools)."""
        self._hurry.set()
        self._wake.set()

    # ------------------------------------------------------------------ thread

    def start(self) -> ServingCopy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self._wanted.set()
        self._wake.set()
        self._hurry.set()
        self._thread.join(timeout=120)

    def _run(self) -> None:
        while not self._wanted.wait(self.poll_s):
            if self.stopping.is_set():
                return
        first = True
        while not self.stopping.is_set():
            try:
                self._round(first)
            except Exception as exc:  # the serving copy must never take the server down
                # One line: the error's statement is the copy statement, pages long.
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                log.warning("patient 360 serving copy: build failed (%s); the lake serves, "
                            "tried again in %.0f s", reason, RETRY_S)  # fmt: skip
                self.status.errors.append(reason)
                self.stopping.wait(RETRY_S)
            first = False
            self.ready.set()
            while not self.stopping.is_set():
                self._wake.wait(self.poll_s)
                self._wake.clear()
                if self._current is None or self._stale():
                    break
            self._settle()

    def _stale(self) -> bool:
        current = self._current
        with pooled_lake(self.workspace) as engine:
            return current is None or engine.data_version(SOURCE_TABLES) != current.version

    def _settle(self) -> None:
        """Wait until the data version has stood still for ``debounce_s`` (or as long as
        the last build took, if longer), and at least :data:`IDLE_SHARE` times the last
        build's time has passed since it ended: on a busy feed the copy is not rebuilt
        all the time, at the cost of the calls it would have served."""
        took = self._attempt_s
        quiet = max(self.debounce_s, took)
        earliest = self._built_at + IDLE_SHARE * took
        with pooled_lake(self.workspace) as engine:
            before = engine.data_version(SOURCE_TABLES)
        while not self._hurry.wait(quiet):
            with pooled_lake(self.workspace) as engine:
                now = engine.data_version(SOURCE_TABLES)
            if now == before and time.monotonic() >= earliest:
                return
            before = now
        self._hurry.clear()

    def _round(self, first: bool) -> None:
        self._current = None
        with pooled_lake(self.workspace) as engine:
            if (
                not isinstance(engine, SupportsSideDatabases)
                or engine.data_version(SOURCE_TABLES) is None
            ):
                self.stopping.set()  # this engine cannot keep a copy: the lake serves
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            engine.attach_side(self.path, ALIAS)
            version = engine.data_version(SOURCE_TABLES)  # read before the lake
            statement, slots = _statement(engine)
            if first and self._verify(engine, statement):
                self.status.verified += 1
            else:
                started = time.perf_counter()
                try:
                    self._build(engine, statement, version)
                finally:  # a build given up or failed counts as well
                    self._attempt_s = time.perf_counter() - started
                    self._built_at = time.monotonic()
            if engine.data_version(SOURCE_TABLES) == version and not self.stopping.is_set():
                self._current = _Current(version, _read(statement), slots)

    def _verify(self, engine: Engine, statement: sge.Query) -> bool:
        """Whether the copy in the file was built from a lake that gives the rows the
        copy statement gives on this one."""
        meta = _table(_META)
        try:
            names = ("format", "statement", "rows", "xor", "sum")
            columns = [sge.column(n, quoted=True) for n in names]
            stored = engine.run_sql(sge.select(*columns).from_(meta))
        except Exception:
            return False  # no copy yet, or not one this code wrote
        if stored is None or stored.num_rows != 1:
            return False
        (row,) = stored.to_pylist()
        if row["format"] != FORMAT or row["statement"] != _digest(statement):
            return False
        started = time.perf_counter()
        live = _fingerprint(engine, statement, statement)
        log.info("patient 360 serving copy: lake fingerprint in %.1f s",
                 time.perf_counter() - started)  # fmt: skip
        return live == (int(row["rows"]), int(row["xor"]), int(row["sum"]))

    def _build(self, engine: Engine, statement: sge.Query, version: Hashable) -> None:
        """Build the copy at ``version``; given up as soon as a write moves it."""
        assert isinstance(engine, SupportsSideDatabases)
        started = time.perf_counter()
        next_, timeline, meta = _table(_NEXT), _table(_TIMELINE), _table(_META)
        engine.side_write(sge.Drop(this=next_, kind="TABLE", exists=True))
        bounds = _bounds(engine)
        for number, (low, high) in enumerate(zip([None, *bounds], [*bounds, None], strict=True)):
            if self.stopping.is_set() or engine.data_version(SOURCE_TABLES) != version:
                return
            chunk = (
                sge.select(sge.Star())
                .from_(copy_statement(*_schemas(engine), low=low, high=high)[0].subquery())
                .order_by(PERSON, DOMAIN, ORDER)
            )
            if number == 0:
                engine.side_write(sge.Create(this=next_, kind="TABLE", expression=chunk))
            else:
                engine.side_write(sge.insert(chunk, next_))
        rows, xor, total = _fingerprint(engine, sge.select(sge.Star()).from_(next_), statement)
        engine.side_write(sge.Drop(this=meta, kind="TABLE", exists=True))
        engine.side_write(sge.Drop(this=timeline, kind="TABLE", exists=True))
        rename = sge.AlterRename(this=sge.table_(_TIMELINE))
        engine.side_write(sge.Alter(this=next_, kind="TABLE", actions=[rename]))
        seconds = time.perf_counter() - started
        values = sge.select(
            sge.convert(FORMAT).as_("format"), sge.convert(_digest(statement)).as_("statement"),
            sge.cast(sge.convert(rows), "BIGINT").as_("rows"),
            sge.convert(str(xor)).as_("xor"),  # text: a UBIGINT and a HUGEINT
            sge.convert(str(total)).as_("sum"),
            sge.cast(sge.convert(dt.datetime.now(dt.UTC).isoformat()), "VARCHAR").as_("built_at"),
            sge.convert(round(seconds, 3)).as_("build_seconds"),
        )  # fmt: skip
        engine.side_write(sge.Create(this=meta, kind="TABLE", expression=values))
        self.status.builds += 1
        self.status.last_build_s = seconds
        self.status.rows = rows
        log.info("patient 360 serving copy: %d rows built in %.1f s", rows, seconds)


def _schemas(engine: Engine) -> tuple[dict[str, Any], Any]:
    tables = (*(d.table for d in DOMAINS), SOURCES, OMICS, "person")
    schemas = {table: engine.table(table).schema() for table in tables}
    return schemas, engine.ibis.compiler.type_mapper.from_ibis  # type: ignore[attr-defined]


def _statement(engine: Engine) -> tuple[sge.Query, dict[int, dict[str, str]]]:
    return copy_statement(*_schemas(engine), low=None, high=None)


def _digest(statement: sge.Query) -> str:
    return hashlib.sha256(statement.sql(dialect="duckdb").encode()).hexdigest()


def _bounds(engine: Engine) -> list[int]:
    """Person ids that start each build chunk after the first: chunks of about
    :data:`CHUNK_ROWS` rows, judged from the tables' row counts per person."""
    persons = engine.count("person")
    rows = sum(engine.count(table) for table in SOURCE_TABLES)
    step = max(1_000, CHUNK_ROWS * persons // max(rows, 1))
    result = engine.run_sql(
        "SELECT person_id FROM (SELECT person_id, row_number() OVER (ORDER BY person_id) AS n"
        f" FROM person) WHERE n % {int(step)} = 1 AND n > 1 ORDER BY person_id"
    )
    return [] if result is None else [int(v) for v in result.column(0).to_pylist()]


def _fingerprint(engine: Engine, query: sge.Query, statement: sge.Query) -> tuple[int, int, int]:
    """Rows, XOR and sum of the 64-bit hash of each row of ``query`` (whose columns are
    the copy ``statement``'s), computed in the engine: one scan."""
    names = [s.alias_or_name for s in statement.selects]
    hashed = sge.select(
        sge.Anonymous(this="hash", expressions=[sge.column(n, quoted=True) for n in names]).as_("h")
    ).from_(query.subquery("rows"))
    total = sge.select(
        sge.Count(this=sge.Star()).as_("rows"),
        sge.Anonymous(this="bit_xor", expressions=[sge.column("h")]).as_("xor"),
        sge.Sum(this=sge.cast(sge.column("h"), "HUGEINT")).as_("sum"),
    ).from_(hashed.subquery("hashed"))
    result = engine.run_sql(total)
    assert result is not None
    (row,) = result.to_pylist()
    return int(row["rows"]), int(row["xor"] or 0), int(row["sum"] or 0)


def _read(statement: sge.Query) -> PreparedQuery:
    names = [s.alias_or_name for s in statement.selects if s.alias_or_name != PERSON]
    return PreparedQuery(
        sge.select(*[sge.column(n, quoted=True) for n in names])
        .from_(_table(_TIMELINE))
        .where(sge.column(PERSON).eq(sge.Placeholder()))
    )


#: The columns every row of the copy has under the items statement's own names.
_OWN = (DOMAIN, ROW, TABLE, START, END, CONCEPT, SOURCE_VALUE, VISIT)
_NOTE_TEXT = "note__note_text"


def _unslotted(
    row: dict[str, Any], slots: dict[int, dict[str, str]], with_text: bool
) -> dict[str, Any]:
    """A stored row as the items statement names its columns (a branch's own ones;
    the others it would give as NULL, which the timeline reads as absent)."""
    out = {name: row[name] for name in _OWN}
    for slot, name in slots.get(row[DOMAIN], {}).items():
        if with_text or name != _NOTE_TEXT:
            out[name] = row[slot]
    return out


_copies: dict[Path, ServingCopy] = {}
_copies_lock = threading.Lock()


def serving_copy_of(workspace: Workspace) -> ServingCopy | None:
    """The serving copy kept for this workspace by a running server, if any."""
    with _copies_lock:
        return _copies.get(workspace.root)


@contextlib.contextmanager
def keeping_serving_copy(workspace: Workspace, **options: Any) -> Iterator[ServingCopy]:
    """Keep the serving copy current while the block runs (inside ``lake_pool.serving``,
    whose pool lends the engines)."""
    copy = ServingCopy(workspace, **options)
    with _copies_lock:
        _copies[workspace.root] = copy
    copy.start()
    try:
        yield copy
    finally:
        with _copies_lock:
            if _copies.get(workspace.root) is copy:
                del _copies[workspace.root]
        copy.stop()
        with contextlib.suppress(Exception), pooled_lake(workspace) as engine:
            if isinstance(engine, SupportsSideDatabases):
                engine.detach_side(ALIAS)


def with_serving_copy(lifespan: Callable[[Any], Any], workspace: Workspace) -> Any:
    """Wrap an ASGI lifespan so the serving copy is kept while the server runs
    (``[patient360] serving_copy``)."""
    if not workspace.settings.patient360.serving_copy:
        return lifespan

    def start() -> contextlib.ExitStack:
        stack = contextlib.ExitStack()
        # Kept from the first patient 360 call on: a server used only for cohort counts
        # never pays for it, and the build (77 s of both cores at 1M persons) does not
        # meet a fresh server's first counts (their cold p95 1.0 -> 1.9 s at 1M).
        stack.enter_context(keeping_serving_copy(workspace, on_first_call=True))
        return stack

    class _Running:
        def __init__(self) -> None:
            self.stack = start()

        def stop(self) -> None:
            self.stack.close()

    return around_lifespan(lifespan, _Running, state_name="patient360_copy")


__all__ = ["COPY_FILE", "SOURCE_TABLES", "ServingCopy", "keeping_serving_copy",
           "serving_copy_of", "with_serving_copy"]  # fmt: skip
