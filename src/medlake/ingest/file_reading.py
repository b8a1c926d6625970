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
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor

from medlake.errors import MedlakeError
from medlake.ingest.staging import ParsedChunk, SourceContext

WORKERS = 2
CHILDREN_FROM = 24  # files in a group from which they are read in children
_FILES_PER_TASK = 32
_GC_THRESHOLD = 50_000  # allocations between young collections in a child (700)
_PR_SET_PDEATHSIG = 1

Outcome = tuple[bool, object]  # (True, chunks) or (False, the reader's error)


def _read_files(format: str, contexts: Sequence[SourceContext]) -> list[Outcome]:
    from medlake.ingest.formats import reader_for

    outcomes: list[Outcome] = []
    for context in contexts:
        try:
            outcomes.append((True, list(reader_for(format).read(context))))
        except Exception as error:  # raised in the caller, for this file only
            try:
                pickle.dumps(error)
            except Exception:
                error = MedlakeError(f"{type(error).__name__}: {error}")
            outcomes.append((False, error))
    return outcomes


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


class GroupReading:
    """The chunks of a group's files, being read (``result(i)`` waits for file ``i``)."""

    def __init__(self, format: str, contexts: Sequence[SourceContext],
                 pool: ProcessPoolExecutor | None) -> None:  # fmt: skip
        self.format, self.contexts = format, list(contexts)
        self.futures: list[Future[list[Outcome]]] = []
        if pool is not None:
            for start in range(0, len(self.contexts), _FILES_PER_TASK):
                part = self.contexts[start : start + _FILES_PER_TASK]
                self.futures.append(pool.submit(_read_files, format, part))
        self._done: dict[int, list[Outcome]] = {}

    def result(self, index: int) -> list[ParsedChunk]:
        """File ``index``'s chunks; its reader's error is raised here."""
        task, offset = divmod(index, _FILES_PER_TASK)
        if not self.futures:
            ok, value = _read_files(self.format, [self.contexts[index]])[0]
        else:
            outcomes = self._done.get(task)
            if outcomes is None:
                try:
                    outcomes = self.futures[task].result()
                except MedlakeError:
                    raise
                except Exception:  # the hand-over failed (not the reader): read them here
                    start = task * _FILES_PER_TASK
                    part = self.contexts[start : start + _FILES_PER_TASK]
                    outcomes = _read_files(self.format, part)
                self._done = {task: outcomes}  # earlier tasks are not asked for again
            ok, value = outcomes[offset]
        if not ok:
            raise value  # type: ignore[misc]
        return value  # type: ignore[return-value]

    def cancel(self) -> None:
        for future in self.futures:
            future.cancel()


class FileReaders:
    """Reading processes for groups of small files, started on first use."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = WORKERS if workers is None else workers
        self.pool: ProcessPoolExecutor | None = None

    def read(self, format: str, contexts: Sequence[SourceContext]) -> GroupReading:
        """Start reading ``contexts`` (in children if there are enough of them)."""
        if len(contexts) < CHILDREN_FROM or self.workers < 1:
            return GroupReading(format, contexts, None)
        if self.pool is None:
            if "fork" not in multiprocessing.get_all_start_methods():
                return GroupReading(format, contexts, None)
            self.pool = ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context("fork"),
                initializer=_child_started,
                initargs=(os.getpid(),),
            )
        return GroupReading(format, contexts, self.pool)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None
