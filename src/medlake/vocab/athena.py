"""Load OHDSI Athena vocabulary files (or the bundled demo vocabulary) into the lake.

Athena (https://athena.ohdsi.org) delivers the OMOP Standardized Vocabularies as
tab-separated files with a header row: ``CONCEPT.csv`` (about 6 million rows),
``CONCEPT_RELATIONSHIP.csv``, ``CONCEPT_ANCESTOR.csv`` (tens of millions) and the small
ones. Values are not quoted, and names contain bare ``"`` characters, so quote handling
is off; dates are ``YYYYMMDD``. Files are streamed with :func:`pyarrow.csv.open_csv`,
one block at a time, converted to the CDM types of :mod:`medlake.schema`, and appended
through :meth:`medlake.engine.Engine.load_arrow`, so memory stays flat whatever the
file size.

Errors name the file and the line (the header is line 1): a row with the wrong number
of fields, an integer or date that does not parse, a required value that is empty.
``CONCEPT.csv`` must be present; the other files are optional and a missing one is
reported in the summary. Files the CDM has no table for (``CONCEPT_CPT4.csv``...) are
ignored and reported too.
"""

from __future__ import annotations

import importlib.resources
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from medlake.engine import Engine, TableSpec
from medlake.errors import InputError, MedlakeError
from medlake.log import get_logger
from medlake.schema import table_spec

logger = get_logger(__name__)

#: Athena's file names and the CDM tables they fill, in load order (referenced first).
ATHENA_FILES: dict[str, str] = {
    "VOCABULARY.csv": "vocabulary",
    "DOMAIN.csv": "domain",
    "CONCEPT_CLASS.csv": "concept_class",
    "RELATIONSHIP.csv": "relationship",
    "CONCEPT.csv": "concept",
    "CONCEPT_RELATIONSHIP.csv": "concept_relationship",
    "CONCEPT_ANCESTOR.csv": "concept_ancestor",
    "CONCEPT_SYNONYM.csv": "concept_synonym",
    "DRUG_STRENGTH.csv": "drug_strength",
}

#: Files without which a directory is not an Athena download.
REQUIRED_FILES: tuple[str, ...] = ("CONCEPT.csv",)

#: ``progress(done, total)`` in bytes read across all files; called after every batch.
ProgressCallback = Callable[[int, int], None]

# 16 MiB blocks: a few hundred thousand Athena rows per batch.
DEFAULT_BLOCK_SIZE = 16 << 20
_INTEGER = re.compile(r"^-?[0-9]+$")


@dataclass(frozen=True)
class TableLoad:
    """One table's outcome: the file it came from (None when missing) and rows loaded."""

    table: str
    file_name: str
    rows: int | None  # None: the file was missing, nothing loaded


@dataclass(frozen=True)
class VocabularyLoadSummary:
    """What :func:`load_athena_vocabulary` did, for the CLI, the API and the log."""

    directory: Path
    tables: tuple[TableLoad, ...]
    ignored_files: tuple[str, ...] = ()
    replaced: bool = True
    seconds: float = 0.0

    @property
    def rows(self) -> dict[str, int]:
        """Rows loaded per table (tables whose file was missing are left out)."""
        return {t.table: t.rows for t in self.tables if t.rows is not None}

    @property
    def missing_files(self) -> tuple[str, ...]:
        return tuple(t.file_name for t in self.tables if t.rows is None)

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())

    def as_rows(self) -> list[tuple[str, int | str]]:
        """(table, rows) for display; a missing file shows as ``skipped: no FILE``."""
        return [
            (t.table, t.rows if t.rows is not None else f"skipped: no {t.file_name}")
            for t in self.tables
        ]


@dataclass
class _Progress:
    callback: ProgressCallback | None
    total: int
    done_before: int = 0

    def report(self, position: int) -> None:
        if self.callback is not None:
            self.callback(min(self.done_before + position, self.total), self.total)


def demo_vocabulary_dir() -> Path:
    """The folder of the bundled demo vocabulary (Athena format; see its README.md)."""
    return Path(str(importlib.resources.files("medlake.vocab") / "data"))


def load_demo_vocabulary(
    engine: Engine, *, progress: ProgressCallback | None = None
) -> VocabularyLoadSummary:
    """Replace the lake's vocabulary tables with the bundled demo vocabulary."""
    with importlib.resources.as_file(importlib.resources.files("medlake.vocab") / "data") as path:
        return load_athena_vocabulary(engine, Path(path), replace=True, progress=progress)


