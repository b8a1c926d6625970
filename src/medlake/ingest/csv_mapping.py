"""Mapped CSV exports: a source system's delimited files, read through its mapping file.

Hospital systems (HIS, pharmacy, EMR back-ends) export tables as CSV with their own
column names, encodings and date formats. :class:`CsvMappingReader` reads one such file
with the mapping the operator passes (``medlake ingest --mapping FILE``, arriving here as
``context.options["mapping"]``; the format is in :mod:`medlake.ingest.mapping_spec` and
``docs/mapping.md``) and stages its rows per :mod:`medlake.ingest.staging`.

Why the standard library's ``csv`` and not ``pyarrow.csv``: quarantine needs each bad
record's line number and raw text, and ``_record_hash`` needs the raw row, neither of
which a columnar CSV reader keeps. The file is decoded in a streaming way by Python's
incremental codecs (so GBK/GB18030 need no separate transcoding pass), parsed by the
C ``csv`` parser one physical line at a time, and converted cell by cell with getters
compiled once per file (:mod:`medlake.ingest.csv_mapping_rules`). Memory is bounded by
one chunk of staged rows. Bytes that are not valid in the declared encoding quarantine
their row instead of aborting the file.
"""

from __future__ import annotations

import csv
import fnmatch
import re
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import ClassVar, TextIO

import pyarrow as pa

from medlake.errors import InputError, UsageError
from medlake.ingest.csv_mapping_rules import CellError, CompiledFile, compile_file
from medlake.ingest.mapping_spec import PATIENTS, FileMapping, MappingSpec, load_mapping
from medlake.ingest.staging import (
    PATIENT_COLUMNS,
    RECORD_HASH,
    SOURCE_PATIENT_ID,
    SOURCE_RECORD_ID,
    SOURCE_VERSION,
    SOURCE_VISIT_ID,
    SOURCE_VISIT_SYSTEM,
    ParsedChunk,
    QuarantineEntry,
    SourceContext,
    record_hash,
    staging_schema,
)

CHUNK_ROWS = 50_000
_SNIFF_DELIMITERS = ",;\t|"
_NOT_CSV = re.compile(rb"\A(?:\xef\xbb\xbf)?\s*(?:[{\[<\x0b]|MSH\||##fileformat|PK\x03\x04)")


def find_entry(spec: MappingSpec, original_name: str) -> FileMapping | None:
    """The first file entry whose glob matches the file name (or, with a ``/``, the path)."""
    path = PurePosixPath(original_name.replace("\\", "/"))
    for entry in spec.file:
        for pattern in entry.patterns():
            subject = str(path) if "/" in pattern else path.name
            if fnmatch.fnmatchcase(subject, pattern) or (
                "/" in pattern and fnmatch.fnmatchcase(subject, f"*/{pattern}")
            ):
                return entry
    return None


class _LineSource:
    """Physical lines of a text file, remembering those of the record being parsed."""

    def __init__(self, handle: TextIO) -> None:
        self._handle = handle
        self.pending: list[str] = []
        self.line = 0  # physical lines handed out so far

    def __iter__(self) -> Iterator[str]:
        for line in self._handle:
            self.line += 1
            self.pending.append(line)
            yield line

    def take(self) -> str:
        """The raw text of the record just parsed, without its final line end."""
        raw = "".join(self.pending)
        self.pending.clear()
        return raw.rstrip("\r\n")


