"""Read-ahead of a reader's chunks in a thread: order, errors, early stop."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from medlake.ingest.prefetch import prefetch


def test_items_arrive_in_order() -> None:
    assert list(prefetch(iter(range(100)), depth=3)) == list(range(100))


def test_reader_error_is_raised_after_the_items_before_it() -> None:
    def reader() -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("broken segment")

    seen: list[int] = []

    def consume() -> None:
        seen.extend(prefetch(reader()))

    with pytest.raises(ValueError, match="broken segment"):
        consume()
    assert seen == [1, 2]


def test_consumer_stopping_early_stops_and_closes_the_reader() -> None:
    closed = threading.Event()

    def reader() -> Iterator[int]:
        try:
            yield from range(1_000_000)
        finally:
            closed.set()

    for item in prefetch(reader(), depth=2):
        if item == 5:
            break
    assert closed.wait(5)
