"""HL7 v2 reader: ADT and ORU^R01 files, plain or MLLP-framed, into staged rows.

Files hold messages separated by a line break before ``MSH`` (segments by ``\\r``), or
MLLP frames (``0x0B … 0x1C 0x0D``) as an interface engine logs them. Each message is
decoded (MSH-18, else UTF-8, else GB18030 for Chinese names), split into segments
(:mod:`medlake.ingest.hl7v2_message`) and mapped (:mod:`medlake.ingest.hl7v2_mapping`).
A message that cannot be read goes to quarantine whole, located as
``<file>:message <n>`` with its byte offset in the reason; one bad message never stops
the file. A file with no HL7 message at all raises :class:`~medlake.errors.InputError`.

Options (``SourceContext.options``):
- ``hl7_parser``: ``"fast"`` (default) or ``"hl7"`` (``hl7.parse`` on every message);
- ``visit_systems``: ``{regex: system}``, PV1-19 values matching a regex are visits of
  that system (the LIS writes the HIS visit number there); default none;
- ``local_vocabulary``: vocabulary id for the sender's local codes (default: the source
  system's name);
- ``patient_id_authority``: PID-3 assigning authority of the source patient id (default:
  the sending application, MSH-3);
- ``chunk_messages``: messages per :class:`ParsedChunk` (default 20,000).
"""

from __future__ import annotations

import contextlib
import mmap
import re
from collections.abc import Iterator, Sequence
from functools import lru_cache
from pathlib import Path
from typing import ClassVar

import pyarrow as pa

from medlake.errors import InputError
from medlake.ingest.hl7v2_mapping import (
    MEASUREMENT_COLUMNS,
    PATIENT_ROW_COLUMNS,
    SPECIMEN_COLUMNS,
    MappingOptions,
    MessageMapper,
)
from medlake.ingest.hl7v2_message import (
    MessageError,
    RawMessage,
    decode_message,
    is_mllp,
    message_starts,
    parse_message,
    split_messages,
)
from medlake.ingest.staging import (
    PATIENT_COLUMNS,
    ParsedChunk,
    QuarantineEntry,
    SourceContext,
    staging_schema,
)
from medlake.log import get_logger

DEFAULT_CHUNK_MESSAGES = 20_000
_HEAD = re.compile(rb"\A(?:\xef\xbb\xbf)?[\s]*\x0b?[\s]*(?:MSH|FHS|BHS)[|^~\\&!#$%*+,./:;=?@_-]")

log = get_logger(__name__)


def looks_like_hl7(head: bytes) -> bool:
    """True when ``head`` starts (after blank space, a BOM or an MLLP start) with MSH/FHS/BHS."""
    return _HEAD.match(head) is not None


def mapping_options(context: SourceContext) -> MappingOptions:
    """The mapping's settings from the context and its options."""
    options = context.options
    systems = options.get("visit_systems") or {}
    if not isinstance(systems, dict):
        raise InputError(f"hl7v2 option visit_systems must be a mapping, got {systems!r}")
    return MappingOptions(
        source_system=context.source_system,
        default_version=context.default_version,
        local_vocabulary=str(options.get("local_vocabulary") or context.source_system),
        patient_id_authority=(
            str(options["patient_id_authority"]) if options.get("patient_id_authority") else None
        ),
        visit_systems=tuple((re.compile(str(p)), str(s)) for p, s in systems.items()),
    )


@lru_cache(maxsize=8)
def _schema(table: str, columns: tuple[str, ...]) -> pa.Schema:
    """The staging schema, computed once (``staging_schema`` converts every lake type)."""
    if table == "patient":
        return pa.schema([pa.field(name, PATIENT_COLUMNS[name]) for name in columns])
    return staging_schema(table, columns)


class _Rows:
    """Rows of one staged table as column lists (like ``TableBuffer``, schema cached)."""

    def __init__(self, table: str, columns: tuple[str, ...]) -> None:
        self.table = table
        self.columns = columns
        self._lists: list[list[object]] = [[] for _ in columns]
        self._pairs = list(zip(columns, self._lists, strict=True))
        self.count = 0

    def append(self, row: dict[str, object]) -> None:
        for name, values in self._pairs:
            values.append(row.get(name))
        self.count += 1

    def truncate(self, count: int) -> None:
        """Drop the rows from ``count`` on (a file that failed part way)."""
        for values in self._lists:
            del values[count:]
        self.count = count

    def to_arrow(self) -> pa.Table:
        schema = _schema(self.table, self.columns)
        arrays = [pa.array(v, type=f.type) for v, f in zip(self._lists, schema, strict=True)]
        return pa.Table.from_arrays(arrays, schema=schema)


@contextlib.contextmanager
def _file_bytes(context: SourceContext, content: bytes | None) -> Iterator[bytes | mmap.mmap]:
    """``content`` when given, else the landed file mapped (empty: ``b""``)."""
    if content is not None:
        yield content
        return
    with open(context.path, "rb") as handle:
        if handle.seek(0, 2) == 0:
            yield b""
            return
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            yield data


