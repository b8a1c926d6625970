"""Mapped Excel exports (``.xlsx``): a worksheet read through the same mapping file as CSV.

Some hospital systems only export spreadsheets. An ``.xlsx`` file is matched to a file
entry of the mapping (``medlake ingest --mapping FILE``) by its name like a CSV file,
and the entry's ``sheet`` (default: the first worksheet) is read with ``openpyxl`` in
read-only mode, row by row, so memory stays bounded by one row. Each row is written
back as one line of delimited text in the entry's own delimiter and quoting, and that
text goes through :class:`~medlake.ingest.csv_mapping.CsvMappingReader` unchanged: the
same column rules, quarantine reasons, record hashes and chunking as CSV, and the
location of a bad record is the worksheet row (``file.xlsx:17``).

Cells become text as an export would write them: text as is; whole numbers without a
decimal point; date/datetime cells in the column's ``date_formats`` entry (its first
format), else ISO 8601 (``2024-03-01`` for a date at midnight, else
``2024-03-01 08:30:00``); empty cells empty. ``encoding`` does not apply (xlsx is
Unicode).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

from medlake.errors import InputError, UsageError
from medlake.ingest.csv_mapping import CsvMappingReader, find_entry
from medlake.ingest.mapping_spec import FileMapping, MappingSpec, load_mapping
from medlake.ingest.staging import ParsedChunk, SourceContext

_ZIP_MAGIC = b"PK\x03\x04"


class ExcelMappingReader:
    """``.xlsx`` workbooks read through a mapping file (``--mapping``)."""

    format: ClassVar[str] = "xlsx"

    def __init__(self, *, chunk_rows: int | None = None) -> None:
        self._csv = (
            CsvMappingReader() if chunk_rows is None else CsvMappingReader(chunk_rows=chunk_rows)
        )

    def sniff(self, path: Path, head: bytes) -> bool:
        """A zip file named ``.xlsx`` (an OOXML workbook)."""
        return head.startswith(_ZIP_MAGIC) and path.suffix.lower() == ".xlsx"

    def read(self, context: SourceContext) -> Iterator[ParsedChunk]:
        mapping_path = context.options.get("mapping")
        if mapping_path is None:
            raise UsageError(
                f"{context.original_name}: Excel input needs a mapping (--mapping FILE)"
            )
        spec = (mapping_path if isinstance(mapping_path, MappingSpec)
                else load_mapping(Path(str(mapping_path))))  # fmt: skip
        entry = find_entry(spec, context.original_name)
        if entry is None:
            raise InputError(
                f"{context.original_name}: matches no file entry of the mapping {mapping_path}"
            )
        import openpyxl  # only when a workbook is read

        try:
            workbook = openpyxl.load_workbook(context.path, read_only=True, data_only=True)
        except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
            raise InputError(f"{context.original_name}: not an Excel workbook ({exc})") from None
        try:
            if entry.sheet is None:
                sheet = workbook.worksheets[0]
            elif entry.sheet in workbook.sheetnames:
                sheet = workbook[entry.sheet]
            else:
                raise InputError(
                    f"{context.original_name}: no worksheet {entry.sheet!r} "
                    f"(sheets: {', '.join(workbook.sheetnames)})"
                )
            lines = _as_lines(sheet.iter_rows(values_only=True), entry)
            yield from self._csv.read_entry(context, entry, _Lines(lines))
        finally:
            workbook.close()


class _Lines(io.TextIOBase):
    """An iterator of text lines, as the CSV reader's line source iterates a file."""

    def __init__(self, lines: Iterator[str]) -> None:
        self._lines = lines

    def __iter__(self) -> Iterator[str]:
        return self._lines


def _as_lines(rows: Iterator[tuple[object, ...]], entry: FileMapping) -> Iterator[str]:
    """Each worksheet row as one line of delimited text (an empty row: an empty line)."""
    header: list[str] | None = list(entry.header) if entry.header else None
    for number, row in enumerate(rows, 1):
        if header is None and number == entry.header_row:
            header = ["" if c is None else str(c).strip() for c in row]
        if all(cell is None for cell in row):
            yield "\n"
            continue
        names = header or []
        # Empty cells at the end still are fields up to the header's width, as a CSV
        # export writes them; beyond it, only up to the last cell with a value.
        cells = list(row)
        while len(cells) > len(names) and cells[-1] is None:
            cells.pop()
        cells.extend([None] * (len(names) - len(cells)))
        text = [
            _cell_text(cell, entry, names[i] if i < len(names) else "")
            for i, cell in enumerate(cells)
        ]
        buffer = io.StringIO()
        csv.writer(buffer, delimiter=entry.delimiter, quotechar=entry.quote,
                   lineterminator="\n").writerow(text)  # fmt: skip
        yield buffer.getvalue()


def _cell_text(cell: object, entry: FileMapping, column: str) -> str:
    if cell is None:
        return ""
    if isinstance(cell, bool):
        return "true" if cell else "false"
    if isinstance(cell, float) and cell.is_integer():
        return str(int(cell))
    if isinstance(cell, dt.datetime | dt.date | dt.time):
        formats = entry.date_formats.get(column)
        fmt = formats[0] if isinstance(formats, list) and formats else formats
        if isinstance(fmt, str) and not isinstance(cell, dt.time):
            return cell.strftime(fmt)
        if isinstance(cell, dt.datetime) and cell.time() == dt.time():
            return cell.date().isoformat()
        return cell.isoformat(sep=" ") if isinstance(cell, dt.datetime) else cell.isoformat()
    return str(cell)
