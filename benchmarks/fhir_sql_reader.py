"""FHIR NDJSON reading: the SQL fast path (DuckDB) against the Python path, in CPU seconds.

Reads every ``*.ndjson`` of an EMR export (``--emr DIR``, else one synthesized with
``--patients``) with ``FhirReader`` twice per pair — Python only, then with the local
SQL runner of an in-memory DuckDB engine (``medlake.ingest.fhir_sql``) — and prints per
file the CPU seconds of each (DuckDB's threads included: ``time.process_time``), their
ratio and the share of lines the SQL took. ``--threads 1`` gives DuckDB one thread, so
the figures compare the work done rather than the parallelism.

    .venv/bin/python benchmarks/fhir_sql_reader.py --patients 5000 --pairs 2
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from medlake.engine.arrow_sql import arrow_sql_for
from medlake.engine.backends.duckdb import DuckDBEngine
from medlake.ingest import fhir_sql
from medlake.ingest.fhir import ARROW_SQL, FhirReader
from medlake.ingest.staging import SourceContext


def read(path: Path, run: object | None) -> tuple[float, int, int]:
    """CPU seconds, resources read, lines the SQL took."""
    taken = [0]
    original = fhir_sql.SqlMapper.map

    def counted(self, *args):  # type: ignore[no-untyped-def]
        rows, mask = original(self, *args)
        taken[0] += int(mask.sum())
        return rows, mask

    fhir_sql.SqlMapper.map = counted  # type: ignore[method-assign]
    try:
        options = {ARROW_SQL: run} if run is not None else {}
        context = SourceContext("emr", "bench", path, path.name, dt.datetime(2026, 1, 1),
                                options=options)  # fmt: skip
        started = time.process_time()
        resources = sum(chunk.records_read for chunk in FhirReader().read(context))
        return time.process_time() - started, resources, taken[0]
    finally:
        fhir_sql.SqlMapper.map = original  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emr", type=Path, help="an EMR FHIR export (default: synthesize)")
    parser.add_argument("--patients", type=int, default=5000)
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--threads", type=int, help="DuckDB threads (default: all cores)")
    args = parser.parse_args()
    emr = args.emr
    if emr is None:
        from medlake.synth import generate_hospital

        root = Path(tempfile.mkdtemp(prefix="medlake-fhir-sql-bench-"))
        generate_hospital(root / "hospital", args.patients, 1)
        emr = root / "hospital" / "emr"
    engine = DuckDBEngine(threads=args.threads)
    run = arrow_sql_for(engine)
    cpu: dict[tuple[str, str], list[float]] = defaultdict(list)
    counts: dict[str, tuple[int, int]] = {}
    files = sorted(emr.glob("*.ndjson"))
    for _ in range(args.pairs):
        for path in files:
            seconds, resources, _ = read(path, None)
            cpu[(path.name, "python")].append(seconds)
            seconds, resources, taken = read(path, run)
            cpu[(path.name, "sql")].append(seconds)
            counts[path.name] = (resources, taken)
    print(f"medians of {args.pairs}, CPU seconds (DuckDB threads: {args.threads or 'all'})")
    print(f"{'file':28} {'resources':>10} {'SQL took':>9} {'python':>8} {'sql':>8} {'ratio':>6}")
    totals = {"python": 0.0, "sql": 0.0}
    for path in files:
        python = statistics.median(cpu[(path.name, "python")])
        sql = statistics.median(cpu[(path.name, "sql")])
        totals["python"] += python
        totals["sql"] += sql
        resources, taken = counts[path.name]
        share = taken / resources if resources else 0.0
        print(f"{path.name:28} {resources:>10,} {share:>8.0%} {python:>8.2f} {sql:>8.2f} "
              f"{sql / python:>6.2f}")  # fmt: skip
    total = sum(r for r, _ in counts.values())
    print(f"{'all':28} {total:>10,} {'':>9} {totals['python']:>8.2f} {totals['sql']:>8.2f} "
          f"{totals['sql'] / totals['python']:>6.2f}")  # fmt: skip
    print(f"python: {total / totals['python']:,.0f} resources per CPU second; "
          f"sql: {total / totals['sql']:,.0f}")  # fmt: skip
    run.close()  # type: ignore[union-attr]
    engine.close()


if __name__ == "__main__":
    main()
