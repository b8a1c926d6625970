"""Where a bulk NDJSON file's chunks lie, found without parsing a line.

Two reading processes parse a large FHIR file's chunks at once (alternate chunks), so
each needs the byte range of its chunks in advance. The file is memory-mapped and its
line ends found with NumPy. A chunk holds exactly as many non-blank lines as the reader
puts in a chunk (blank lines are skipped and not counted), so the planned chunks are
the ones one reader reading the whole file gives.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import numpy as np

BLOCK_BYTES = 32 << 20
_WHITESPACE = np.frombuffer(b" \t\r\n\x0b\x0c", np.uint8)


def chunk_ranges(path: Path, size: int) -> list[tuple[int, int, int]] | None:
    """``(start byte, end byte, first line number)`` of the chunks of ``size`` records,
    without copying their bytes; None if a line may be a Bundle (its entries count as
    records: only parsing tells where its chunk ends)."""
    with path.open("rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return []
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            if _holds(mapped, b'undle"'):
                return None
            return _ranges(np.frombuffer(mapped, np.uint8), size)


def _holds(mapped: mmap.mmap, pattern: bytes) -> bool:
    """``pattern in mapped``, searched a slice at a time: ``find`` holds the GIL, and the
    plan is made in a thread beside the writer (a whole 400 MB file would stall it)."""
    step = BLOCK_BYTES // 4
    for lo in range(0, len(mapped), step):
        if mapped.find(pattern, lo, lo + step + len(pattern) - 1) >= 0:
            return True
    return False


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
