"""Benchmark: patient 360's serving copy on a lake: build, size, restart check, per-call CPU.

In this process, on the lake of ``--workspace`` (``lake_pool.serving`` as the server
holds it): patient 360 for ``--calls`` random persons from the lake (the live path, the
reference), then the serving copy built (or, when a copy from an earlier run is there,
verified) by its background thread: wall and process CPU seconds, rows and file size;
then the same calls answered from the copy (each answer compared with the live one),
CPU per call for both; then a restart: the copy verified against the lake's fingerprint.

Writes only the copy's own file (``cache/patient360-timeline.duckdb`` under the
workspace; ``--fresh`` deletes it first) and the audit trail's events for the calls.

Usage: ``flock /tmp/medlake-heavy.lock python benchmarks/patient360_copy.py --workspace
/tmp/p360s6/work/lake_1000000_52_ingested --fresh``.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
from medlake.access import Principal, Role  # noqa: E402
from medlake.access.context import acting_as  # noqa: E402
from medlake.config import open_workspace  # noqa: E402
from medlake.service.lake_pool import pooled_lake, serving  # noqa: E402
from medlake.service.patient360 import person_timeline  # noqa: E402
from medlake.service.patient360_copy import COPY_FILE, keeping_serving_copy  # noqa: E402

STEWARD = Principal("bench-steward", Role.STEWARD)


def calls(workspace: object, persons: list[int]) -> tuple[list[dict[str, object]], float, float]:
    """The answers, and CPU and wall ms per call (one call at a time)."""
    cpu, wall = time.process_time(), time.perf_counter()
    answers = [person_timeline(workspace, p).as_dict() for p in persons]  # type: ignore[arg-type]
    n = len(persons)
    return answers, (time.process_time() - cpu) / n * 1000, (time.perf_counter() - wall) / n * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--fresh", action="store_true", help="delete an earlier copy first")
    args = parser.parse_args()
    workspace = open_workspace(args.workspace)
    path = workspace.root / COPY_FILE
    if args.fresh:
        for leftover in (path, path.with_name(path.name + ".wal")):
            leftover.unlink(missing_ok=True)
    with acting_as(STEWARD), serving(workspace):
        with pooled_lake(workspace) as engine:
            people = engine.table("person")
            ids = engine.execute(people.select("person_id").limit(200_000)).column(0).to_pylist()
        persons = random.Random(7).sample(ids, args.calls)
        person_timeline(workspace, persons[-1])  # statements prepared
        live, live_cpu, live_wall = calls(workspace, persons)
        cpu, wall = time.process_time(), time.perf_counter()
        with keeping_serving_copy(workspace) as copy:
            copy.ready.wait()
            built_wall, built_cpu = time.perf_counter() - wall, time.process_time() - cpu
            assert copy.current, copy.status
            print(f"serving copy {'built' if copy.status.builds else 'verified'}: "
                  f"{built_wall:.1f} s wall, {built_cpu:.1f} s CPU; {copy.status.rows or 0:,} "
                  f"rows; file {path.stat().st_size / 2**30:.2f} GiB")  # fmt: skip
            person_timeline(workspace, persons[-1])
            for _ in range(2):
                served, copy_cpu, copy_wall = calls(workspace, persons)
                assert served == live, "an answer from the copy differs from the live path"
            print(f"per call, one at a time ({args.calls} persons): live {live_cpu:.1f} ms "
                  f"CPU ({live_wall:.1f} ms wall), from the copy {copy_cpu:.1f} ms CPU "
                  f"({copy_wall:.1f} ms wall); answers equal")  # fmt: skip
            served_now = copy.status.served
            assert served_now >= 2 * args.calls
    with serving(workspace):
        cpu, wall = time.process_time(), time.perf_counter()
        with keeping_serving_copy(workspace) as copy:
            copy.ready.wait()
            assert copy.current, copy.status
            assert copy.status.verified == 1, copy.status
            print(f"restart: copy verified against the lake in {time.perf_counter() - wall:.1f} "
                  f"s wall, {time.process_time() - cpu:.1f} s CPU")  # fmt: skip


if __name__ == "__main__":
    main()
