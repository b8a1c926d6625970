"""Omics sample registration: the biobank manifest, sample sheets and registry rows.

A hospital biobank delivers, next to its data files, a *sample manifest* linking each
sample to the patient it came from (the synthetic hospital's ``omics/samples.csv``)::

    sample_id,assay,source_system,source_patient_id,collected_date,specimen_type,file_name

Required columns: ``sample_id``, ``assay``, ``source_patient_id``; the others are
optional (``source_system`` defaults to the batch's source system). Comma- or
tab-separated, UTF-8 (with or without BOM), else GB18030. Dates ``YYYY-MM-DD`` or
``YYYYMMDD``. A row that cannot be used (a required field empty, a bad date, the same
``(sample_id, assay)`` twice with different content) goes to quarantine as
``<file>:<line>``; the other rows still count. Manifests are small (one row per
sample), so they are read whole.

Data readers (PLINK, pgen, VCF, counts) look each sample up by ``(sample_id, assay)``
in the manifest given as companion ``"manifest"``; a sample it does not list is
registered with the batch's source system and no source patient id (the EMPI cannot
link it until a manifest arrives), unless the reader option
``sample_id_is_patient_id`` is true, for files whose sample ids are the source
system's patient ids.

A manifest ingested alone (:class:`SampleManifestReader`, ``format =
"sample-manifest"``) cannot create registry rows: ``omics_sample.file_uri`` and
``sha256`` are required and only a data file supplies them. It yields *link updates*
instead: ``omics_samples`` rows whose ``file_uri``, ``file_format`` and ``sha256`` are
null. The writer applies such a row to the registered ``(sample_id, assay)`` row
(``source_system``, ``source_patient_id``, ``collected_date``, then the person link)
and counts rows naming no registered sample as unmatched (the manifest stays in
landing; ingesting it again after the data registers the links). This keeps every
registry row pointing at a real stored file, and lets a corrected manifest re-link
samples without re-sending genotype files.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pyarrow as pa

from medlake.errors import InputError
from medlake.ingest.staging import (
    OMICS_SAMPLE_COLUMNS,
    ParsedChunk,
    QuarantineEntry,
    SourceContext,
)

MANIFEST_REQUIRED = ("sample_id", "assay", "source_patient_id")
_DATE = re.compile(r"^(\d{4})-?(\d{2})-?(\d{2})$")
SAMPLE_SCHEMA = pa.schema([pa.field(n, t) for n, t in OMICS_SAMPLE_COLUMNS.items()])
MAX_SMALL_FILE = 256 << 20  # manifests and sample sheets larger than this are not sheets


@dataclass(frozen=True)
class SampleLink:
    """Where a sample came from, as the manifest says."""

    source_system: str
    source_patient_id: str
    collected_date: dt.date | None


@dataclass(frozen=True)
class StoredFile:
    """The registry's view of a stored data file."""

    file_uri: str  # relative to omics/
    file_format: str  # bed, pgen, parquet
    sha256: str


def decode_text(raw: bytes, name: str) -> str:
    """UTF-8 (BOM stripped), else GB18030 (Chinese Windows exports), else InputError."""
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise InputError(f"{name}: neither UTF-8 nor GB18030 text")


def read_small_text(path: Path, name: str) -> str:
    """A manifest or sample sheet as text (bounded size: these are one line per sample)."""
    if path.stat().st_size > MAX_SMALL_FILE:
        raise InputError(f"{name}: larger than {MAX_SMALL_FILE >> 20} MiB, not a sample sheet")
    return decode_text(path.read_bytes(), name)


def parse_date(value: str) -> dt.date | None:
    """``YYYY-MM-DD`` or ``YYYYMMDD``; empty gives None; anything else raises ValueError."""
    value = value.strip()
    if not value:
        return None
    match = _DATE.match(value)
    if match is None:
        raise ValueError(f"unparseable date {value!r}")
    return dt.date(*map(int, match.groups()))