def load_athena_vocabulary(
    engine: Engine,
    directory: Path,
    *,
    replace: bool = True,
    progress: ProgressCallback | None = None,
) -> VocabularyLoadSummary:
    """Load the Athena files in ``directory`` into the lake's vocabulary tables.

    With ``replace`` (the default) every vocabulary table this loader knows is emptied
    first, so the lake holds exactly the download (a table whose file is missing ends
    empty and is reported); without it rows are appended. Headers are checked before
    anything is emptied; an error in the middle of a file leaves the tables loaded so
    far in place, and loading again with ``replace`` starts clean.

    Raises:
        InputError: ``directory`` is not a folder, ``CONCEPT.csv`` is missing, or a file
            is malformed (the message names the file and the line).
    """
    started = time.perf_counter()
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"{directory}: not a folder of Athena vocabulary files")
    found, ignored = find_athena_files(directory)
    for name in REQUIRED_FILES:
        if name not in found:
            raise InputError(f"{directory}: no {name}; is this an Athena vocabulary download?")
    specs = {table: table_spec(table) for table in ATHENA_FILES.values()}
    for name, path in found.items():
        read_header(path, specs[ATHENA_FILES[name]])  # fail before touching the lake

    engine.create_schema(list(specs.values()))
    if replace:
        for spec in specs.values():
            _empty_table(engine, spec)

    state = _Progress(progress, sum(path.stat().st_size for path in found.values()))
    loads: list[TableLoad] = []
    for name, table in ATHENA_FILES.items():
        path = found.get(name)
        if path is None:
            logger.info("vocabulary: no %s in %s; %s skipped", name, directory, table)
            loads.append(TableLoad(table, name, None))
            continue
        rows = _load_file(engine, path, specs[table], state)
        state.done_before += path.stat().st_size
        state.report(0)
        logger.info("vocabulary: %s rows from %s into %s", rows, name, table)
        loads.append(TableLoad(table, name, rows))
    return VocabularyLoadSummary(
        directory=directory,
        tables=tuple(loads),
        ignored_files=tuple(ignored),
        replaced=replace,
        seconds=time.perf_counter() - started,
    )


def find_athena_files(directory: Path) -> tuple[dict[str, Path], list[str]]:
    """Athena files present in ``directory`` (names matched case-insensitively), and the
    ``.csv`` files there that no CDM table takes (sorted)."""
    by_upper = {name.upper(): name for name in ATHENA_FILES}
    found: dict[str, Path] = {}
    ignored: list[str] = []
    for path in sorted(directory.iterdir()):
        if not path.is_file() or path.suffix.lower() != ".csv":
            continue
        name = by_upper.get(path.name.upper())
        if name is None:
            ignored.append(path.name)
        else:
            found[name] = path
    return found, ignored


def read_header(path: Path, spec: TableSpec) -> list[str]:
    """The lower-cased column names of ``path``'s header line, checked against ``spec``.

    Columns the table lacks are tolerated (and skipped when reading); a required column
    that is absent is an :class:`InputError`.
    """
    with path.open("rb") as handle:
        raw = handle.readline()
    try:
        line = raw.decode("utf-8-sig").rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path.name}: line 1: the header is not UTF-8 ({exc.reason})") from None
    if not line:
        raise InputError(f"{path.name}: line 1: empty file, expected a header row")
    columns = [column.strip().lower() for column in line.split("\t")]
    missing = [c.name for c in spec.columns if c.required and c.name not in columns]
    if missing:
        raise InputError(
            f"{path.name}: line 1: missing column(s) {', '.join(missing)} "
            f"(is it tab-separated? header: {line[:200]!r})"
        )
    return columns


def read_athena_file(
    path: Path,
    spec: TableSpec,
    *,
    block_size: int = DEFAULT_BLOCK_SIZE,
    on_batch: Callable[[int], None] | None = None,
) -> Iterator[pa.RecordBatch]:
    """Stream ``path`` as record batches typed for ``spec`` (no engine needed).

    Only the columns ``spec`` has are kept. Empty values become null in nullable
    columns and stay empty strings in required text columns (Athena has a few);
    ``on_batch(bytes_read)`` is called after each batch.

    Raises:
        InputError: naming the file and line of the first malformed row or value.
    """
    header = read_header(path, spec)
    keep = [name for name in header if name in spec.column_names]
    seen_invalid: list[pacsv.InvalidRow] = []

    def on_invalid_row(row: pacsv.InvalidRow) -> str:
        seen_invalid.append(row)
        return "error"

    read_options = pacsv.ReadOptions(column_names=header, skip_rows=1, block_size=block_size)
    parse_options = pacsv.ParseOptions(
        delimiter="\t",
        quote_char=False,
        double_quote=False,
        escape_char=False,
        newlines_in_values=False,
        invalid_row_handler=on_invalid_row,
    )
    convert_options = pacsv.ConvertOptions(
        column_types={name: pa.string() for name in header},
        include_columns=keep,
        null_values=[],
        strings_can_be_null=False,
    )
    rows_before = 0
    with pa.OSFile(str(path), "rb") as source:
        try:
            reader = pacsv.open_csv(source, read_options, parse_options, convert_options)
            for batch in reader:
                yield _typed_batch(path, spec, batch, first_line=rows_before + 2)
                rows_before += batch.num_rows
                if on_batch is not None:
                    on_batch(source.tell())
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise _parse_error(path, exc, seen_invalid, rows_before) from None


