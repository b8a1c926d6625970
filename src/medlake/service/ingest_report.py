"""What an ingest run reports: progress events, per-file results, per-source totals.

Split from :mod:`medlake.service.ingest` (which re-exports these names) so the CLI, the
demo and the server can render a run without the runner's code.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from medlake.errors import MedlakeError
from medlake.ingest.writer import WriteSummary


@dataclass(frozen=True)
class IngestProgress:
    """Where a running ingest is: input ``index`` of ``total``, records read so far."""

    name: str
    index: int
    total: int
    records_read: int
    size_bytes: int
    done: bool = False


@dataclass
class FileResult:
    """What happened to one input."""

    path: str
    format: str
    source_system: str
    batch_id: str | None
    status: str  # loaded, unchanged (already loaded), failed
    seconds: float
    summary: WriteSummary | None = None
    message: str | None = None
    error: MedlakeError | None = None


@dataclass
class SourceSummary:
    """One row of the ingest table: a source system's inputs added up."""

    source_system: str
    files: int = 0
    read: int = 0
    loaded: int = 0
    updated: int = 0
    unchanged: int = 0
    quarantined: int = 0
    unmapped: int = 0
    failed: int = 0
    seconds: float = 0.0

    @property
    def records_per_second(self) -> float:
        return self.read / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "source_system": self.source_system,
            "files": self.files,
            "read": self.read,
            "loaded": self.loaded,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "quarantined": self.quarantined,
            "unmapped": self.unmapped,
            "failed": self.failed,
            "seconds": round(self.seconds, 3),
            "records_per_second": round(self.records_per_second, 1),
        }


@dataclass
class IngestReport:
    """Per-source totals, per-file results, ignored files, unmapped codes, merges."""

    files: list[FileResult] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    empi: object | None = None  # the EMPI link run after ingest ([empi] link_after_ingest)
    #: The whole run's wall time: the sources' ``seconds`` are their files' own, while
    #: this adds what the run does once (opening the lake, the run record, the EMPI link
    #: and checks after ingest, the person-order pass and the last checkpoint).
    seconds: float = 0.0

    @property
    def records_read(self) -> int:
        return sum(source.read for source in self.sources)

    COLUMNS = (
        "source", "files", "read", "loaded", "updated", "unchanged", "quarantined",
        "unmapped", "seconds", "records/s",
    )  # fmt: skip

    @property
    def sources(self) -> list[SourceSummary]:
        totals: dict[str, SourceSummary] = {}
        for result in self.files:
            total = totals.setdefault(result.source_system, SourceSummary(result.source_system))
            total.files += 1
            total.seconds += result.seconds
            summary = result.summary
            if result.status == "failed":
                total.failed += 1
            if summary is None:
                continue
            total.read += summary.records_read
            total.loaded += summary.loaded + summary.omics_samples
            total.updated += summary.updated
            total.unchanged += summary.unchanged + summary.stale
            total.quarantined += summary.quarantined
            total.unmapped += sum(summary.unmapped.values())
        return list(totals.values())

    @property
    def failed(self) -> list[FileResult]:
        return [result for result in self.files if result.status == "failed"]

    @property
    def unmapped(self) -> Counter[tuple[str, str]]:
        counts: Counter[tuple[str, str]] = Counter()
        for result in self.files:
            if result.summary is not None:
                counts.update(result.summary.unmapped)
        return counts

    def as_rows(self) -> list[list[object]]:
        return [
            [
                s.source_system,
                s.files,
                s.read,
                s.loaded,
                s.updated,
                s.unchanged,
                s.quarantined,
                s.unmapped,
                round(s.seconds, 2),
                round(s.records_per_second),
            ]
            for s in self.sources
        ]

    def as_dict(self) -> dict[str, object]:
        return {
            "sources": [source.as_dict() for source in self.sources],
            "files": [
                {
                    "path": r.path,
                    "format": r.format,
                    "source_system": r.source_system,
                    "batch_id": r.batch_id,
                    "status": r.status,
                    "seconds": round(r.seconds, 3),
                    "message": r.message,
                }
                for r in self.files
            ],
            "ignored": self.ignored,
            "run": {
                "seconds": round(self.seconds, 3),
                "records_read": self.records_read,
                "records_per_second": round(self.records_read / self.seconds, 1)
                if self.seconds > 0
                else 0.0,
            },
            "unmapped": [
                {"table": table, "vocabulary": vocabulary, "rows": rows}
                for (table, vocabulary), rows in sorted(self.unmapped.items())
            ],
            "merges": [
                {
                    "source_system": m.source_system,
                    "surviving_id": m.surviving_id,
                    "merged_id": m.merged_id,
                }
                for r in self.files
                if r.summary is not None
                for m in r.summary.merges
            ],
        }
