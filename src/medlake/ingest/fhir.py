"""FHIR R4 reader: bulk NDJSON and Bundles into staged OMOP rows, fast and lossless.

Inputs: bulk-export NDJSON (one resource per line, any mix of types; a line may also
be a Bundle) and JSON documents holding one Bundle (``collection``, ``transaction``,
``searchset``...) or one resource. Each line is parsed with ``orjson`` and mapped by a
plain function per resource type (:mod:`medlake.ingest.fhir_resources`) straight into
row tuples; Arrow tables are built once per chunk of at most ``chunk_size`` records
(50,000), so memory does not grow with the file (a Bundle *document* is read whole:
Bundles are transaction-sized).

**Patient ids.** ``_source_patient_id`` is always the FHIR logical id ``Patient.id``;
a reference ``Patient/<id>`` (or ``http://.../Patient/<id>``, or a Bundle's
``urn:uuid:`` full URL) gives ``<id>``. This needs no state across files, so bulk
exports that put patients in their own file, files landed in any order, and chunk
boundaries all agree. The MRN and other identifiers stay in the landed file; the
resident ID goes to the patient row (and so to ``pii_person``). ``Patient.link``
``replaced-by``/``replaces`` become :class:`~medlake.ingest.staging.PatientMerge` s in
the same id space.

**Provenance.** ``_source_version`` is ``meta.versionId`` when it is an integer, else
``meta.lastUpdated`` in epoch ms, else the batch's receive time. ``_record_hash`` hashes
the NDJSON line as received; a Bundle entry's hash is that of its resource re-serialized
with sorted keys (entries have no bytes of their own). A visit's ``_source_record_id``
is the Encounter id; other rows use ``Type/id`` (see the resources module).

**Entered in error.** A resource whose ``status`` (Condition, AllergyIntolerance:
``verificationStatus``) is ``entered-in-error`` is mapped as usual and its rows flagged
``_retracted``: as a newer version of the record, the writer removes the CDM rows the
earlier versions made and keeps the provenance (``source_record``) of every version.

**Quarantine** (location ``<original name>:<line>``, for a Bundle document
``<name>:entry <n>``): malformed JSON, a line that is no resource, a missing required
element, a bad reference, an unknown code system, an unparseable date, a transaction
``DELETE`` (deletes are not applied), and any resource malformed in a way the mapper
did not foresee. Resource types medlake does not map are counted in
``ParsedChunk.skipped``. A file whose first lines hold no FHIR resource at all raises
:class:`~medlake.errors.InputError`.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from hashlib import blake2b
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pyarrow as pa

from medlake.errors import InputError
from medlake.ingest import fhir_lines
from medlake.ingest import fhir_values as v
from medlake.ingest.fhir_resources import COLUMNS, MAPPERS, Record, StagedRows
from medlake.ingest.staging import (
    PATIENT_COLUMNS,
    RETRACTED,
    ParsedChunk,
    QuarantineEntry,
    SourceContext,
    staging_schema,
)

CHUNK_SIZE = 50_000
#: How many leading lines may fail to parse before a file is judged not FHIR at all.
SNIFF_LINES = 100
_MAX_DEPTH = 2  # Bundles inside Bundles inside a file
_NO_URLS: dict[str, str] = {}
_FRESH_HASH = blake2b(digest_size=16).copy  # staging.record_hash's state, before any data


def _schema(table: str) -> pa.Schema:
    columns = COLUMNS[table]
    if table == "patient":
        return pa.schema([pa.field(name, PATIENT_COLUMNS[name]) for name in columns])
    return staging_schema(table, columns)


SCHEMAS: dict[str, pa.Schema] = {table: _schema(table) for table in COLUMNS}
# Row tuples become one struct array (a C loop), timestamps first as ISO strings.
ROW_TYPES: dict[str, pa.StructType] = {
    table: pa.struct(
        [pa.field(f.name, pa.string()) if pa.types.is_timestamp(f.type) else f for f in schema]
    )
    for table, schema in SCHEMAS.items()
}


class _Chunk:
    """The chunk in the making: staged row tuples plus the ParsedChunk's other parts.

    One object serves a whole file: :meth:`take` hands out what was gathered and starts
    afresh, so generators holding it (Bundles) keep writing to the current chunk.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.staged = StagedRows()
        self.parsed = ParsedChunk()
        self.record = Record("", 0, "", _NO_URLS)

    def __len__(self) -> int:
        return self.parsed.records_read

    def quarantine(self, location: str | int, reason: str, raw: str, field: str | None) -> None:
        """Quarantine a record; an int ``location`` is a line number of the file."""
        where = f"{self.name}:{location}" if type(location) is int else str(location)
        self.parsed.quarantine.append(QuarantineEntry(where, reason, raw, field))

    def take(self) -> ParsedChunk:
        parsed, staged = self.parsed, self.staged
        self.staged, self.parsed = StagedRows(), ParsedChunk()
        for table in COLUMNS:
            rows = staged.rows[table]
            if not rows:
                continue
            batch = self._python_rows(table, rows, staged.retracted.get(table))
            if table == "patient":
                parsed.patients.append(batch)
            else:
                parsed.add_rows(table, batch)
        parsed.merges.extend(staged.merges)
        return parsed

    @staticmethod
    def _python_rows(table: str, rows: list[tuple[object, ...]],
                     retracted: list[int] | None) -> pa.Table:  # fmt: skip
        schema = SCHEMAS[table]
        columns = pa.array(rows, type=ROW_TYPES[table]).flatten()
        arrays = [
            c if c.type == f.type else c.cast(f.type) for c, f in zip(columns, schema, strict=True)
        ]
        batch = pa.Table.from_arrays(arrays, schema=schema)
        if retracted:
            flags = [False] * batch.num_rows
            for position in retracted:
                flags[position] = True
            batch = batch.append_column(RETRACTED, pa.array(flags, pa.bool_()))
        return batch