def _parse_error(
    path: Path, exc: Exception, invalid: Sequence[pacsv.InvalidRow], rows_before: int
) -> InputError:
    if invalid:
        row = invalid[-1]
        # Arrow's streaming reader does not number rows; find the line ourselves.
        line = _first_line_with_fields_other_than(path, row.expected_columns)
        where = f"line {line}" if line is not None else f"after line {rows_before + 1}"
        return InputError(
            f"{path.name}: {where}: expected {row.expected_columns} tab-separated fields, "
            f"found {row.actual_columns}: {row.text[:200]!r}"
        )
    message = str(exc).removeprefix("CSV parse error: ").strip()
    return InputError(f"{path.name}: after line {rows_before + 1}: {message}")


def _first_line_with_fields_other_than(path: Path, expected: int) -> int | None:
    """Physical line number (header = 1) of the first non-empty row with a wrong field count."""
    with path.open("rb") as handle:
        next(handle, None)
        for number, line in enumerate(handle, start=2):
            stripped = line.rstrip(b"\r\n")
            if stripped and stripped.count(b"\t") != expected - 1:
                return number
    return None


def _typed_batch(
    path: Path, spec: TableSpec, batch: pa.RecordBatch, *, first_line: int
) -> pa.RecordBatch:
    """Convert one batch of strings to the spec's types, naming the line of a bad value."""
    arrays: list[pa.Array] = []
    fields: list[pa.Field] = []
    for name, strings in zip(batch.schema.names, batch.columns, strict=True):
        column = spec.column(name)
        target = column.ibis_type.to_pyarrow()
        empty = pc.equal(strings, "")
        if column.required and pa.types.is_string(target):
            arrays.append(strings)
        else:
            if column.required and pc.any(empty).as_py():
                index = pc.index(empty, True).as_py()
                raise InputError(
                    f"{path.name}: line {first_line + index}: {name} is empty but required"
                )
            values = pc.if_else(empty, pa.scalar(None, pa.string()), strings)
            arrays.append(_convert(path, name, values, target, first_line))
        fields.append(pa.field(name, target))
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))


def _convert(
    path: Path, name: str, values: pa.Array, target: pa.DataType, first_line: int
) -> pa.Array:
    if pa.types.is_string(target):
        return values
    try:
        if pa.types.is_date(target):
            parsed = pc.strptime(values, format="%Y%m%d", unit="s", error_is_null=False)
            return pc.cast(parsed, target)
        if pa.types.is_integer(target):
            # Arrow's cast accepts " 12" and "+12"; Athena never writes those.
            ok = pc.match_substring_regex(values, _INTEGER.pattern)
            if not pc.all(ok).as_py():
                raise pa.ArrowInvalid("not an integer")
        return pc.cast(values, target, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        index, value = _first_bad_value(values, target)
        expected = "a YYYYMMDD date" if pa.types.is_date(target) else f"a {target} value"
        raise InputError(
            f"{path.name}: line {first_line + index}: {name} is {value!r}, expected {expected}"
        ) from exc


def _first_bad_value(values: pa.Array, target: pa.DataType) -> tuple[int, str]:
    """Index and text of the first value that does not convert (the slow, error path)."""
    for index, value in enumerate(values.to_pylist()):
        if value is None:
            continue
        if pa.types.is_date(target):
            ok = len(value) == 8 and value.isdigit() and _valid_date(value)
        elif pa.types.is_integer(target):
            ok = bool(_INTEGER.match(value))
        else:
            try:
                float(value)
                ok = True
            except ValueError:
                ok = False
        if not ok:
            return index, value
    return 0, ""


def _valid_date(text: str) -> bool:
    try:
        time.strptime(text, "%Y%m%d")
    except ValueError:
        return False
    return True


@dataclass
class _FileReader:
    """Batches of one file, keeping the error raised while the engine pulls them."""

    path: Path
    spec: TableSpec
    progress: _Progress
    error: MedlakeError | None = field(default=None)

    def batches(self) -> Iterator[pa.RecordBatch]:
        try:
            yield from read_athena_file(self.path, self.spec, on_batch=self.progress.report)
        except MedlakeError as exc:
            self.error = exc
            raise


def _load_file(engine: Engine, path: Path, spec: TableSpec, progress: _Progress) -> int:
    reader = _FileReader(path, spec, progress)
    try:
        return engine.load_arrow(spec.name, reader.batches())
    except Exception:
        # A backend pulling batches from native code may wrap our error in its own.
        if reader.error is not None:
            raise reader.error from None
        raise


def _empty_table(engine: Engine, spec: TableSpec) -> None:
    """Empty a vocabulary table by recreating it: fast, and the same on every engine."""
    engine.drop_table(spec.name)
    engine.create_schema([spec])
