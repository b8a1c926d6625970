"""Data-quality checks and audit trail: how long they take on a hospital lake.

Usage: ``python benchmarks/qc_checks.py WORKSPACE`` (an ingested workspace, e.g. the
demo's) or ``python benchmarks/qc_checks.py --patients 400`` (synthesizes and ingests a
hospital first, in a temporary folder).

Prints, with the reference run in the same script:
- every check grouped into one aggregate per table (how medlake runs them) against the
  same checks run one query each (the naive compilation): seconds and ratio;
- the checks of one table (what an ingest run that wrote only measurements costs);
- audit: appends per second on the lake, and verifying the trail, against hashing the
  same canonical texts with hashlib alone.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from medlake.audit import append_event, event_hash, read_events, verify_events
from medlake.config import open_workspace
from medlake.quality import run_checks
from medlake.quality.queries import base_key, base_table, compile_check, joins_needed
from medlake.quality.runner import _concept_resolver
from medlake.service.quality import checks_for
from medlake.service.workspace import open_lake, upgrade_schema


def _workspace(args: argparse.Namespace) -> Path:
    if args.workspace:
        return Path(args.workspace)
    from medlake.service.demo import ingest_hospital
    from medlake.service.workspace import init_workspace
    from medlake.synth import generate_hospital

    root = Path(tempfile.mkdtemp(prefix="qc-bench-"))
    generate_hospital(root / "hospital", args.patients, 11)
    init_workspace(root / "ws", name="bench")
    ingest_hospital(root / "ws", root / "hospital")
    return root / "ws"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workspace", nargs="?")
    parser.add_argument("--patients", type=int, default=400)
    parser.add_argument("--events", type=int, default=1000)
    args = parser.parse_args()
    source = _workspace(args)
    scratch = Path(tempfile.mkdtemp(prefix="qc-bench-copy-")) / "ws"
    shutil.copytree(source, scratch)
    upgrade_schema(scratch)  # a lake made by an earlier medlake
    workspace = open_workspace(scratch)
    checks = checks_for(workspace)
    with open_lake(workspace) as engine:
        rows = engine.count("measurement")
        print(f"lake: {rows:,} measurements, {engine.count('person'):,} persons; "
              f"{len(checks):,} checks")  # fmt: skip

        started = time.perf_counter()
        results = run_checks(engine, checks)
        grouped = time.perf_counter() - started
        print(f"grouped (one aggregate per table): {grouped:.1f} s, "
              f"{sum(r.status == 'fail' for r in results)} failed")  # fmt: skip

        queried = [c for c in checks if c.check_type not in ("cdm_table", "cdm_field",
                   "cdm_datatype", "quarantined_records")]  # fmt: skip
        resolve = _concept_resolver(engine, checks, set(engine.list_tables()))
        started = time.perf_counter()
        for check in queried:
            base = base_table(base_key(check), engine.table, joins_needed(check))
            compiled = compile_check(check, base, engine.table, resolve)
            engine.execute(base.aggregate(v=compiled.violating, n=compiled.total))
        single = time.perf_counter() - started
        print(f"reference, one query per check ({len(queried):,} checks): {single:.1f} s; "
              f"grouped/reference = {grouped / single:.2f}")  # fmt: skip

        one_table = [c for c in checks if c.table in ("measurement", "quarantine")]
        started = time.perf_counter()
        run_checks(engine, one_table)
        print(f"checks of measurement only ({len(one_table)}): "
              f"{time.perf_counter() - started:.2f} s")  # fmt: skip

        started = time.perf_counter()
        for index in range(args.events):
            append_event(engine, actor="bench", action="read", object_type="person",
                         object_id=str(index), detail={"person_ids": [index]})  # fmt: skip
        appended = time.perf_counter() - started
        print(
            f"audit: {args.events:,} appends in {appended:.1f} s "
            f"({args.events / appended:,.0f}/s, {1000 * appended / args.events:.1f} ms each)"
        )
        started = time.perf_counter()
        events = read_events(engine)
        result = verify_events(events)
        verified = time.perf_counter() - started
        started = time.perf_counter()
        for event in events:
            event_hash(event)
        hashing = time.perf_counter() - started
        print(
            f"audit verify of {len(events):,} events: {verified:.2f} s (ok={result.ok}); "
            f"reference, hashing alone: {hashing:.2f} s; ratio {verified / hashing:.1f}"
        )
    shutil.rmtree(scratch.parent)


if __name__ == "__main__":
    main()