class FhirReader:
    """Reads FHIR R4 NDJSON and Bundles (see the module docstring for the mapping)."""

    format: ClassVar[str] = "fhir"

    def __init__(self, chunk_size: int = CHUNK_SIZE) -> None:
        self.chunk_size = chunk_size

    def sniff(self, path: Path, head: bytes) -> bool:
        """A JSON object naming its ``resourceType`` near the start of the file."""
        start = head.lstrip(b"\xef\xbb\xbf \t\r\n")
        return start.startswith(b"{") and b'"resourceType"' in head

    def read(self, context: SourceContext) -> Iterator[ParsedChunk]:
        kind = self._kind(context.path)
        if kind == "empty":
            yield ParsedChunk()
        elif kind == "ndjson":
            yield from self._read_ndjson(context)
        else:
            yield from self._read_document(context)

    def chunk_plan(self, path: Path, parts: int = 1) -> list[tuple[int, int, int]] | None:
        """Where the chunks :meth:`read` gives of a bulk NDJSON file lie, so that several
        processes can parse them at once: ``(start byte, end byte, first line number)``
        per chunk, in order; None for a file that is not plain NDJSON of resources (a
        line that may hold a Bundle counts its entries, so only reading tells).

        With ``parts`` (a divisor of the chunk size), each chunk's range is given as that
        many consecutive pieces (the last chunk may have fewer): parsed apart and joined
        (:meth:`ParsedChunk.joined`), every ``parts`` pieces make the chunk :meth:`read`
        gives, and a file of one chunk can still be parsed by several processes."""
        if self._kind(path) != "ndjson":
            return None
        if parts < 1 or self.chunk_size % parts:
            parts = 1
        return fhir_lines.chunk_ranges(path, self.chunk_size // parts)

    def read_range(self, context: SourceContext, start: int, end: int,
                   first_line: int) -> ParsedChunk:  # fmt: skip
        """The chunk of :meth:`chunk_plan` at bytes ``start:end`` (its first line's number)."""
        with context.path.open("rb") as f:
            f.seek(start)
            data = f.read(end - start)
        chunk = _Chunk(context.original_name)
        lines = enumerate(io.BytesIO(data), first_line)  # split at b"\n" only, as a file is
        for _ in self._python_lines(lines, (context.original_name, context.default_version),
                                    chunk):  # fmt: skip
            pass  # (full at its last line: a planned chunk holds one chunk's records)
        return chunk.take()

    def _kind(self, path: Path) -> str:
        """``ndjson`` when one of the first lines is a resource on its own, ``empty`` for
        a blank file, else ``document``."""
        blank = True
        with path.open("rb") as f:
            for number, line in enumerate(f):
                if number >= SNIFF_LINES:
                    break
                if not line.strip():
                    continue
                blank = False
                try:
                    doc = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if type(doc) is dict and type(doc.get("resourceType")) is str:
                    return "ndjson"
        return "empty" if blank and path.stat().st_size < 1 << 20 else "document"

    def _read_ndjson(self, context: SourceContext) -> Iterator[ParsedChunk]:
        chunk = _Chunk(context.original_name)
        with context.path.open("rb") as f:
            at = (context.original_name, context.default_version)
            for _ in self._python_lines(enumerate(f, 1), at, chunk):
                yield chunk.take()
            any_line = f.tell() > 0
        if len(chunk) or not any_line:
            yield chunk.take()

    def _python_lines(self, lines: Iterable[tuple[int, bytes]], at: tuple[str, int],
                      chunk: _Chunk) -> Iterator[None]:  # fmt: skip
        """Stage NDJSON lines into ``chunk`` one by one, yielding whenever it is full.

        ``at``: the file's original name and default version (read once per file).
        """
        (name, default), size = at, self.chunk_size
        loads, parsed = orjson.loads, chunk.parsed  # (chunk.take() gives a new ``parsed``)
        for number, line in lines:
            try:
                resource = loads(line)
            except orjson.JSONDecodeError as e:
                if not line.strip():
                    continue
                parsed.records_read += 1
                chunk.quarantine(number, f"malformed JSON: {e}", _text(line), None)
            else:
                if type(resource) is dict and resource.get("resourceType") == "Bundle":
                    for _ in _bundle(resource, f"{name}:{number}", default, chunk, 1):
                        if len(chunk) >= size:
                            yield
                            parsed = chunk.parsed
                    continue
                parsed.records_read += 1
                _stage(resource, line, number, default, _NO_URLS, chunk)
            if parsed.records_read >= size:
                yield
                parsed = chunk.parsed

    def _read_document(self, context: SourceContext) -> Iterator[ParsedChunk]:
        name = context.original_name
        try:
            doc = orjson.loads(context.path.read_bytes())
        except orjson.JSONDecodeError as e:
            raise InputError(f"{name}: not FHIR JSON (not NDJSON, not a document: {e})") from None
        if type(doc) is not dict or type(doc.get("resourceType")) is not str:
            raise InputError(f"{name}: not FHIR JSON (no resourceType)")
        chunk = _Chunk(name)
        if doc["resourceType"] != "Bundle":
            chunk.parsed.records_read += 1
            _stage(doc, None, 1, context.default_version, _NO_URLS, chunk, _dump(doc))
        else:
            for _ in _bundle(doc, name, context.default_version, chunk, 1):
                if len(chunk) >= self.chunk_size:
                    yield chunk.take()
        yield chunk.take()


def _bundle(bundle: dict[str, Any], where: str, default: int, chunk: _Chunk,
            depth: int) -> Iterator[None]:  # fmt: skip
    """Stage a Bundle's entries into ``chunk``, yielding after each entry read."""
    entries = bundle.get("entry") or []
    if type(entries) is not list:
        chunk.parsed.records_read += 1
        chunk.quarantine(where, "Bundle.entry is not a list", _dump(bundle), "Bundle.entry")
        yield
        return
    urls: dict[str, str] = {}
    for entry in entries:
        if type(entry) is dict and type(entry.get("fullUrl")) is str:
            resource = entry.get("resource")
            if type(resource) is dict and type(resource.get("resourceType")) is str:
                rid = resource.get("id")
                rid = rid if type(rid) is str and rid else _id_from_url(entry["fullUrl"])
                urls[entry["fullUrl"]] = f"{resource['resourceType']}/{rid}"
    for n, entry in enumerate(entries, 1):
        location = f"{where} entry {n}" if ":" in where else f"{where}:entry {n}"
        resource = entry.get("resource") if type(entry) is dict else None
        nested = type(resource) is dict and resource.get("resourceType") == "Bundle"
        if nested and depth < _MAX_DEPTH:
            yield from _bundle(resource, location, default, chunk, depth + 1)
            continue
        chunk.parsed.records_read += 1
        raw = _dump(entry)
        request = entry.get("request") if type(entry) is dict else None
        if type(request) is dict and request.get("method") == "DELETE":
            chunk.quarantine(location, "DELETE in a transaction Bundle is not applied", raw,
                             "Bundle.entry.request.method")  # fmt: skip
        elif type(resource) is not dict:
            chunk.quarantine(location, "entry without a resource", raw, "Bundle.entry.resource")
        else:
            if "id" not in resource and type(entry.get("fullUrl")) is str:
                resource = {**resource, "id": _id_from_url(entry["fullUrl"])}
            _stage(resource, None, location, default, urls, chunk, raw)
        yield


def _stage(resource: object, line: bytes | None, location: str | int, default: int,
           urls: dict[str, str], chunk: _Chunk, raw: str | None = None) -> None:  # fmt: skip
    """Map one resource into ``chunk``: rows, a skip count or a quarantine entry."""
    if type(resource) is not dict:
        chunk.quarantine(location, "not a JSON object", raw or _text(line), None)
        return
    rtype = resource.get("resourceType")
    mapper = MAPPERS.get(rtype) if type(rtype) is str else None  # type: ignore[arg-type]
    if mapper is None:
        if type(rtype) is str and rtype:
            chunk.parsed.skipped[rtype] += 1
        else:
            chunk.quarantine(location, "not a FHIR resource (no resourceType)",
                             raw or _text(line), "resourceType")  # fmt: skip
        return
    rid = resource.get("id")
    try:
        if type(rid) is not str or not rid:
            raise v.Reject("missing required field", f"{rtype}.id")
        version = v.version_of(resource, default) if "meta" in resource else default
        # staging.record_hash, inlined: this runs once per line. A copy of a fresh state
        # costs less than the constructor, which parses its keyword for every line.
        state = _FRESH_HASH()
        state.update(
            line if line is not None else orjson.dumps(resource, option=orjson.OPT_SORT_KEYS)
        )
        digest = state.hexdigest()
        # (_entered_in_error's cheap half inlined: it runs once per resource)
        # One Record per chunk, refilled for each resource (mappers keep none of it).
        rec = chunk.record
        rec.id = rid
        rec.version = version
        rec.digest = digest
        rec.urls = urls
        if resource.get("status") != "entered-in-error" and (
            "verificationStatus" not in resource or not _entered_in_error(resource)
        ):
            mapper(resource, rec, chunk.staged)
        else:  # staged as usual, its rows flagged: the writer removes what it had made
            rows = chunk.staged.rows
            before = {table: len(staged) for table, staged in rows.items()}
            mapper(resource, rec, chunk.staged)
            for table, staged in rows.items():
                if len(staged) > before[table] and table != "patient":
                    positions = chunk.staged.retracted.setdefault(table, [])
                    positions.extend(range(before[table], len(staged)))
    except v.Reject as e:
        field = e.field if e.field.startswith(rtype) else f"{rtype}.{e.field}"
        chunk.quarantine(location, e.reason, raw or _text(line), field)
    except (AttributeError, TypeError, ValueError, KeyError, IndexError, OverflowError) as e:
        chunk.quarantine(location, f"malformed {rtype}: {type(e).__name__}: {e}"[:300],
                         raw or _text(line), rtype)  # fmt: skip


def _entered_in_error(resource: dict[str, Any]) -> bool:
    """``status`` (or, for Condition and AllergyIntolerance, ``verificationStatus``)
    says the resource was entered in error."""
    if resource.get("status") == "entered-in-error":
        return True
    verification = resource.get("verificationStatus")
    if type(verification) is dict and type(verification.get("coding")) is list:
        return any(
            type(c) is dict and c.get("code") == "entered-in-error" for c in verification["coding"]
        )
    return False


def _id_from_url(url: str) -> str:
    """The id part of a full URL: ``urn:uuid:<id>`` or ``.../Type/<id>``."""
    return url.rsplit(":", 1)[-1] if url.startswith("urn:") else url.rstrip("/").rsplit("/", 1)[-1]


def _text(line: bytes | None) -> str:
    return "" if line is None else line.rstrip(b"\r\n").decode("utf-8", "replace")


def _dump(value: object) -> str:
    return orjson.dumps(value).decode()
