"""Many small files parsed in forked processes while the writer loads the files before.

A folder of day files (an LIS that exports one HL7 file a day) is thousands of inputs
of a few kilobytes each. :mod:`medlake.service.ingest_groups` writes them in groups;
this module parses a group's files in two forked children, so on two cores the
parsing (Python) runs beside the writing of the group before it instead of between
groups. Each child reads whole files with the format's own reader, in tasks of a few
dozen files, and sends back each file's chunks (or the error its reader raised) in
file order: the writer gets exactly what reading in this process gives.

The standard library's :class:`~concurrent.futures.ProcessPoolExecutor` does the
hand-over (chunks of a few KB pickle cheaply). The children are forked (Linux), so they
start with the readers imported and never touch the caller's DuckDB connection; each
asks the kernel to kill it when the caller dies (``PR_SET_PDEATHSIG``), so a kill -9 of
an ingest leaves no reading process behind. Few files, or a system without fork, are
read in this process when asked for.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import pickle
import signal
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from medlake.errors import MedlakeError
from medlake.ingest.staging import ParsedChunk, SourceContext

WORKERS = 2
CHILDREN_FROM = 24  # files in a group from which they are read in children
_FILES_PER_TASK = 32
_GC_THRESHOLD = 50_000  # allocations between young collections in a child (700)
_PR_SET_PDEATHSIG = 1

Outcome = tuple[bool, object]  # (True, chunks) or (False, the reader's error)


def reads_contents(format: str) -> bool:
    """Whether the format's reader reads files from their bytes (``read_many(contexts,
    contents)``): files can then be read while they are being landed."""
    from medlake.ingest.formats import reader_for

    try:
        reader = reader_for(format)
    except Exception:  # the error is reported when the files are read
        return False
    return bool(getattr(reader, "reads_contents", False))


def _read_files(
    format: str, contexts: Sequence[SourceContext], contents: Sequence[bytes | None] | None = None
) -> list[Outcome]:
    from medlake.ingest.formats import reader_for

    results: list[list[ParsedChunk] | Exception] = []
    try:
        reader = reader_for(format)
    except Exception as error:  # every file fails with it, as each read would
        results = [error] * len(contexts)
    else:
        read_many = getattr(reader, "read_many", None)  # many small files read at once
        if read_many is not None:
            results = read_many(contexts) if contents is None else read_many(contexts, contents)
        for context in contexts if read_many is None else ():
            try:
                results.append(list(reader.read(context)))
            except Exception as error:
                results.append(error)
    outcomes: list[Outcome] = []
    for result in results:
        if not isinstance(result, Exception):
            outcomes.append((True, result))
            continue
        error = result  # raised in the caller, for this file only
        try:
            pickle.dumps(error)
        except Exception:
            error = MedlakeError(f"{type(error).__name__}: {error}")
        outcomes.append((False, error))
    return outcomes


def _read_files_packed(
    format: str, contexts: Sequence[SourceContext], contents: Sequence[bytes | None] | None
) -> _Packed:
    """:func:`_read_files` in a child, its tables packed for the trip back."""
    return _pack(_read_files(format, contexts, contents))


@dataclass(frozen=True)
class _Slice:
    """Where a chunk's table lies in its task's packed tables."""

    group: int
    offset: int
    length: int


_Packed = tuple[list[Outcome], list[bytes]]


def _pack(outcomes: list[Outcome]) -> _Packed:
    """The outcomes with every table of their chunks replaced by a :class:`_Slice` of one
    table per schema, each sent as one Arrow IPC stream.

    Pickling a file's few small tables one by one cost more than reading the file
    (1,000 LIS day files: 1.6 CPU-s to pickle in the child, 1.3 to unpickle in the
    caller, 15 MB): every table carries its schema and buffers of its own.
    """
    groups: dict[bytes, tuple[int, list[pa.Table]]] = {}
    sizes: list[int] = []

    def packed(table: pa.Table) -> _Slice:
        key = table.schema.serialize().to_pybytes()
        group = groups.get(key)
        if group is None:
            group = groups[key] = (len(groups), [])
            sizes.append(0)
        index, tables = group
        tables.append(table)
        offset = sizes[index]
        sizes[index] += table.num_rows
        return _Slice(index, offset, table.num_rows)

    _replace_tables(outcomes, packed)
    streams: list[bytes] = []
    for _, tables in groups.values():
        whole = pa.concat_tables(tables).combine_chunks()
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, whole.schema) as writer:
            writer.write_table(whole)
        streams.append(sink.getvalue().to_pybytes())
    return outcomes, streams


def _unpack(packed: _Packed) -> list[Outcome]:
    """The outcomes as :func:`_read_files` gave them, each table a slice of its stream's."""
    outcomes, streams = packed
    wholes = [pa.ipc.open_stream(stream).read_all() for stream in streams]

    def table(part: _Slice) -> pa.Table:
        return wholes[part.group].slice(part.offset, part.length)

    _replace_tables(outcomes, table)
    return outcomes


def _replace_tables(outcomes: list[Outcome], replace: Callable[[Any], Any]) -> None:
    """Put ``replace(table)`` in place of every table of the read files' chunks."""
    for ok, value in outcomes:
        if ok:
            for chunk in value:  # type: ignore[attr-defined]
                chunk.tables = {n: [replace(t) for t in ts] for n, ts in chunk.tables.items()}
                chunk.patients = [replace(t) for t in chunk.patients]
                chunk.omics_samples = [replace(t) for t in chunk.omics_samples]


