"""``generate_hospital``: a synthetic hospital as its HIS, LIS and EMR would export it.

Persons are generated in fixed-size chunks (:mod:`medlake.synth.chunk`), optionally in
worker processes; the results are appended to the output files strictly in chunk order,
so the tree is byte-identical for a seed whatever the worker count, and memory stays
bounded by a few chunks in flight. The biobank subset goes to
:class:`medlake.synth.omics.OmicsWriter` in person order.
"""

from __future__ import annotations

import csv
import datetime as dt
import importlib.resources
import io
import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import IO, Any

import orjson

from medlake.errors import UsageError
from medlake.log import get_logger
from medlake.synth import his, omics, truth
from medlake.synth.chunk import CHUNK_SIZE, ChunkContext, generate_chunk
from medlake.synth.dates import WINDOW_END, WINDOW_START
from medlake.synth.defects import DEFECT_RATES
from medlake.synth.emr import RESOURCE_TYPES, path_of
from medlake.synth.exports import ChunkResult, file_encoding
from medlake.synth.identity import DUPLICATE_RATE, NOISE, PRESENCE
from medlake.synth.notes import NOTE_PHI
from medlake.synth.readme import README_TEXT

GENERATOR_VERSION = "1.0"
#: The HIS exports' medlake mapping file, copied from the package into every hospital.
HIS_MAPPING = "his/medlake-mapping.toml"
_log = get_logger(__name__)
_MAX_GENOTYPED = 20_000


@dataclass
class SynthSummary:
    """What was written: records per file (data lines, messages or resources)."""

    out_dir: Path
    patients: int
    seed: int
    files: dict[str, int] = field(default_factory=dict)
    genotyped: int = 0
    rnaseq: int = 0

    def system_totals(self) -> dict[str, int]:
        """Records per top-level folder (his, lis, emr, truth)."""
        totals: dict[str, int] = {}
        for path, count in self.files.items():
            top = path.split("/", 1)[0]
            totals[top] = totals.get(top, 0) + count
        return totals

    def as_rows(self) -> list[tuple[str, int]]:
        """(file, records) rows for a table; LIS day files summed into one row."""
        rows: list[tuple[str, int]] = []
        lis_messages = lis_files = 0
        for path, count in sorted(self.files.items()):
            if path.startswith("lis/"):
                lis_messages += count
                lis_files += 1
            else:
                rows.append((path, count))
        rows.append((f"lis/ ({lis_files:,} day files, HL7 messages)", lis_messages))
        rows.append(("omics genotyped samples", self.genotyped))
        rows.append(("omics RNA-seq samples", self.rnaseq))
        return sorted(rows)


class _OutputTree:
    """Appends chunk results to the output files, in order, and keeps the counts."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.records: dict[str, int] = {}
        self._handles: dict[str, IO[bytes]] = {}
        headers = {**his.HEADERS, **truth.HEADERS}
        for path, header in headers.items():
            self._handle(path).write(_csv_line(path, header))
            self.records[path] = 0
        for resource_type in RESOURCE_TYPES:
            self._handle(path_of(resource_type))
            self.records[path_of(resource_type)] = 0
        self._handle(NOTE_PHI)
        self.records[NOTE_PHI] = 0
        self._header_lines = dict.fromkeys(headers, 1)

    def _handle(self, path: str) -> IO[bytes]:
        if path not in self._handles:
            target = self.root / path
            target.parent.mkdir(parents=True, exist_ok=True)
            self._handles[path] = target.open("wb")
        return self._handles[path]

    def append(self, result: ChunkResult) -> None:
        for defect in result.defects:
            defect.line += self.records.get(defect.file, 0) + self._header_lines.get(defect.file, 0)
        defect_rows = [[d.system, d.file, d.record_id, d.line, d.kind, d.field, d.detail]
                       for d in result.defects]  # fmt: skip
        if defect_rows:
            buffer = io.StringIO()
            csv.writer(buffer, lineterminator="\n").writerows(defect_rows)
            self._handle(truth.DEFECTS).write(buffer.getvalue().encode())
            self.records[truth.DEFECTS] += len(defect_rows)
        for path in sorted(result.blobs):
            if path.startswith("lis/"):
                target = self.root / path
                target.parent.mkdir(parents=True, exist_ok=True)
                with target.open("ab") as handle:
                    handle.write(result.blobs[path])
            else:
                self._handle(path).write(result.blobs[path])
            self.records[path] = self.records.get(path, 0) + result.records[path]

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()


def _csv_line(path: str, row: list[str]) -> bytes:
    buffer = io.StringIO()
    terminator = "\r\n" if path.startswith("his/") else "\n"
    csv.writer(buffer, lineterminator=terminator).writerow(row)
    return buffer.getvalue().encode(file_encoding(path))


_worker_context: ChunkContext | None = None


def _init_worker(seed: int, patients: int) -> None:
    global _worker_context
    _worker_context = ChunkContext(seed, patients, _MAX_GENOTYPED)


def _run_chunk(index: int, start: int, count: int) -> ChunkResult:
    assert _worker_context is not None
    return generate_chunk(_worker_context, index, start, count)


def _chunk_results(
    patients: int, seed: int, workers: int, chunk_size: int
) -> Iterator[ChunkResult]:
    """Chunk results in chunk order; at most ``2 × workers`` chunks in flight."""
    plan = [(i, start, min(chunk_size, patients - start))
            for i, start in enumerate(range(0, patients, chunk_size))]  # fmt: skip
    if workers <= 1 or len(plan) == 1:
        context = ChunkContext(seed, patients, _MAX_GENOTYPED)
        for index, start, count in plan:
            yield generate_chunk(context, index, start, count)
        return
    spawn = get_context("spawn")  # safe with threads in the caller (progress bars)
    with ProcessPoolExecutor(max_workers=workers, mp_context=spawn, initializer=_init_worker,
                             initargs=(seed, patients)) as pool:  # fmt: skip
        pending: deque[Future[ChunkResult]] = deque()
        queue = iter(plan)
        for job in queue:
            pending.append(pool.submit(_run_chunk, *job))
            if len(pending) >= 2 * workers:
                break
        while pending:
            result = pending.popleft().result()
            next_job = next(queue, None)
            if next_job is not None:
                pending.append(pool.submit(_run_chunk, *next_job))
            yield result


def _omics_subjects(candidates: list[dict[str, Any]], counter: list[int]) -> list[Any]:
    """Number the biobank's samples in arrival (person) order."""
    subjects = []
    for candidate in candidates:
        counter[0] += 1
        collected = candidate.pop("collected_ord")
        rnaseq = candidate.pop("rnaseq")
        collected_date = dt.date.fromordinal(collected) if collected is not None else None
        rna_id = None
        if rnaseq:
            counter[1] += 1
            year = collected_date.year if collected_date else 2021
            rna_id = omics.rna_sample_id(year, counter[1])
        subjects.append(omics.OmicsSubject(
            genotype_sample_id=omics.genotype_sample_id(counter[0]), rna_sample_id=rna_id,
            collected_date=collected_date, **candidate))  # fmt: skip
    return subjects


