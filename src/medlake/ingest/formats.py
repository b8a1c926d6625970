"""Format readers by name, loaded lazily, and detection of a file's format by sniffing.

Each reader lives in its own module and is named here by module path, so importing
this module costs nothing and a reader module that is missing or broken only takes its
own formats out of detection (with a warning) instead of breaking ingest of the others.
Detection reads the first KiB of the file and asks each reader in turn, most specific
first (binary magics and JSON before the generous delimited-text sniffer).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from medlake.errors import InputError, UsageError
from medlake.ingest.staging import Reader
from medlake.log import get_logger

logger = get_logger(__name__)

SNIFF_BYTES = 1024

# format -> "module:Class", in sniffing order.
READER_CLASSES: dict[str, str] = {
    "fhir": "medlake.ingest.fhir:FhirReader",
    "hl7v2": "medlake.ingest.hl7v2:Hl7v2Reader",
    "plink": "medlake.ingest.omics:PlinkBedReader",
    "pgen": "medlake.ingest.omics:PgenReader",
    "vcf": "medlake.ingest.omics:VcfReader",
    "counts": "medlake.ingest.omics:CountsReader",
    "h5ad": "medlake.ingest.omics_h5ad:H5adReader",
    "sample-manifest": "medlake.ingest.omics:SampleManifestReader",
    "xlsx": "medlake.ingest.excel_mapping:ExcelMappingReader",
    "csv": "medlake.ingest.csv_mapping:CsvMappingReader",
}

# Formats whose records are omics files, not clinical rows (ingested after identities).
OMICS_FORMATS = frozenset({"plink", "pgen", "vcf", "counts", "h5ad", "sample-manifest"})


@dataclass(frozen=True)
class UnavailableReader:
    """A registered format whose reader module could not be imported."""

    format: str
    reason: str


_loaded: dict[str, Reader | UnavailableReader] = {}


def known_formats() -> list[str]:
    """Every registered format name, in sniffing order."""
    return list(READER_CLASSES)


def reader_for(format: str) -> Reader:
    """The reader of ``format``; a :class:`UsageError` for an unknown or unavailable one."""
    if format not in READER_CLASSES:
        raise UsageError(f"unknown format {format!r}; known: {', '.join(READER_CLASSES)}")
    reader = _load(format)
    if isinstance(reader, UnavailableReader):
        raise UsageError(f"the {format} reader is not available: {reader.reason}")
    return reader


def available_readers() -> list[Reader]:
    """The readers that import, in sniffing order."""
    readers = []
    for format in READER_CLASSES:
        reader = _load(format)
        if not isinstance(reader, UnavailableReader):
            readers.append(reader)
    return readers


def read_head(path: Path) -> bytes:
    """The first KiB of ``path``, as readers' ``sniff`` receive it."""
    try:
        with path.open("rb") as handle:
            return handle.read(SNIFF_BYTES)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from exc


def sniff_format(path: Path, head: bytes | None = None) -> str | None:
    """The format of the file at ``path``, or None when no reader recognizes it."""
    head = read_head(path) if head is None else head
    for reader in available_readers():
        try:
            if reader.sniff(path, head):
                return reader.format
        except Exception as exc:  # a sniffer's bug must not stop detection by the others
            logger.warning("the %s sniffer failed on %s: %s", reader.format, path, exc)
    return None


def detect_format(path: Path, forced: str | None = None) -> str:
    """``forced`` if given (checked to exist), else the sniffed format; else InputError."""
    if forced is not None:
        reader_for(forced)
        return forced
    detected = sniff_format(path)
    if detected is None:
        raise InputError(
            f"{path}: not a format medlake reads (tried {', '.join(_available_names())}); "
            "use --format to force one"
        )
    return detected


def _available_names() -> list[str]:
    return [reader.format for reader in available_readers()]


def _load(format: str) -> Reader | UnavailableReader:
    if format in _loaded:
        return _loaded[format]
    module_name, _, class_name = READER_CLASSES[format].partition(":")
    try:
        module = importlib.import_module(module_name)
        reader: Reader | UnavailableReader = getattr(module, class_name)()
    except Exception as exc:  # missing module or optional dependency: the others go on
        reason = f"{type(exc).__name__}: {exc}"
        logger.warning("format %s unavailable (%s)", format, reason)
        reader = UnavailableReader(format, reason)
    _loaded[format] = reader
    return reader
