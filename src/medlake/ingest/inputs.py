"""What to ingest, in which order: files from paths, formats, companions, source systems.

``medlake ingest PATH...`` takes files and folders in any mix. This module turns them
into an ordered list of :class:`IngestInput` s:

- folders are walked (hidden files skipped); each file's format is sniffed, or forced
  with ``--format``. A file named on the command line that no reader recognizes is an
  :class:`~medlake.errors.InputError` naming it; one found in a folder is listed as
  ignored (a FHIR bulk ``manifest.json``, a README), as is a delimited or Excel file
  the mapping has no entry for.
- companion files travel with their data file instead of being inputs: a PLINK ``.bed``
  with the ``.bim``/``.fam`` of the same stem, a ``.pgen`` with ``.pvar``/``.psam``, and —
  when the call holds omics data files — the sample manifest (``samples.csv``,
  ``*manifest*.csv``), sample sheet (``*_samples.tsv``) and gene table (``genes.tsv``).
- the source system is ``--source``, else the CSV mapping's ``source_system``, else the
  nearest folder named like a known source system (``his``, ``lis``, ``emr``...), else
  the name of the folder given.
- identities come first: clinical sources before omics (samples link to known patients),
  then within a source patient files, then visits/encounters, then the rest, and files
  by name (HL7 day files are named by date, so they run in date order).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from medlake.errors import InputError
from medlake.ingest.formats import OMICS_FORMATS, detect_format, read_head, sniff_format

KNOWN_SOURCE_SYSTEMS = ("his", "lis", "emr", "ris", "pacs", "biobank", "omics")
_SOURCE_ORDER = {"his": 0, "emr": 1, "lis": 2}
#: Formats read through the mapping file (``--mapping``): a file it has no entry for is ignored.
MAPPED_FORMATS = frozenset({"csv", "xlsx"})
_FILE_COMPANIONS = {".bed": ("bim", "fam"), ".pgen": ("pvar", "psam")}
_CALL_COMPANIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("samples", ("*_samples.tsv", "*_samples.csv", "*_samples.txt")),
    ("genes", ("genes.tsv", "genes.csv", "*_genes.tsv", "*_genes.csv")),
    ("manifest", ("samples.csv", "samples.tsv", "*manifest*.csv", "*manifest*.tsv")),
)
_DATA_OMICS_FORMATS = OMICS_FORMATS - {"sample-manifest"}


@dataclass(frozen=True)
class IngestInput:
    """One file to land and ingest as one batch."""

    path: Path
    format: str
    source_system: str
    original_name: str  # relative to the folder given (what mapping patterns match)
    companions: dict[str, Path] = field(default_factory=dict)


@dataclass(frozen=True)
class IngestPlan:
    inputs: list[IngestInput]
    ignored: list[str]  # files found in folders that no reader (or mapping) takes


@dataclass(frozen=True)
class _Found:
    path: Path
    root: Path  # the folder given, or the file's own folder
    explicit: bool


def plan_inputs(
    paths: Sequence[Path],
    *,
    format: str | None = None,
    source_system: str | None = None,
    options: Mapping[str, object] | None = None,
) -> IngestPlan:
    """The ordered inputs for ``paths`` (see the module docstring for the rules)."""
    options = options or {}
    found = _expand(paths)
    mapping = _mapping_spec(options.get("mapping"))
    formats: dict[Path, str] = {}
    ignored: list[str] = []
    for item in found:
        if item.explicit:
            formats[item.path] = detect_format(item.path, format)
            continue
        detected = format or sniff_format(item.path, read_head(item.path))
        if detected is None or (detected in MAPPED_FORMATS and not _mapped(mapping, item)):
            ignored.append(str(item.path))
        else:
            formats[item.path] = detected

    companions, taken = _companions(found, formats)
    inputs = []
    for item in found:
        if item.path not in formats or item.path in taken:
            continue
        system = source_system or _source_system(item, mapping, formats[item.path])
        inputs.append(
            IngestInput(
                path=item.path,
                format=formats[item.path],
                source_system=system,
                original_name=_original_name(item),
                companions=companions.get(item.path, {}),
            )
        )
    ignored = [p for p in ignored if Path(p) not in taken]
    return IngestPlan(sorted(inputs, key=_ingest_order), ignored)


def _expand(paths: Sequence[Path]) -> list[_Found]:
    found: dict[Path, _Found] = {}
    for given in paths:
        path = Path(given).expanduser()
        if path.is_dir():
            root = path.resolve()
            for file in sorted(root.rglob("*")):
                relative = file.relative_to(root)
                if file.is_file() and not any(part.startswith(".") for part in relative.parts):
                    found.setdefault(file, _Found(file, root, explicit=False))
        elif path.is_file():
            file = path.resolve()
            found[file] = _Found(file, file.parent, explicit=True)
        else:
            raise InputError(f"{path}: no such file or folder")
    return list(found.values())


def _companions(
    found: list[_Found], formats: dict[Path, str]
) -> tuple[dict[Path, dict[str, Path]], set[Path]]:
    """Companion files by data file, and every file taken as a companion."""
    by_path = {item.path for item in found}
    companions: dict[Path, dict[str, Path]] = {}
    taken: set[Path] = set()
    for path, fmt in formats.items():
        roles = _FILE_COMPANIONS.get(path.suffix.lower())
        if roles and fmt in _DATA_OMICS_FORMATS:
            for role in roles:
                companion = path.with_suffix(f".{role}")
                if companion.exists():
                    companions.setdefault(path, {})[role] = companion
                    taken.add(companion)
    data_files = [p for p, fmt in formats.items() if fmt in _DATA_OMICS_FORMATS]
    if data_files:
        for role, patterns in _CALL_COMPANIONS:
            for path in sorted(by_path - taken):
                if path not in data_files and any(
                    fnmatch.fnmatch(path.name.lower(), p) for p in patterns
                ):
                    for data_file in data_files:
                        companions.setdefault(data_file, {}).setdefault(role, path)
                    taken.add(path)
                    break
    # .bim/.fam/.pvar/.psam never are inputs on their own.
    for path in by_path:
        if path.suffix.lower() in (".bim", ".fam", ".pvar", ".psam"):
            taken.add(path)
    return companions, taken


def _mapping_spec(mapping: object) -> object | None:
    if mapping is None:
        return None
    from medlake.ingest.csv_mapping import load_mapping
    from medlake.ingest.mapping_spec import MappingSpec

    return mapping if isinstance(mapping, MappingSpec) else load_mapping(Path(str(mapping)))


def _mapped(mapping: object | None, item: _Found) -> bool:
    if mapping is None:
        return False
    from medlake.ingest.csv_mapping import find_entry

    return find_entry(mapping, _original_name(item)) is not None  # type: ignore[arg-type]


def _source_system(item: _Found, mapping: object | None, fmt: str) -> str:
    if fmt in MAPPED_FORMATS and mapping is not None and getattr(mapping, "source_system", None):
        return str(mapping.source_system)  # type: ignore[attr-defined]
    # The nearest folder named like a source system (lis/2016/20160109.hl7 is the LIS's).
    for folder in item.path.parents:
        if folder.name.lower() in KNOWN_SOURCE_SYSTEMS:
            return folder.name.lower()
    return _short_name(item.root.name)


def _short_name(name: str) -> str:
    cleaned = re.sub(r"[^a-z0-9_-]+", "_", name.lower()).strip("_")
    return (cleaned or "source")[:50]


def _original_name(item: _Found) -> str:
    return item.path.relative_to(item.root).as_posix()[:255]


def _ingest_order(item: IngestInput) -> tuple[int, int, int, str]:
    omics = 2 if item.format == "sample-manifest" else int(item.format in OMICS_FORMATS)
    name = item.path.name.lower()
    if "patient" in name:
        rank = 0
    elif "visit" in name or "encounter" in name:
        rank = 1
    else:
        rank = 2
    return (omics, _SOURCE_ORDER.get(item.source_system, 3), rank, str(item.path))