def _delimited_rows(text: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of a comma- or tab-separated text, by its header line."""
    first = text.split("\n", 1)[0]
    delimiter = "\t" if "\t" in first else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    for row in reader:
        if row and any(cell.strip() for cell in row):
            yield reader.line_num, [cell.strip() for cell in row]


def header_columns(head: bytes) -> list[str]:
    """Lower-cased column names of the first line of ``head`` (comma or tab separated)."""
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff")
    first = text.split("\n", 1)[0].rstrip("\r")
    delimiter = "\t" if "\t" in first else ","
    return [c.strip().strip('"').lower() for c in first.split(delimiter)]


def looks_like_manifest(head: bytes) -> bool:
    """True when the first line names the manifest's required columns."""
    return set(MANIFEST_REQUIRED) <= set(header_columns(head))


@dataclass
class Manifest:
    """A parsed sample manifest: links by ``(sample_id, assay)`` and quarantined rows."""

    links: dict[tuple[str, str], SampleLink]
    quarantine: list[QuarantineEntry]
    rows_read: int


def parse_manifest(path: Path, name: str, default_system: str) -> Manifest:
    """Read a sample manifest; unusable rows go to quarantine (see module docstring)."""
    rows = _delimited_rows(read_small_text(path, name))
    try:
        _, header = next(rows)
    except StopIteration:
        raise InputError(f"{name}: empty sample manifest") from None
    columns = {c.lower(): i for i, c in enumerate(header)}
    missing = [c for c in MANIFEST_REQUIRED if c not in columns]
    if missing:
        raise InputError(f"{name}: not a sample manifest, missing columns {missing}")

    def cell(row: list[str], column: str) -> str:
        i = columns.get(column)
        return row[i] if i is not None and i < len(row) else ""

    links: dict[tuple[str, str], SampleLink] = {}
    quarantine: list[QuarantineEntry] = []
    count = 0
    for line, row in rows:
        count += 1
        raw = ",".join(row)
        where = f"{name}:{line}"
        empty = [c for c in MANIFEST_REQUIRED if not cell(row, c)]
        if empty:
            quarantine.append(QuarantineEntry(where, "required field empty", raw, empty[0]))
            continue
        try:
            collected = parse_date(cell(row, "collected_date"))
        except ValueError as exc:
            quarantine.append(QuarantineEntry(where, str(exc), raw, "collected_date"))
            continue
        key = (cell(row, "sample_id"), cell(row, "assay").lower())
        link = SampleLink(
            cell(row, "source_system") or default_system, cell(row, "source_patient_id"), collected
        )
        if key in links and links[key] != link:
            reason = f"sample {key[0]} ({key[1]}) listed again with different content"
            quarantine.append(QuarantineEntry(where, reason, raw, "sample_id"))
            continue
        links[key] = link
    return Manifest(links, quarantine, count)


def parse_sample_sheet(path: Path, name: str) -> dict[str, dt.date]:
    """Collection dates from an RNA-seq sample sheet (``sample_id`` and ``collection_date``
    or ``collected_date``); other columns are kept in the stored copy, not the registry."""
    rows = _delimited_rows(read_small_text(path, name))
    try:
        _, header = next(rows)
    except StopIteration:
        return {}
    columns = {c.lower(): i for i, c in enumerate(header)}
    if "sample_id" not in columns:
        raise InputError(f"{name}: sample sheet without a sample_id column")
    date_col = columns.get("collection_date", columns.get("collected_date"))
    dates: dict[str, dt.date] = {}
    if date_col is None:
        return dates
    for line, row in rows:
        if len(row) <= max(columns["sample_id"], date_col):
            raise InputError(f"{name}:{line}: too few fields")
        try:
            date = parse_date(row[date_col])
        except ValueError as exc:
            raise InputError(f"{name}:{line}: {exc}") from None
        if date is not None:
            dates[row[columns["sample_id"]]] = date
    return dates


def context_manifest(context: SourceContext) -> Manifest | None:
    """The companion manifest of a data file, if one was given."""
    path = context.companions.get("manifest")
    if path is None:
        return None
    return parse_manifest(path, f"{context.original_name} manifest", context.source_system)


def sample_rows(
    context: SourceContext,
    sample_ids: Iterable[str],
    assay: str,
    stored: StoredFile,
    manifest: Manifest | None,
    dates: Mapping[str, dt.date] | None = None,
) -> pa.Table:
    """Registry rows (OMICS_SAMPLE_COLUMNS) for samples of one stored file, linked by
    the manifest where it lists them (see module docstring)."""
    by_sample = bool(context.options.get("sample_id_is_patient_id"))
    links = manifest.links if manifest is not None else {}
    dates = dates or {}
    columns: dict[str, list[object]] = {name: [] for name in OMICS_SAMPLE_COLUMNS}
    for sample_id in sample_ids:
        link = links.get((sample_id, assay))
        patient = link.source_patient_id if link else (sample_id if by_sample else None)
        values = {
            "sample_id": sample_id,
            "assay": assay,
            "file_uri": stored.file_uri,
            "file_format": stored.file_format,
            "sha256": stored.sha256,
            "source_system": link.source_system if link else context.source_system,
            "source_patient_id": patient,
            "collected_date": (link.collected_date if link else None) or dates.get(sample_id),
        }
        for name, value in values.items():
            columns[name].append(value)
    return pa.table(columns, schema=SAMPLE_SCHEMA)


def link_update_rows(manifest: Manifest) -> pa.Table:
    """Link updates (null file columns) for every usable manifest row, in file order."""
    columns: dict[str, list[object]] = {name: [] for name in OMICS_SAMPLE_COLUMNS}
    for (sample_id, assay), link in manifest.links.items():
        values = {
            "sample_id": sample_id,
            "assay": assay,
            "source_system": link.source_system,
            "source_patient_id": link.source_patient_id,
            "collected_date": link.collected_date,
        }
        for name in OMICS_SAMPLE_COLUMNS:
            columns[name].append(values.get(name))
    return pa.table(columns, schema=SAMPLE_SCHEMA)


class SampleManifestReader:
    """``format = "sample-manifest"``: a biobank manifest alone, as link updates."""

    format: ClassVar[str] = "sample-manifest"

    def sniff(self, path: Path, head: bytes) -> bool:
        return looks_like_manifest(head)

    def read(self, context: SourceContext) -> Iterator[ParsedChunk]:
        manifest = parse_manifest(context.path, context.original_name, context.source_system)
        chunk = ParsedChunk(quarantine=list(manifest.quarantine), records_read=manifest.rows_read)
        rows = link_update_rows(manifest)
        if rows.num_rows:
            chunk.omics_samples.append(rows)
        yield chunk
