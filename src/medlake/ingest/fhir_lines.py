"""NDJSON lines in groups of one chunk each, without a Python object per line.

The SQL fast path (:mod:`medlake.ingest.fhir_sql`) wants a chunk's lines as one Arrow
string column; splitting the file with ``bytes.split`` and ``pa.array`` costs more than
DuckDB's whole parse. Here the file is read in blocks, line ends are found with NumPy
and the column is a zero-copy view (offsets over the block's bytes). Each line keeps its
newline: the record hash is that of the line as received, as in the Python path.

A group holds exactly as many non-blank lines as a chunk takes (the Python path counts a
chunk's records the same way: blank lines are skipped and not counted), so chunks of
both paths start and end at the same lines.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa

BLOCK_BYTES = 32 << 20
_WHITESPACE = np.frombuffer(b" \t\r\n\x0b\x0c", np.uint8)


def HAS_BUNDLE(data: bytes) -> bool:  # noqa: N802 - reads as a constant test
    """Might a line here be a Bundle (whose entries count as records)? (``undle"`` also
    catches a type name written with a JSON escape.)"""
    return b'undle"' in data


@dataclass
class LineGroup:
    """Lines ``data[starts[i]:ends[i]]`` (newline included) numbered ``numbers[i]``."""

    data: bytes
    starts: np.ndarray
    ends: np.ndarray
    numbers: np.ndarray
    count: int  # non-blank lines

    def strings(self) -> pa.Array | None:
        """The lines as an Arrow string column, or None when the bytes are not UTF-8."""
        offsets = np.concatenate((self.starts, self.ends[-1:])).astype(np.int32)
        array = pa.StringArray.from_buffers(
            len(self.starts), pa.py_buffer(offsets), pa.py_buffer(self.data)
        )
        try:
            array.validate(full=True)
        except pa.ArrowInvalid:
            return None
        return array

    def lines(self) -> Iterator[tuple[int, bytes]]:
        for number, start, end in zip(self.numbers.tolist(), self.starts.tolist(),
                                      self.ends.tolist(), strict=True):
            yield number, self.data[start:end]


def _blocks(f: BinaryIO) -> Iterator[tuple[bytes, np.ndarray, np.ndarray, np.ndarray]]:
    """``(data, starts, ends, non-blank)`` of whole lines, block by block."""
    pending = b""
    while True:
        block = f.read(BLOCK_BYTES)
        if block:
            data = pending + block if pending else block
            cut = data.rfind(b"\n") + 1
            if cut == 0:
                pending = data
                continue
            data, pending = data[:cut], data[cut:]
        else:
            data, pending = pending, b""
            if not data:
                return
        buf = np.frombuffer(data, np.uint8)
        ends = np.flatnonzero(buf == 10) + 1
        if len(ends) == 0 or ends[-1] != len(data):
            ends = np.append(ends, len(data))
        starts = np.concatenate(([0], ends[:-1]))
        nonblank = np.ones(len(starts), dtype=bool)
        # Only lines that start with white space can be blank; look at those alone.
        for i in np.flatnonzero(np.isin(buf[starts], _WHITESPACE)).tolist():
            nonblank[i] = bool(data[starts[i] : ends[i]].strip())
        yield data, starts, ends, nonblank
        if not block:
            return


def line_groups(f: BinaryIO, size: int) -> Iterator[LineGroup]:
    """Groups of ``size`` non-blank lines (the last one fewer) with the blank lines between."""
    parts: list[tuple[bytes, np.ndarray, np.ndarray, np.ndarray]] = []
    have, first = 0, 1
    for data, starts, ends, nonblank in _blocks(f):
        numbers = np.arange(first, first + len(starts), dtype=np.int64)
        first += len(starts)
        counts = np.cumsum(nonblank)
        lo = 0
        while lo < len(starts):
            base = int(counts[lo - 1]) if lo else 0
            at = int(np.searchsorted(counts, base + size - have))  # the line that fills it
            hi = min(at + 1, len(starts))
            parts.append((data[starts[lo] : ends[hi - 1]], starts[lo:hi] - starts[lo],
                          ends[lo:hi] - starts[lo], numbers[lo:hi]))
            have += int(counts[hi - 1]) - base
            lo = hi
            if have >= size:
                yield _join(parts, have)
                parts, have = [], 0
    if parts:
        yield _join(parts, have)


def _join(parts: list[tuple[bytes, np.ndarray, np.ndarray, np.ndarray]], count: int) -> LineGroup:
    if len(parts) == 1:
        data, starts, ends, numbers = parts[0]
        return LineGroup(data, starts, ends, numbers, count)
    shift = np.cumsum([0] + [len(p[0]) for p in parts[:-1]])
    return LineGroup(
        b"".join(p[0] for p in parts),
        np.concatenate([p[1] + s for p, s in zip(parts, shift, strict=True)]),
        np.concatenate([p[2] + s for p, s in zip(parts, shift, strict=True)]),
        np.concatenate([p[3] for p in parts]),
        count,
    )


def chunk_ranges(path: Path, size: int) -> list[tuple[int, int, int]] | None:
    """``(start byte, end byte, first line number)`` of the groups :func:`line_groups`
    gives that hold a record, without copying their bytes (the file is memory-mapped);
    None if a line may be a Bundle (its entries count as records: only parsing tells
    where its chunk ends)."""
    with path.open("rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return []
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            if mapped.find(b'undle"') >= 0:
                return None
            return _ranges(np.frombuffer(mapped, np.uint8), size)


def _ranges(buf: np.ndarray, size: int) -> list[tuple[int, int, int]]:
    ranges: list[tuple[int, int, int]] = []
    counted, line_base, line_start = 0, 1, 0  # before the block: non-blank lines, lines
    start, first = 0, 1  # of the chunk being planned
    for lo in range(0, len(buf), BLOCK_BYTES):
        block = buf[lo : lo + BLOCK_BYTES]
        ends = np.flatnonzero(block == 10) + (lo + 1)  # one past each newline
        if lo + len(block) == len(buf) and (not len(ends) or ends[-1] != len(buf)):
            ends = np.append(ends, len(buf))  # the last line has no newline
        if not len(ends):
            continue
        starts = np.concatenate(([line_start], ends[:-1]))
        line_start = int(ends[-1])
        nonblank = np.ones(len(ends), dtype=bool)
        # Only lines that start with white space can be blank; look at those alone.
        for i in np.flatnonzero(np.isin(buf[starts], _WHITESPACE)).tolist():
            nonblank[i] = bool(bytes(buf[starts[i] : ends[i]]).strip())
        running = counted + np.cumsum(nonblank)
        total = int(running[-1])
        full = np.arange(counted // size + 1, total // size + 1) * size
        for i in np.searchsorted(running, full).tolist():  # the lines that fill a chunk
            end = int(ends[i])
            ranges.append((start, end, first))
            start, first = end, line_base + i + 1
        counted, line_base = total, line_base + len(ends)
    if counted > len(ranges) * size:  # a last chunk, not full
        ranges.append((start, len(buf), first))
    return ranges