class _ChunkBuilder:
    """Rows gathered for one :class:`ParsedChunk` (in the rows of ``shared``, if given)."""

    def __init__(self, shared: _ChunkBuilder | None = None) -> None:
        self.chunk = ParsedChunk()
        if shared is None:
            self.measurements = _Rows("measurement", MEASUREMENT_COLUMNS)
            self.specimens = _Rows("specimen", SPECIMEN_COLUMNS)
            self.patients = _Rows("patient", PATIENT_ROW_COLUMNS)
        else:
            self.measurements = shared.measurements
            self.specimens = shared.specimens
            self.patients = shared.patients
        self.messages = 0

    def counts(self) -> tuple[int, int, int]:
        return self.measurements.count, self.specimens.count, self.patients.count

    def truncate(self, counts: tuple[int, int, int]) -> None:
        for rows, count in zip(self._all(), counts, strict=True):
            rows.truncate(count)

    def _all(self) -> tuple[_Rows, _Rows, _Rows]:
        return self.measurements, self.specimens, self.patients

    def finish(self) -> ParsedChunk:
        chunk = self.chunk
        if self.measurements.count:
            chunk.add_rows("measurement", self.measurements.to_arrow())
        if self.specimens.count:
            chunk.add_rows("specimen", self.specimens.to_arrow())
        if self.patients.count:
            chunk.patients.append(self.patients.to_arrow())
        return chunk


def _reading_options(context: SourceContext) -> tuple[str, int, MessageMapper]:
    """The parser, the messages per chunk and the mapper a file is read with."""
    parser = str(context.options.get("hl7_parser", "fast"))
    per_chunk = int(context.options.get("chunk_messages", DEFAULT_CHUNK_MESSAGES))  # type: ignore[call-overload]
    return parser, per_chunk, MessageMapper(mapping_options(context))


def _refuse_if_not_hl7(data: bytes | mmap.mmap, context: SourceContext) -> None:
    if not looks_like_hl7(data[:1024]) and data.find(b"MSH") < 0:
        raise InputError(f"{context.original_name}: not an HL7 v2 file (no MSH segment)")


