"""Ingest throughput on a synthetic hospital: records/s per source, and re-ingest cost.

Synthesizes a hospital (``--patients``, default 5,000), creates a fresh workspace and
ingests each source system in turn through the same service function the CLI calls,
then ingests everything again. Prints records/s per source, the reader-only rate for
FHIR (the reference for what the writer costs), and the re-ingest time as a share of
the first ingest (target: <= 10 %).

    .venv/bin/python benchmarks/ingest_throughput.py --patients 5000 [--skip lis]
    .venv/bin/python benchmarks/ingest_throughput.py --patients 34000 --fhir-read-ahead 3

``--fhir-read-ahead N`` measures only the EMR's FHIR export: N alternating pairs of
ingests into fresh workspaces (EMPI linking and QC after ingest off: ingest alone), the
reader in a thread (as before) vs in a child process (files of 16 MiB or more), and
prints each mode's median resources/s, their ratio and the reader-alone rate.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import tempfile
import time
from pathlib import Path

from medlake.ingest.fhir import FhirReader
from medlake.ingest.staging import SourceContext
from medlake.service.ingest import ingest_paths
from medlake.service.workspace import init_workspace
from medlake.synth import generate_hospital

SOURCES = ("his", "emr", "lis", "omics")


def fhir_reader_rate(emr_dir: Path) -> float:
    """Resources/s of the FHIR reader alone over the EMR export (no lake writes)."""
    reader = FhirReader()
    started = time.perf_counter()
    resources = 0
    for path in sorted(emr_dir.glob("*.ndjson")):
        context = SourceContext("emr", "bench", path, path.name, dt.datetime(2026, 1, 1))
        for chunk in reader.read(context):
            resources += chunk.records_read
    return resources / (time.perf_counter() - started)


def fresh_workspace(path: Path) -> Path:
    """A workspace that only ingests: no EMPI link and no QC run after it."""
    init_workspace(path)
    settings = path / "medlake.toml"
    text = settings.read_text(encoding="utf-8")
    text = text.replace("link_after_ingest = true", "link_after_ingest = false")
    settings.write_text(text.replace("run_after_ingest = true", "run_after_ingest = false"))
    return path


def fhir_read_ahead(scratch: Path, emr: Path, pairs: int) -> None:
    """Alternating thread / process read-ahead ingests of the EMR; medians and ratio."""
    import statistics

    import medlake.service.ingest as service

    rates: dict[str, list[float]] = {"thread": [], "process": []}
    cpus: dict[str, list[float]] = {"thread": [], "process": []}
    resources = 0
    for pair in range(pairs):
        for mode, threshold in (("thread", 1 << 60), ("process", 16 << 20)):
            service._READ_IN_PROCESS_FROM = threshold
            workspace = fresh_workspace(scratch / f"{mode}{pair}")
            started, cpu = time.perf_counter(), time.process_time()
            report = ingest_paths(workspace, [emr], source_system="emr")
            seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
            resources = sum(row.read for row in report.sources)
            rates[mode].append(resources / seconds)
            cpus[mode].append(cpu)
            print(f"  {mode:>7}: {resources:,} resources in {seconds:6.1f} s "
                  f"= {resources / seconds:9,.0f}/s; CPU here {cpu:5.1f} s")  # fmt: skip
    thread, process = (statistics.median(rates[m]) for m in ("thread", "process"))
    print(f"FHIR end to end, median of {pairs}: thread {thread:,.0f}/s, process "
          f"{process:,.0f}/s = {process / thread:.2f}x")  # fmt: skip
    cpu = time.process_time()
    print(f"FHIR reader alone: {fhir_reader_rate(emr):,.0f} resources/s")
    reader_cpu = time.process_time() - cpu
    writer_cpu = statistics.median(cpus["process"])  # the reader runs in the child
    # CPU seconds do not depend on how many other jobs share the cores, wall time does:
    # on two idle cores the process pipeline takes about max(reader, writer) CPU.
    print(f"CPU: reader {reader_cpu:.1f} s, writer (+ unpickling) {writer_cpu:.1f} s, "
          f"thread mode in all {statistics.median(cpus['thread']):.1f} s; two idle cores: "
          f"about {resources / max(reader_cpu, writer_cpu):,.0f} resources/s (process), "
          f"{resources / statistics.median(cpus['thread']):,.0f}/s (thread, serial bound)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--skip", action="append", default=[], choices=SOURCES)
    parser.add_argument("--fhir-read-ahead", type=int, default=0, metavar="PAIRS")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="medlake-ingest-bench-"))
    hospital = scratch / "hospital"
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, python "
        f"{platform.python_version()}; {args.patients:,} patients, seed {args.seed}"
    )
    generate_hospital(hospital, args.patients, args.seed)
    if args.fhir_read_ahead:
        fhir_read_ahead(scratch, hospital / "emr", args.fhir_read_ahead)
        return
    workspace = scratch / "workspace"
    init_workspace(workspace)
    options = {"mapping": hospital / "his" / "medlake-mapping.toml"}
    sources = [s for s in SOURCES if s not in args.skip]
    first_total = 0.0
    for source in sources:
        started = time.perf_counter()
        report = ingest_paths(workspace, [hospital / source], options=options)
        seconds = time.perf_counter() - started
        first_total += seconds
        for row in report.sources:
            print(
                f"{row.source_system:>8}: {row.files:>6,} files, {row.read:>9,} records read, "
                f"{row.loaded:>9,} loaded, {row.quarantined:>6,} quarantined in {seconds:7.1f} s "
                f"= {row.read / seconds:>9,.0f} records/s"
            )
    if "emr" in sources:
        print(f"FHIR reader alone: {fhir_reader_rate(hospital / 'emr'):,.0f} resources/s")
    started = time.perf_counter()
    ingest_paths(workspace, [hospital / s for s in sources], options=options)
    again = time.perf_counter() - started
    print(
        f"re-ingest of everything unchanged: {again:.1f} s = {100 * again / first_total:.1f} % "
        f"of the first ingest ({first_total:.1f} s)"
    )


if __name__ == "__main__":
    main()