class _Batch:
    """Staged rows of one chunk, column by column."""

    def __init__(self, compiled: CompiledFile) -> None:
        entry = compiled.entry
        self.compiled = compiled
        self.target = entry.target
        names = [SOURCE_PATIENT_ID, SOURCE_VERSION, RECORD_HASH]
        if self.target != PATIENTS:
            names.insert(0, SOURCE_RECORD_ID)
            if compiled.visit_id is not None:
                names.append(SOURCE_VISIT_ID)
                if entry.visit_system:
                    names.append(SOURCE_VISIT_SYSTEM)
        self.ids = list(names)
        names += [f.name for f in compiled.fields]
        self.names = names
        self.columns: list[list[object]] = [[] for _ in names]
        self.rows = 0

    def append(self, values: Sequence[object]) -> None:
        for column, value in zip(self.columns, values, strict=True):
            column.append(value)
        self.rows += 1

    def to_arrow(self) -> pa.Table:
        data = dict(zip(self.names, self.columns, strict=True))
        for code_column, (vocab_column, vocabulary) in self.compiled.vocabularies.items():
            data[vocab_column] = [vocabulary if c is not None else None for c in data[code_column]]
        if self.target == PATIENTS:
            schema = pa.schema([pa.field(n, PATIENT_COLUMNS[n]) for n in data])
        else:
            schema = staging_schema(self.target, list(data))
        arrays = [pa.array(data[f.name], type=f.type) for f in schema]
        return pa.Table.from_arrays(arrays, schema=schema)


class CsvMappingReader:
    """Delimited text exports read through a mapping file (``--mapping``)."""

    format: ClassVar[str] = "csv"

    def __init__(self, *, chunk_rows: int = CHUNK_ROWS) -> None:
        self.chunk_rows = chunk_rows

    def sniff(self, path: Path, head: bytes) -> bool:
        """A text file whose first line splits on a delimiter into two or more fields.

        Not JSON, XML, HL7, VCF or a zip (xlsx) file; when in doubt the service forces
        ``--format csv`` together with ``--mapping``.
        """
        if not head or b"\x00" in head or _NOT_CSV.match(head):
            return False
        text = None
        for encoding in ("utf-8", "gb18030"):
            try:
                text = head.decode(encoding)
                break
            except UnicodeDecodeError as exc:
                if exc.start >= len(head) - 4:  # a character cut at the end of the head
                    text = head[: exc.start].decode(encoding, "ignore")
                    break
        if text is None:
            return False
        lines = [line for line in text.splitlines() if line.strip()]
        if not lines:
            return False
        complete = lines[:-1] if len(lines) > 1 else lines
        for delimiter in _SNIFF_DELIMITERS:
            counts = {line.count(delimiter) for line in complete}
            if min(counts) >= 1 and len(counts) == 1:
                return True
        return False

    def read(self, context: SourceContext) -> Iterator[ParsedChunk]:
        """Stage the file's rows by its mapping entry; bad rows go to quarantine."""
        mapping_path = context.options.get("mapping")
        if mapping_path is None:
            raise UsageError(f"{context.original_name}: CSV input needs a mapping (--mapping FILE)")
        spec = (mapping_path if isinstance(mapping_path, MappingSpec)
                else load_mapping(Path(str(mapping_path))))  # fmt: skip
        entry = find_entry(spec, context.original_name)
        if entry is None:
            raise InputError(
                f"{context.original_name}: matches no file entry of the mapping {mapping_path} "
                f"(patterns: {', '.join(p for e in spec.file for p in e.patterns())})"
            )
        with context.path.open(encoding=entry.encoding, errors="surrogateescape",
                               newline="") as handle:  # fmt: skip
            yield from self.read_entry(context, entry, handle)

    def read_entry(
        self, context: SourceContext, entry: FileMapping, handle: TextIO
    ) -> Iterator[ParsedChunk]:
        name = context.original_name
        source = _LineSource(handle)
        reader = csv.reader(iter(source), delimiter=entry.delimiter, quotechar=entry.quote)
        header = self._header(entry, reader, source, name)
        compiled = compile_file(entry, header, name)
        default_version = context.default_version
        chunk, batch = ParsedChunk(), _Batch(compiled)
        for line, cells, raw in _records(reader, source, entry, compiled.width):
            if not cells or (len(cells) == 1 and not cells[0].strip()):
                continue  # a blank line is no record
            chunk.records_read += 1
            location = f"{name}:{line}"
            try:
                digest = record_hash(raw)
            except UnicodeEncodeError:
                chunk.quarantine.append(_undecodable(location, raw, entry.encoding))
                continue
            if len(cells) != compiled.width:
                reason = f"row has {len(cells)} fields, the header has {compiled.width}"
                chunk.quarantine.append(QuarantineEntry(location, reason, raw))
                continue
            try:
                values = _row_values(cells, compiled, digest, default_version)
            except CellError as error:
                chunk.quarantine.append(QuarantineEntry(location, error.reason, raw, error.field))
                continue
            batch.append(values)
            if batch.rows >= self.chunk_rows:
                yield _finish(chunk, batch)
                chunk, batch = ParsedChunk(), _Batch(compiled)
        if chunk.records_read or batch.rows:
            yield _finish(chunk, batch)

    @staticmethod
    def _header(
        entry: FileMapping, reader: Iterator[list[str]], source: _LineSource, name: str
    ) -> list[str]:
        if entry.header_row == 0:
            assert entry.header is not None
            return list(entry.header)
        row: list[str] | None = None
        while source.line < entry.header_row:
            row = next(reader, None)
            if row is None:
                raise InputError(f"{name}: no header at line {entry.header_row} (file too short)")
        source.take()
        assert row is not None
        if any("\udc80" <= ch <= "\udcff" for cell in row for ch in cell):
            raise InputError(f"{name}: header is not valid {entry.encoding} text")
        header = [cell.strip() for cell in row]
        if header:
            header[0] = header[0].lstrip("\ufeff")
        return header


