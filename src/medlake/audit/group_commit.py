"""Group commit: the audit events of concurrent calls written in one transaction.

Every patient-level read appends a hash-chained event, and each append is a transaction
that claims the chain's head row, so under many concurrent reads the appends queue
behind one another and each pays a commit of its own. With group commit, a caller
queues its event and either waits or, when no write is under way, becomes the *leader*:
it takes every event queued so far and writes them as one batch, in one transaction,
with one commit; then it hands the lead to the first caller that queued meanwhile. A
caller returns only once the batch holding its event has committed (or raises the
batch's error), so "returned" still means "durable in the trail", and the events are
chained in the order they were queued.

Written here rather than taken from a library: it is the textbook leader/follower
scheme over a lock and one :class:`threading.Event` per waiting caller, and the lake's
own transaction is the unit of durability.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class _Slot(Generic[T]):
    item: T
    done: threading.Event = field(default_factory=threading.Event)
    lead: bool = False
    result: int | None = None
    error: BaseException | None = None


class _Queue(Generic[T]):
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.waiting: list[_Slot[T]] = []
        self.leading = False


class GroupCommit(Generic[T]):
    """Leader/follower batching of writes, one queue per key (per lake)."""

    def __init__(self) -> None:
        self._queues: dict[Hashable, _Queue[T]] = {}
        self._lock = threading.Lock()

    def _queue(self, key: Hashable) -> _Queue[T]:
        with self._lock:
            queue = self._queues.get(key)
            if queue is None:
                queue = self._queues[key] = _Queue()
            return queue

    def submit(self, key: Hashable, item: T, write: Callable[[list[T]], list[int]]) -> int:
        """Queue ``item`` and return its result once the batch holding it is written.

        ``write(items)`` writes a batch atomically and returns one result per item, in
        order; it runs in the thread of whichever caller leads, with that caller's
        ``write`` (so its connection), under no lock of this class.
        """
        queue = self._queue(key)
        slot: _Slot[T] = _Slot(item)
        with queue.lock:
            queue.waiting.append(slot)
            if not queue.leading:
                queue.leading = slot.lead = True
        if not slot.lead:
            slot.done.wait()
        if slot.lead:
            self._lead(queue, write)
        if slot.error is not None:
            raise slot.error
        assert slot.result is not None
        return slot.result

    def _lead(self, queue: _Queue[T], write: Callable[[list[T]], list[int]]) -> None:
        with queue.lock:
            batch, queue.waiting = queue.waiting, []
        try:
            results = write([slot.item for slot in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"a batch of {len(batch)} gave {len(results)} results")
        except BaseException as error:  # every caller in the batch gets the error
            for slot in batch:
                slot.error = error
        else:
            for slot, result in zip(batch, results, strict=True):
                slot.result = result
        with queue.lock:
            # Hand the lead to the first caller that queued meanwhile, or give it up.
            if queue.waiting:
                queue.waiting[0].lead = True
                queue.waiting[0].done.set()
            else:
                queue.leading = False
        for slot in batch:
            slot.lead = False
            slot.done.set()