class Hl7v2Reader:
    """Reads HL7 v2 files (plain or MLLP) into measurement, specimen and patient rows."""

    format: ClassVar[str] = "hl7v2"
    reads_contents: ClassVar[bool] = True  # read_many takes the files' bytes

    def sniff(self, path: Path, head: bytes) -> bool:
        return looks_like_hl7(head)

    def read(self, context: SourceContext) -> Iterator[ParsedChunk]:
        return self._chunks(context, None)

    def _chunks(self, context: SourceContext, content: bytes | None) -> Iterator[ParsedChunk]:
        """:meth:`read`, of ``content`` (the file's bytes) when given."""
        parser, per_chunk, mapper = _reading_options(context)
        with _file_bytes(context, content) as data:
            if not data:
                yield ParsedChunk()
                return
            _refuse_if_not_hl7(data, context)
            builder = _ChunkBuilder()
            for raw in split_messages(data):  # type: ignore[arg-type]
                self._read_one(raw, context.original_name, parser, mapper, builder)
                if builder.messages >= per_chunk:
                    yield builder.finish()
                    builder = _ChunkBuilder()
            yield builder.finish()

    def read_many(
        self,
        contexts: Sequence[SourceContext],
        contents: Sequence[bytes | None] | None = None,
    ) -> list[list[ParsedChunk] | Exception]:
        """What ``list(read(context))`` gives for each file, or the error it raises.

        For many small files (an LIS's day files): their rows go to one set of column
        lists, turned into Arrow once, and each file's tables are slices of those
        (converting each file's few rows on its own was a fifth of reading one).
        A file of more than one chunk is read on its own. ``contents[i]``, when given,
        is file ``i``'s bytes (the caller read them to land the file), read instead of
        its path: the file may not be landed yet.
        """
        shared = _ChunkBuilder()
        results: list[list[ParsedChunk] | Exception | None] = [None] * len(contexts)
        spans: list[tuple[int, ParsedChunk, tuple[int, int, int], tuple[int, int, int]]] = []
        for index, context in enumerate(contexts):
            content = contents[index] if contents is not None else None
            before = shared.counts()
            try:
                chunk = self._read_whole(context, shared, content)
            except Exception as error:  # the file's own error, as read() raises it
                shared.truncate(before)
                results[index] = error
                continue
            if chunk is None:
                shared.truncate(before)
                try:
                    results[index] = list(self._chunks(context, content))
                except Exception as error:
                    results[index] = error
                continue
            spans.append((index, chunk, before, shared.counts()))
        tables = [rows.to_arrow() if rows.count else None for rows in shared._all()]
        for index, chunk, before, after in spans:
            parts = [
                table.slice(start, end - start) if table is not None and end > start else None
                for table, start, end in zip(tables, before, after, strict=True)
            ]
            measurements, specimens, patients = parts
            if measurements is not None:
                chunk.add_rows("measurement", measurements)
            if specimens is not None:
                chunk.add_rows("specimen", specimens)
            if patients is not None:
                chunk.patients.append(patients)
            results[index] = [chunk]
        return results  # type: ignore[return-value]

    def _read_whole(
        self, context: SourceContext, shared: _ChunkBuilder, content: bytes | None
    ) -> ParsedChunk | None:
        """The file (or ``content``) as :meth:`read`'s one chunk, its rows added to
        ``shared`` (not turned into tables); None when :meth:`read` would give more than
        one chunk."""
        parser, per_chunk, mapper = _reading_options(context)
        with _file_bytes(context, content) as data:
            if not data:
                return ParsedChunk()
            _refuse_if_not_hl7(data, context)
            builder = _ChunkBuilder(shared)
            for raw in split_messages(data):  # type: ignore[arg-type]
                self._read_one(raw, context.original_name, parser, mapper, builder)
                if builder.messages >= per_chunk:
                    return None
            return builder.chunk

    def chunk_plan(self, path: Path, parts: int = 1) -> list[tuple[int, int, int]] | None:
        """Where the chunks :meth:`read` gives of a plain HL7 file lie, so that several
        processes can parse them at once: ``(start byte, end byte, first message number)``
        per piece, each chunk of the default size as ``parts`` pieces (see
        ``FhirReader.chunk_plan``); None for an MLLP-framed file, one with text before its
        first MSH, or none at all (read as one: :meth:`read` says what is wrong)."""
        if parts < 1 or DEFAULT_CHUNK_MESSAGES % parts:
            parts = 1
        per_piece = DEFAULT_CHUNK_MESSAGES // parts
        with open(path, "rb") as handle:
            if handle.seek(0, 2) == 0:
                return None
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
                if is_mllp(data[:64]):
                    return None
                starts = message_starts(data)  # type: ignore[arg-type]
                if not starts or data[: starts[0]].strip():
                    return None
                size = len(data)
        bounds = [*starts[::per_piece], size]
        return [(bounds[k], bounds[k + 1], k * per_piece + 1) for k in range(len(bounds) - 1)]

    def read_range(self, context: SourceContext, start: int, end: int,
                   first_number: int) -> ParsedChunk:  # fmt: skip
        """The piece of :meth:`chunk_plan` at bytes ``start:end`` (its first message's
        number): the messages, numbers and offsets :meth:`read` gives for them."""
        parser = str(context.options.get("hl7_parser", "fast"))
        mapper = MessageMapper(mapping_options(context))
        with open(context.path, "rb") as handle:
            handle.seek(start)
            data = handle.read(end - start)
        builder = _ChunkBuilder()
        for raw in split_messages(data):
            moved = RawMessage(raw.number + first_number - 1, raw.offset + start, raw.data,
                               raw.error)  # fmt: skip
            self._read_one(moved, context.original_name, parser, mapper, builder)
        return builder.finish()

    def _read_one(
        self,
        raw: RawMessage,
        name: str,
        parser: str,
        mapper: MessageMapper,
        builder: _ChunkBuilder,
    ) -> None:
        chunk = builder.chunk
        builder.messages += 1
        chunk.records_read += 1
        location = f"{name}:message {raw.number}"
        where = f" (byte offset {raw.offset})"
        if raw.error is not None:
            payload = raw.data.decode("utf-8", errors="backslashreplace")
            chunk.quarantine.append(QuarantineEntry(location, raw.error + where, payload, None))
            return
        text = raw.data.decode("utf-8", errors="backslashreplace")
        try:
            text, _ = decode_message(raw.data)
            message = parse_message(text, parser)
            mapped = mapper.map(message)
        except MessageError as error:
            chunk.quarantine.append(
                QuarantineEntry(location, error.reason + where, text, error.field)
            )
            return
        except Exception as error:  # a reader bug must not lose the message
            log.exception("%s: unexpected error", location)
            reason = f"unexpected error {type(error).__name__}: {error}{where}"
            chunk.quarantine.append(QuarantineEntry(location, reason, text, None))
            return
        for reason, field in mapped.bad_results:
            chunk.quarantine.append(QuarantineEntry(location, reason + where, text, field))
        for row in mapped.measurements:
            builder.measurements.append(row)
        for row in mapped.specimens:
            builder.specimens.append(row)
        for row in mapped.patients:
            builder.patients.append(row)
        chunk.merges.extend(mapped.merges)
        if mapped.skipped:
            chunk.skipped.update(mapped.skipped)


def message_problems(data: bytes, source_system: str) -> list[str]:
    """Why an ingest would quarantine ``data`` (one message), whole or some of its results,
    found by the reader's own parse and mapping: empty when it loads whole. For a live
    listener's acknowledgement (``AE`` with the reason), before the batch ingest."""
    options = MappingOptions(source_system, 0, local_vocabulary=source_system)
    builder = _ChunkBuilder()
    raw = RawMessage(1, 0, data)
    Hl7v2Reader()._read_one(raw, "message", "fast", MessageMapper(options), builder)
    return [entry.reason.removesuffix(" (byte offset 0)") for entry in builder.chunk.quarantine]