def _records(
    reader: Iterator[list[str]], source: _LineSource, entry: FileMapping, width: int
) -> Iterator[tuple[int, list[str], str]]:
    """(first line, cells, raw text) per record.

    A record the parser made of several physical lines is split back into its lines,
    each parsed alone, when its field count is wrong, when the parser refused it, or
    when one of its lines is a whole row by itself: that is a stray quote opening a
    field that never closes, not a quoted field with line breaks, and one broken line
    must not take the good lines after it into quarantine (or into a bogus record).
    """
    start = source.line + 1
    while True:
        try:
            cells: list[str] | None = next(reader)
        except StopIteration:
            return
        except csv.Error:
            cells = None
        if cells is not None and len(source.pending) <= 1:
            yield start, cells, source.take()
        else:
            lines = list(source.pending)
            alone = [_parse_line(text, entry) for text in lines]
            if cells is not None and len(cells) == width and width not in map(len, alone):
                yield start, cells, source.take()  # a quoted field with line breaks
            else:
                source.take()
                for offset, (text, line_cells) in enumerate(zip(lines, alone, strict=True)):
                    yield start + offset, line_cells, text.rstrip("\r\n")
        start = source.line + 1


def _parse_line(text: str, entry: FileMapping) -> list[str]:
    """One physical line parsed alone (a line the parser refuses is one field)."""
    try:
        return next(csv.reader([text], delimiter=entry.delimiter, quotechar=entry.quote), [])
    except csv.Error:
        return [text]


def _row_values(
    cells: list[str], compiled: CompiledFile, digest: str, default_version: int
) -> list[object]:
    """Provenance then staged values, in :class:`_Batch` column order."""
    values: list[object] = []
    patients = compiled.entry.target == PATIENTS
    if not patients:
        values.append(compiled.record_id(cells))  # type: ignore[misc]
    values.append(compiled.patient_id(cells))
    version = compiled.version
    values.append(version(cells) if version is not None else default_version)
    values.append(digest)
    if not patients and compiled.visit_id is not None:
        values.append(compiled.visit_id(cells))
        if compiled.entry.visit_system:
            values.append(compiled.entry.visit_system)
    for staged in compiled.fields:
        values.append(staged.get(cells))
    return values


def _finish(chunk: ParsedChunk, batch: _Batch) -> ParsedChunk:
    if batch.rows:
        if batch.target == PATIENTS:
            chunk.patients.append(batch.to_arrow())
        else:
            chunk.add_rows(batch.target, batch.to_arrow())
    return chunk


def _undecodable(location: str, raw: str, encoding: str) -> QuarantineEntry:
    """A row with bytes invalid in ``encoding``: the payload shows them as ``\\xNN``."""
    payload = raw.encode(encoding, "surrogateescape").decode(encoding, "backslashreplace")
    return QuarantineEntry(location, f"bytes that are not valid {encoding}", payload)
