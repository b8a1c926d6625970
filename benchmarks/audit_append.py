"""Audited-read appends: the journal (while serving) against the DuckDB transaction path.

Runs the same appends both ways on one fresh workspace, alternating rounds, and prints
per-append latency (p50/p95, what a caller waits for) and process CPU per append (all
threads: for the journal this includes the background mover and the final move of
every event into ``audit_event``, so the ratio is the real saving, not only the caller's).

    .venv/bin/python benchmarks/audit_append.py --workdir /tmp/audit-bench --appends 2000

``--threads`` appending callers at once (each append is one event, as a patient 360
read is); ``--rounds`` alternations of the two paths.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import threading
import time
from pathlib import Path

from medlake.audit import append_event
from medlake.config import open_workspace
from medlake.service.audit import audit_journal, verify_trail
from medlake.service.lake_pool import pooled_lake, serving
from medlake.service.workspace import init_workspace


def _run(workspace, appends: int, threads: int) -> tuple[list[float], float, float]:  # type: ignore[no-untyped-def]
    latencies: list[float] = []
    lock = threading.Lock()
    each = appends // threads
    start = threading.Barrier(threads + 1)

    def caller(n: int) -> None:
        mine = []
        with pooled_lake(workspace) as engine:
            start.wait()
            for index in range(each):
                began = time.perf_counter()
                append_event(engine, actor=f"user{n}", role="steward", action="read",
                             object_type="person", object_id=str(index),
                             detail={"view": "timeline", "note_text": False,
                                     "person_ids": [index]})  # fmt: skip
                mine.append(time.perf_counter() - began)
        with lock:
            latencies.extend(mine)

    workers = [threading.Thread(target=caller, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    cpu, wall = time.process_time(), time.perf_counter()
    start.wait()
    for worker in workers:
        worker.join()
    return latencies, time.process_time() - cpu, time.perf_counter() - wall


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] * 1000 if len(values) > 1 else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/audit-bench"))
    parser.add_argument("--appends", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    root = args.workdir / "ws"
    shutil.rmtree(args.workdir, ignore_errors=True)
    init_workspace(root, demo_vocabulary=False)
    workspace = open_workspace(root)
    results: dict[str, list[tuple[list[float], float, float]]] = {"duckdb": [], "journal": []}
    with serving(workspace):
        time.sleep(3)  # the pool opens its engines in the background first
        _run(workspace, 200, args.threads)  # warm: statements prepared, engines open
        for _ in range(args.rounds):
            results["duckdb"].append(_run(workspace, args.appends, args.threads))
            cpu = time.process_time()
            with audit_journal(workspace):
                lat, _, wall = _run(workspace, args.appends, args.threads)
            # the move into the table at stop is part of the journal's cost
            results["journal"].append((lat, time.process_time() - cpu, wall))
    assert verify_trail(root, anchor=False).ok
    print(f"{args.appends} appends x {args.rounds} rounds, {args.threads} threads")
    summary = {}
    for name, runs in results.items():
        lat = [x for run in runs for x in run[0]]
        cpu_ms = sum(run[1] for run in runs) / sum(len(run[0]) for run in runs) * 1000
        rate = sum(len(run[0]) for run in runs) / sum(run[2] for run in runs)
        summary[name] = cpu_ms
        print(f"{name:8s} p50 {_pct(lat, 50):6.2f} ms  p95 {_pct(lat, 95):6.2f} ms  "
              f"CPU/append {cpu_ms:6.3f} ms  {rate:8.0f} appends/s")  # fmt: skip
    print(f"CPU per append, journal / duckdb: {summary['journal'] / summary['duckdb']:.3f}")
    shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