def _child_started(parent: int) -> None:
    """In a forked child: die with the parent; keep the inherited heap out of collection."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the pool's own shutdown ends it
        pass
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)
    gc.freeze()  # no traversal (and no copy-on-write) of the parent's objects
    gc.set_threshold(_GC_THRESHOLD, 20, 20)


Submit = Callable[[str, Sequence[SourceContext], Sequence[bytes | None] | None], "Future[_Packed]"]


class GroupReading:
    """The chunks of a group's files, being read (``result(i)`` waits for file ``i``).

    Files can be given as they come (:meth:`add`, then :meth:`complete`), with their
    bytes if the reader takes them (:func:`reads_contents`): a group being landed has its
    first files read while its later ones are landed. ``submit`` hands a task of files
    to the reading processes; without it they are read in this process.
    """

    def __init__(self, format: str, contexts: Sequence[SourceContext],
                 submit: Submit | None, *, complete: bool = True) -> None:  # fmt: skip
        self.format = format
        self.contexts: list[SourceContext] = []
        self.contents: list[bytes | None] = []
        self.submit = submit
        self.futures: list[Future[_Packed]] = []
        self._done: dict[int, list[Outcome]] = {}
        self.add(contexts)
        if complete:
            self.complete()

    def add(
        self, contexts: Sequence[SourceContext], contents: Sequence[bytes | None] | None = None
    ) -> None:
        """More files to read, after those given before (whole tasks start at once);
        ``contents``: their bytes, read instead of their paths."""
        self.contexts.extend(contexts)
        self.contents.extend(contents if contents is not None else [None] * len(contexts))
        self._submit(whole_tasks=True)

    def complete(self) -> None:
        """No more files: the last task, even a short one, starts too."""
        self._submit(whole_tasks=False)

    def _submit(self, whole_tasks: bool) -> None:
        if self.submit is None:
            return
        while True:
            start = len(self.futures) * _FILES_PER_TASK
            part = self.contexts[start : start + _FILES_PER_TASK]
            if not part or (whole_tasks and len(part) < _FILES_PER_TASK):
                return
            self.futures.append(self.submit(self.format, part, self._contents(start)))

    def _contents(self, start: int) -> list[bytes | None] | None:
        """The bytes of the task's files from ``start`` (None: every one read from its path)."""
        part = self.contents[start : start + _FILES_PER_TASK]
        return part if any(content is not None for content in part) else None

    def result(self, index: int) -> list[ParsedChunk]:
        """File ``index``'s chunks; its reader's error is raised here."""
        task, offset = divmod(index, _FILES_PER_TASK)
        if self.submit is None:
            content = self.contents[index]
            contents = None if content is None else [content]
            ok, value = _read_files(self.format, [self.contexts[index]], contents)[0]
        else:
            if task >= len(self.futures):
                self.complete()
            outcomes = self._done.get(task)
            if outcomes is None:
                try:
                    outcomes = _unpack(self.futures[task].result())
                except MedlakeError:
                    raise
                except Exception:  # the hand-over failed (not the reader): read them here
                    start = task * _FILES_PER_TASK
                    part = self.contexts[start : start + _FILES_PER_TASK]
                    outcomes = _read_files(self.format, part, self._contents(start))
                self._done = {task: outcomes}  # earlier tasks are not asked for again
            ok, value = outcomes[offset]
        if not ok:
            raise value  # type: ignore[misc]
        return value  # type: ignore[return-value]

    def cancel(self) -> None:
        for future in self.futures:
            future.cancel()


class FileReaders:
    """Reading processes for groups of small files, forked on the first task."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = WORKERS if workers is None else workers
        self.pool: ProcessPoolExecutor | None = None

    @property
    def started(self) -> bool:
        """Whether the reading processes run (forked already: a thread may hand them work)."""
        return self.pool is not None

    def read(self, format: str, contexts: Sequence[SourceContext]) -> GroupReading:
        """Start reading ``contexts`` (in children if there are enough of them)."""
        return GroupReading(format, contexts, self._submitter(len(contexts)))

    def stream(self, format: str, files: int) -> GroupReading:
        """A reading of up to ``files`` files given as they come (``add``, ``complete``),
        in children if there may be enough of them. The processes are forked on the first
        task, in the thread that adds it: a caller off the main thread starts a stream
        only once they run (:attr:`started`)."""
        return GroupReading(format, [], self._submitter(files), complete=False)

    def _submitter(self, files: int) -> Submit | None:
        if files < CHILDREN_FROM or self.workers < 1:
            return None
        if self.pool is None and "fork" not in multiprocessing.get_all_start_methods():
            return None
        return self._submit

    def _submit(
        self,
        format: str,
        contexts: Sequence[SourceContext],
        contents: Sequence[bytes | None] | None,
    ) -> Future[_Packed]:
        if self.pool is None:
            self.pool = ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context("fork"),
                initializer=_child_started,
                initargs=(os.getpid(),),
            )
        return self.pool.submit(_read_files_packed, format, contexts, contents)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None
