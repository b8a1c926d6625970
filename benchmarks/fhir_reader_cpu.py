"""CPU per resource of the FHIR reading side, this code against a reference copy of ``src``.

The reading side of a large FHIR NDJSON ingest is the two reading processes: they parse
each chunk's lines (orjson), hash them, map resources to staged rows and build the Arrow
tables the writer takes (:meth:`FhirReader.read_range`, run by
:class:`~medlake.ingest.prefetch.ReadingProcesses`). This benchmark runs exactly that
over a bulk export, without the lake, alternating this checkout's ``src`` with a
reference ``src`` (``git archive <commit> src | tar -x -C DIR``) in fresh processes, and
prints CPU µs per resource of each and their ratio:

    .venv/bin/python benchmarks/fhir_reader_cpu.py --export /tmp/fhir1m/h34/emr \\
        --ref /tmp/fhirread/ref/src --rounds 3 [--processes]

``--processes``: through the two reading processes as ingest runs them (their CPU, user
and system, plus the consumer's own); otherwise in one process (steadier: other jobs on
the machine disturb it less). CPU seconds, not wall time, are the figure: the cores are
shared.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def worker(export: Path, fraction: float, processes: bool) -> dict[str, float]:
    """Read the export's chunks (the first ``fraction`` of each file's) in this process."""
    from medlake.ingest.fhir import FhirReader
    from medlake.ingest.prefetch import ReadingProcesses, _quiet_collector
    from medlake.ingest.staging import SourceContext

    reader = FhirReader()
    jobs = []
    for path in sorted(export.glob("*.ndjson")):
        plan = reader.chunk_plan(path, 2) or []
        keep = plan[: max(1, round(len(plan) * fraction))]
        jobs.append((SourceContext("emr", "bench", path, path.name, dt.datetime(2026, 1, 1)),
                     keep))  # fmt: skip
    if processes:
        # As in ``medlake ingest``: the reading processes are forked from a process that
        # has the service (and so pandas, which pyarrow imports on its first conversion)
        # loaded; forked from a bare one, each would import pandas again (~0.2 CPU-s).
        import pandas  # noqa: F401

        import medlake.service.ingest  # noqa: F401
    resources = 0
    children, mine = _cpu(resource.RUSAGE_CHILDREN), _cpu(resource.RUSAGE_SELF)
    started = time.perf_counter()
    if processes:
        for context, plan in jobs:
            for chunk in ReadingProcesses("fhir", context, plan, 2, 2, group=2):
                resources += chunk.records_read  # type: ignore[attr-defined]
    else:
        _quiet_collector()  # as in a reading process
        for context, plan in jobs:
            for start, end, first in plan:
                resources += reader.read_range(context, start, end, first).records_read
        gc.unfreeze()
    return {
        "resources": resources,
        "cpu": _cpu(resource.RUSAGE_CHILDREN) - children + _cpu(resource.RUSAGE_SELF) - mine,
        "wall": time.perf_counter() - started,
    }


def run(src: Path, args: argparse.Namespace) -> dict[str, float]:
    command = [sys.executable, __file__, "--worker", "--export", str(args.export),
               "--fraction", str(args.fraction)]  # fmt: skip
    if args.processes:
        command.append("--processes")
    env = {**os.environ, "PYTHONPATH": str(src)}
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export", type=Path, default=Path("/tmp/fhir1m/h34/emr"))
    parser.add_argument("--ref", type=Path, help="a reference copy of src/ (another commit)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--fraction", type=float, default=1.0)
    parser.add_argument("--processes", action="store_true")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.export, args.fraction, args.processes)))
        return
    variants = {"this": SRC} | ({"ref": args.ref} if args.ref else {})
    per: dict[str, list[float]] = {name: [] for name in variants}
    mode = "two reading processes" if args.processes else "one process"
    print(f"{args.export}, fraction {args.fraction}, {mode}, load {os.getloadavg()[0]:.1f}")
    for round_ in range(args.rounds):
        for name, src in variants.items():
            result = run(src, args)
            us = result["cpu"] / result["resources"] * 1e6
            per[name].append(us)
            print(f"  round {round_ + 1} {name:>4}: {result['resources']:,} resources, "
                  f"{result['cpu']:6.2f} CPU-s = {us:5.2f} µs/resource "
                  f"(wall {result['wall']:.1f} s)")  # fmt: skip
    medians = {name: statistics.median(values) for name, values in per.items()}
    line = ", ".join(f"{name} {value:.2f} µs/resource" for name, value in medians.items())
    if "ref" in medians:
        line += f"; this/ref = {medians['this'] / medians['ref']:.3f}"
    print(f"median: {line}")


if __name__ == "__main__":
    main()
