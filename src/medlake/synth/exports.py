"""Per-chunk output buffers: what one chunk adds to each exported file, already encoded.

Writers append CSV rows, NDJSON objects and HL7 messages here and get back each
record's line (or message) number within the chunk, which planted defects keep; the
orchestrator appends the chunk's bytes to the files in chunk order and offsets those
numbers by what earlier chunks wrote. Encodings and HL7 framing are decided here, by
file, so every writer stays encoding-agnostic.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any

import orjson

from medlake.synth.defects import Defect

#: Files not in UTF-8 (HIS exports from a Windows system keep the Chinese code page).
FILE_ENCODINGS: dict[str, str] = {"his/prescriptions.csv": "gb18030"}
#: HIS CSV exports end lines with CRLF (Windows), everything else with LF.
CRLF_PREFIX = "his/"
MLLP_START, MLLP_END = "\x0b", "\x1c\r"


def file_encoding(path: str) -> str:
    return FILE_ENCODINGS.get(path, "utf-8")


@dataclass
class ChunkResult:
    """What one chunk contributes: bytes per file, record counts, defects, truth, omics."""

    index: int
    blobs: dict[str, bytes]
    records: dict[str, int]  # lines (CSV, NDJSON) or messages (HL7) per file
    defects: list[Defect]
    omics: list[dict[str, Any]] = field(default_factory=list)
    persons: int = 0


class ChunkExports:
    """Collects one chunk's records for every file."""

    def __init__(self) -> None:
        self._csv: dict[str, tuple[io.StringIO, Any]] = {}
        self._lines: dict[str, list[bytes]] = {}
        self._messages: dict[str, list[tuple[tuple[Any, ...], str]]] = {}
        self.counts: dict[str, int] = {}
        self.defects: list[Defect] = []

    def _next(self, path: str) -> int:
        count = self.counts.get(path, 0) + 1
        self.counts[path] = count
        return count

    def csv_row(self, path: str, row: list[Any]) -> int:
        """Append one CSV row; return its 1-based row number within the chunk."""
        if path not in self._csv:
            buffer = io.StringIO()
            terminator = "\r\n" if path.startswith(CRLF_PREFIX) else "\n"
            self._csv[path] = (buffer, csv.writer(buffer, lineterminator=terminator))
        self._csv[path][1].writerow(row)
        return self._next(path)

    def ndjson(self, path: str, resource: dict[str, Any]) -> int:
        """Append one JSON object as a line; return its 1-based line within the chunk."""
        self._lines.setdefault(path, []).append(orjson.dumps(resource))
        return self._next(path)

    def hl7(self, path: str, sort_key: tuple[Any, ...], message: str) -> None:
        """Queue one HL7 message for a day file; messages are sorted by ``sort_key``."""
        self._messages.setdefault(path, []).append((sort_key, message))

    def sorted_message_numbers(self, path: str) -> dict[tuple[Any, ...], int]:
        """1-based message number of each sort key in ``path`` once sorted."""
        keys = sorted(key for key, _ in self._messages.get(path, []))
        return {key: i + 1 for i, key in enumerate(keys)}

    def message_paths(self) -> list[str]:
        return sorted(self._messages)

    def finish(self, index: int) -> ChunkResult:
        blobs: dict[str, bytes] = {}
        for path, (buffer, _) in self._csv.items():
            blobs[path] = buffer.getvalue().encode(file_encoding(path))
        for path, lines in self._lines.items():
            blobs[path] = b"\n".join(lines) + b"\n"
        for path, messages in self._messages.items():
            messages.sort(key=lambda item: item[0])
            if path.endswith(".mllp"):
                text = "".join(f"{MLLP_START}{m}{MLLP_END}" for _, m in messages)
            else:
                text = "".join(m for _, m in messages)
            blobs[path] = text.encode()
            self.counts[path] = len(messages)
        return ChunkResult(index, blobs, dict(self.counts), self.defects)
