"""Read ahead: a reader parses the next chunks in a thread while the writer loads this one.

Parsing is mostly Python (it holds the GIL); loading is mostly DuckDB and Arrow (they
release it), so on two cores the two overlap. The queue holds at most ``depth`` chunks,
which bounds memory. A reader error is raised in the consumer, in order, after the
chunks read before it; when the consumer stops early (the writer failed), the thread is
told to stop and the reader's generator is closed in its own thread.
"""

from __future__ import annotations

import dataclasses
import gc
import mmap
import multiprocessing
import multiprocessing.context
import os
import pickle
import queue
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from multiprocessing.reduction import recvfds, sendfds
from typing import TypeVar

from medlake.errors import MedlakeError
from medlake.ingest.staging import ParsedChunk, SourceContext

T = TypeVar("T")

_DONE = object()
_POLL_SECONDS = 0.1
# Chunks of reading processes come back through shared memory (see below) where the
# system has memfd (Linux); elsewhere pickled through the queue.
_SHARED_MEMORY = hasattr(os, "memfd_create")
_GC_THRESHOLD = 50_000  # allocations between young collections in a reading child (700)


def prefetch(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Yield ``items`` as produced by a background thread, ``depth`` at most in flight."""
    buffer: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                buffer.put(item, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        iterator = iter(items)
        try:
            for item in iterator:
                if not put(item):
                    break
            else:
                put(_DONE)
        except BaseException as error:  # handed to the consumer, raised there
            put(error)
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="medlake-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item = buffer.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        thread.join()


# ---------------------------------------------------------------------- in a process
#
# A thread only overlaps a reader with the writer where the writer releases the GIL
# (DuckDB, Arrow); FHIR, HL7 and CSV readers are Python and so are parts of the writer,
# so on two cores the thread pipeline is mostly serial. For large files the reader runs
# in its own process instead: the same reader code, its chunks pickled back (Arrow tables
# pickle as buffers) through a queue of ``depth`` chunks, so the lake gets exactly the
# chunks, in the order, that reading in-process gives. The child is forked (Linux): it
# starts at once with the readers already imported, and does not run the caller's main
# module again as spawn and forkserver children do. It only parses (Python, orjson,
# Arrow) and never touches the caller's DuckDB connection or its threads.


def _process_context() -> multiprocessing.context.BaseContext:
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def _quiet_collector() -> None:
    """In a forked reading child: the parent's heap, inherited, is left out of garbage
    collection (no traversal, no copy-on-write of its pages), and collections are rarer.

    A reader allocates millions of short-lived dicts and row tuples and makes no
    reference cycles worth collecting early; the default thresholds cost it ~7 %.
    """
    gc.freeze()
    gc.set_threshold(_GC_THRESHOLD, 20, 20)


def _read_in_child(format: str, context: SourceContext, out: multiprocessing.Queue) -> None:
    from medlake.ingest.formats import reader_for

    _quiet_collector()
    try:
        for chunk in reader_for(format).read(context):
            out.put(chunk)
        out.put(_END)
    except BaseException as error:  # raised in the parent, after the chunks before it
        try:
            pickle.dumps(error)
        except Exception:
            error = MedlakeError(f"{type(error).__name__}: {error}")
        out.put(error)


_END = "__medlake_read_ahead_end__"


def prefetch_in_process(format: str, context: SourceContext, depth: int = 2) -> Iterator[object]:
    """The chunks of ``reader_for(format).read(context)``, read in a child process."""
    mp = _process_context()
    out: multiprocessing.Queue = mp.Queue(maxsize=depth)
    child = mp.Process(target=_read_in_child, args=(format, context, out),
                       name="medlake-read-ahead", daemon=True)  # fmt: skip
    child.start()
    finished = False
    try:
        while True:
            item = _next_from(out, child, context)
            if isinstance(item, str) and item == _END:
                finished = True
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        if finished:
            child.join(timeout=10)
        if child.is_alive():  # the consumer stopped early (the writer failed)
            child.terminate()
        child.join()
        out.close()


# ---------------------------------------------------------------------- in processes
#
# On two cores the FHIR reader (Python) is the longer side of a large file's pipeline.
# A reader that can say where its chunks lie (FhirReader.chunk_plan: byte ranges found by
# counting lines, no parsing) has them parsed by several children at once, each taking
# every n-th chunk; the chunks come back in file order, so the writer sees exactly what
# one reader would give.


#
# A chunk's Arrow buffers do not go through the queue's pipe (pickled into bytes, written
# 64 KiB at a time, read and unpickled: copies and system calls in both processes, ~1 ms
# per MB). The child writes them once into an anonymous shared-memory file (memfd) and
# passes its descriptor over a socket (SCM_RIGHTS); the parent maps it and unpickles the
# chunk around the mapped buffers without a copy. Nothing is named in the file system,
# so a process killed at any point leaves nothing behind: the kernel frees the memory
# with the last descriptor or mapping.

_ALIGN = 64  # Arrow's buffer alignment


@dataclasses.dataclass(frozen=True)
class _Shared:
    """A chunk whose buffers lie in the memfd sent just before it on the socket."""

    pickled: bytes
    spans: list[tuple[int, int]]  # (offset, length) of each out-of-band buffer
    size: int


def _share(item: object, sock: socket.socket) -> _Shared:
    buffers: list[pickle.PickleBuffer] = []
    pickled = pickle.dumps(item, protocol=5, buffer_callback=buffers.append)
    raws = [buffer.raw() for buffer in buffers]
    spans, size = [], 0
    for raw in raws:
        spans.append((size, raw.nbytes))
        size += -(-raw.nbytes // _ALIGN) * _ALIGN
    fd = os.memfd_create("medlake-chunk", os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, max(size, 1))
        for (offset, _), raw in zip(spans, raws, strict=True):
            written = 0
            while written < raw.nbytes:
                written += os.pwrite(fd, raw[written:], offset + written)
        sendfds(sock, [fd])
    finally:
        os.close(fd)
    return _Shared(pickled, spans, size)


def _unshare(item: _Shared, sock: socket.socket) -> object:
    (fd,) = recvfds(sock, 1)
    try:
        mapped = mmap.mmap(fd, max(item.size, 1), mmap.MAP_SHARED, mmap.PROT_READ)
    finally:
        os.close(fd)
    view = memoryview(mapped)
    return pickle.loads(item.pickled, buffers=[view[o : o + n] for o, n in item.spans])


def _read_ranges_in_child(format: str, context: SourceContext,
                          ranges: list[tuple[int, int, int]], out: multiprocessing.Queue,
                          parent: int, sock: socket.socket | None) -> None:  # fmt: skip
    from medlake.ingest.formats import reader_for

    _quiet_collector()
    try:
        reader = reader_for(format)
        for start, end, first_line in ranges:
            chunk = reader.read_range(context, start, end, first_line)  # type: ignore[attr-defined]
            _put(out, chunk if sock is None else _share(chunk, sock), parent)
        _put(out, _END, parent)
    except BaseException as error:  # raised in the parent, after the chunks before it
        try:
            pickle.dumps(error)
        except Exception:
            error = MedlakeError(f"{type(error).__name__}: {error}")
        _put(out, error, parent)


def _put(out: multiprocessing.Queue, item: object, parent: int) -> None:
    """``out.put(item)``, but give up once the parent is gone (killed: nobody reads)."""
    while True:
        try:
            out.put(item, timeout=_POLL_SECONDS * 10)
            return
        except queue.Full:
            if os.getppid() != parent:
                os._exit(1)


class ReadingProcesses:
    """The chunks of ``plan`` (see above), parsed by ``workers`` children, in order.

    The children start at once (so a caller can have the next file parsed while it
    still writes this one); iterate once to take the chunks. With ``group``, the plan
    holds pieces of chunks and every ``group`` consecutive pieces are joined into one
    chunk (:meth:`ParsedChunk.joined`). ``before_last`` runs in the consumer just before
    the last chunk is handed over (all the parsing is done by then). Iterating to the
    end, stopping early or :meth:`close` ends the children.
    """

    def __init__(self, format: str, context: SourceContext, plan: list[tuple[int, int, int]],
                 workers: int = 2, depth: int = 2, before_last: Callable[[], None] | None = None,
                 group: int = 1) -> None:  # fmt: skip
        mp = _process_context()
        self.context, self.total, self.before_last = context, len(plan), before_last
        self.group = max(1, group)
        self.workers = workers = max(1, min(workers, len(plan)))
        self.queues: list[multiprocessing.Queue] = [mp.Queue(maxsize=depth) for _ in range(workers)]
        shared = _SHARED_MEMORY and mp.get_start_method() == "fork"
        pairs = [socket.socketpair() if shared else (None, None) for _ in range(workers)]
        self.sockets = [mine for mine, _ in pairs]
        self.children = [
            mp.Process(target=_read_ranges_in_child,
                       args=(format, context, plan[k::workers], q, os.getpid(), pairs[k][1]),
                       name=f"medlake-read-ahead-{k}", daemon=True)
            for k, q in enumerate(self.queues)
        ]  # fmt: skip
        self.closed = False
        for child in self.children:
            child.start()
        for _, theirs in pairs:
            if theirs is not None:
                theirs.close()

    def __iter__(self) -> Iterator[object]:
        finished = False
        pieces: list[ParsedChunk] = []
        try:
            for index in range(self.total + self.workers):
                k = index % self.workers
                item = _next_from(self.queues[k], self.children[k], self.context)
                if isinstance(item, str) and item == _END:
                    if index < self.total:
                        raise MedlakeError(
                            f"{self.context.original_name}: a reading process ended early"
                        )
                    continue
                if isinstance(item, BaseException):
                    raise item
                if isinstance(item, _Shared):
                    item = _unshare(item, self.sockets[k])  # type: ignore[arg-type]
                if self.group > 1:
                    pieces.append(item)  # type: ignore[arg-type]
                    if len(pieces) < self.group and index < self.total - 1:
                        continue
                    item, pieces = ParsedChunk.joined(pieces), []
                if index == self.total - 1 and self.before_last is not None:
                    self.before_last()
                yield item
            finished = True
        finally:
            self.close(finished)

    def close(self, finished: bool = False) -> None:
        """End the children (at once unless they finished) and close the queues."""
        if self.closed:
            return
        self.closed = True
        for child in self.children:
            if finished:
                child.join(timeout=10)
            if child.is_alive():  # the consumer stopped early (the writer failed)
                child.terminate()
            child.join()
        for q in self.queues:
            q.close()
        for sock in self.sockets:
            if sock is not None:
                sock.close()


def prefetch_ranges_in_processes(format: str, context: SourceContext,
                                 plan: list[tuple[int, int, int]], workers: int = 2,
                                 depth: int = 2) -> Iterator[object]:  # fmt: skip
    """The chunks of ``plan``, parsed by ``workers`` children, in order (see
    :class:`ReadingProcesses`)."""
    return iter(ReadingProcesses(format, context, plan, workers, depth))


def _next_from(out: multiprocessing.Queue, child: multiprocessing.process.BaseProcess,
               context: SourceContext) -> object:  # fmt: skip
    while True:
        try:
            return out.get(timeout=_POLL_SECONDS * 10)
        except queue.Empty:
            if not child.is_alive() and out.empty():
                raise MedlakeError(
                    f"{context.original_name}: the reading process ended unexpectedly "
                    f"(exit code {child.exitcode})"
                ) from None