def generate_hospital(
    out_dir: Path,
    patients: int,
    seed: int,
    *,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    chunk_size: int = CHUNK_SIZE,
) -> SynthSummary:
    """Write HIS CSV, LIS HL7 v2, EMR FHIR NDJSON, omics files and ``truth/`` to ``out_dir``.

    Same ``seed`` and ``patients`` give a byte-identical tree for any ``workers``;
    ``progress(done, total)`` is called with persons done after each chunk.
    ``chunk_size`` is part of the seed's identity (chunks own their random streams):
    leave it at its default except in tests that need many chunks from few persons.
    """
    if patients < 1:
        raise UsageError(f"patients must be at least 1, got {patients}")
    if chunk_size < 1:
        raise UsageError(f"chunk size must be at least 1, got {chunk_size}")
    if seed < 0:
        raise UsageError(f"seed must be >= 0, got {seed}")
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise UsageError(f"output directory {out_dir} exists and is not empty")
    out_dir.mkdir(parents=True, exist_ok=True)
    workers = max(1, workers if workers is not None else (os.cpu_count() or 1))
    tree = _OutputTree(out_dir)
    writer = omics.OmicsWriter(out_dir, seed, max_genotyped=_MAX_GENOTYPED)
    counter = [0, 0]
    done = 0
    try:
        for result in _chunk_results(patients, seed, workers, chunk_size):
            tree.append(result)
            writer.add(_omics_subjects(result.omics, counter))
            done += result.persons
            if progress is not None:
                progress(done, patients)
    finally:
        tree.close()
    omics_summary = writer.finish()
    summary = SynthSummary(out_dir, patients, seed, dict(sorted(tree.records.items())),
                           omics_summary.n_genotyped, omics_summary.n_rnaseq)  # fmt: skip
    _write_emr_manifest(out_dir, tree.records)
    _write_manifest(out_dir, summary)
    (out_dir / "README.txt").write_text(README_TEXT, encoding="utf-8")
    mapping = importlib.resources.files("medlake.synth") / "data" / "his_mapping.toml"
    (out_dir / HIS_MAPPING).write_bytes(mapping.read_bytes())
    _log.info("synthetic hospital of %d persons written to %s", patients, out_dir)
    return summary


def _write_emr_manifest(out_dir: Path, records: dict[str, int]) -> None:
    """The FHIR Bulk Data export manifest; a fixed transaction time keeps output stable."""
    manifest = {
        "transactionTime": f"{WINDOW_END.isoformat()}T23:59:59+08:00",
        "request": "https://emr.bjyy.example.cn/fhir/$export?_type=" + ",".join(RESOURCE_TYPES),
        "requiresAccessToken": True,
        "output": [{"type": t, "url": f"{t}.ndjson", "count": records[path_of(t)]}
                   for t in RESOURCE_TYPES],
        "error": [],
    }  # fmt: skip
    text = orjson.dumps(manifest, option=orjson.OPT_INDENT_2) + b"\n"
    (out_dir / "emr" / "manifest.json").write_bytes(text)


def _write_manifest(out_dir: Path, summary: SynthSummary) -> None:
    manifest = {
        "generator": "medlake.synth",
        "generator_version": GENERATOR_VERSION,
        "seed": summary.seed,
        "patients": summary.patients,
        "window": [WINDOW_START.isoformat(), WINDOW_END.isoformat()],
        "chunk_size": CHUNK_SIZE,
        "presence_rates": PRESENCE,
        "duplicate_rate": DUPLICATE_RATE,
        "identity_noise_rates": {system: vars(rates) for system, rates in NOISE.items()},
        "defect_rates": DEFECT_RATES,
        "omics": {"genotyped": summary.genotyped, "rnaseq": summary.rnaseq},
        "files": summary.files,
    }
    (out_dir / "truth" / "manifest.json").write_bytes(
        orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
    )
