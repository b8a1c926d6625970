"""Benchmark: cohort counts under concurrent load: the result cache, single flight, the gate.

On the cohort benchmark's lake (``--persons`` persons, ``--events`` events each; copied
from ``--from`` like ``server_load.py`` does), with a realistic mix: **16 distinct
definitions**, variants of ``cohort_count.py``'s 5-rule definition (age bound 18/40/50/65
x HbA1c above 7/8 % x metformin within 90/180 days), so the cache is not trivially hit.

1. ``engine`` (in this process, no HTTP): the 16 statements run by ``C`` concurrent
   cursors (threads, each its own connection) with DuckDB ``threads = T``, for several
   (T, C): what gives most statements per second on these cores.
2. ``server`` (a real ``medlake serve``, ``--clients`` concurrent HTTP clients on
   loopback, signed in as a steward; ``[cohort]`` settings, and ``[engine] threads``
   from ``--threads``, written to the workspace's ``medlake.toml`` before each start):

   * ``no cache``: ``cache_results = false``, every request computes: ``--computed``
     requests over the 16 definitions, with the default gate (twice the cores) and none
     (``concurrent_statements = clients``);
   * ``cache``: a fresh server; **cold**: every client at once on definitions never
     counted (2 requests per definition, so half wait on the other's statement: single
     flight); **warm**: ``--warm`` requests drawn at random from the 16, all counted
     before; then a fresh server again, **mixed**: ``--mixed`` random requests from a
     cold start, reported as a whole and split into cold (no answer for that definition
     had come back when the request was sent) and warm.

Reports requests, errors (any status but 200), throughput, p50/p95/p99 against the
issue's target (p95 <= 2 s), and the reference: one count in this process, statement
compiled, cache empty (``count_cohort``), median of 3.

Usage: ``flock /tmp/medlake-heavy.lock python benchmarks/cohort_load.py --from
/work/cohort-bench --workdir /tmp/cohort-load`` (1M persons by default).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import copy
import os
import random
import ssl
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(REPO))
from tests.serve_process import start_medlake_serve  # noqa: E402

from cohort_count import DEFINITION  # noqa: E402
from medlake.access import Principal, Role  # noqa: E402
from medlake.access.context import acting_as  # noqa: E402
from medlake.config import open_workspace, write_settings  # noqa: E402
from medlake.engine import open_engine  # noqa: E402
from medlake.service import access  # noqa: E402
from medlake.service.cohort import _compiled, count_cohort, parse_definition  # noqa: E402
from medlake.service.cohort_query import clear_cache, stitched_statement  # noqa: E402
from server_load import STEWARD, prepare, process_cpu  # noqa: E402

TARGET_P95 = 2.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def variants() -> list[dict[str, Any]]:
    """16 definitions: age bound x HbA1c threshold x metformin window."""
    out = []
    for age in (18, 40, 50, 65):
        for hba1c in (7, 8):
            for days in (90, 180):
                d = copy.deepcopy(DEFINITION)
                d["name"] = f"T2D, HbA1c > {hba1c}, metformin {days} d, age {age}+"
                rules = d["inclusion_rules"]
                rules[0]["expression"]["criteria"][0]["criterion"]["value_as_number"]["value"] = (
                    hba1c
                )
                rules[1]["expression"]["criteria"][0]["start_window"]["end"] = days
                rules[2]["expression"]["demographics"][0]["age"]["value"] = age
                out.append(d)
    return out


# ---------------------------------------------------------------------- 1. engine modes


def engine_modes(workspace: Path, definitions: list[dict[str, Any]],
                 modes: list[tuple[int, int]]) -> None:  # fmt: skip
    """The 16 statements with DuckDB threads T and C concurrent cursors, per (T, C)."""
    with acting_as(Principal(STEWARD, Role.STEWARD)):
        sqls = []
        for d in definitions:
            with _compiled(workspace, parse_definition(d)) as (_, engine, compiler):
                sqls.append(stitched_statement(engine, compiler.count_query).sql(dialect="duckdb"))
    settings = open_workspace(workspace).settings.engine
    for threads, cursors in modes:
        mode = settings.model_copy(update={"threads": threads})
        # one engine held for the mode: each statement's engine is a cursor on its database
        with open_engine(mode, workspace) as held:
            held.run_sql(sqls[0])  # the tables into the buffer pool

            def run(sql: str, mode: Any = mode) -> float:
                with open_engine(mode, workspace) as engine:
                    started = time.perf_counter()
                    engine.run_sql(sql)
                    return time.perf_counter() - started

            cpu = time.process_time()
            started = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(cursors) as pool:
                each = list(pool.map(run, sqls))
            wall = time.perf_counter() - started
            cpu = time.process_time() - cpu
        print(f"engine threads={threads} concurrent={cursors}: {len(sqls)} statements "
              f"in {wall:.2f} s = {len(sqls) / wall:.2f} statements/s; each median "
              f"{statistics.median(each):.2f} s, max {max(each):.2f} s; CPU {cpu:.1f} s")


# ---------------------------------------------------------------------- 2. server


class Server:
    """``medlake serve`` on the workspace with ``[cohort]`` settings, for a ``with`` block."""

    def __init__(self, workspace: Path, *, cache: bool, gate: int | None,
                 threads: int | None = None) -> None:  # fmt: skip
        settings = open_workspace(workspace).settings
        settings.cohort.cache_results = cache
        settings.cohort.concurrent_statements = gate
        settings.engine.threads = threads
        write_settings(workspace / "medlake.toml", settings)
        self.workspace = workspace

    def __enter__(self) -> Server:
        self.served = start_medlake_serve(
            self.workspace, env={"MEDLAKE_LOG_LEVEL": "WARNING"}, timeout=120
        )
        self.base = self.served.api
        return self

    def __exit__(self, *exc: object) -> None:
        self.served.stop()


async def load(base: str, token: str, order: list[int], definitions: list[dict[str, Any]],
               clients: int) -> tuple[list[tuple[int, float, bool, bool]], float]:  # fmt: skip
    """POST the definitions numbered in ``order`` with ``clients`` concurrent clients.

    Returns (definition, latency s, ok, cold) per request and the wall time; a request
    is cold when no answer for its definition had come back when it was sent.
    """
    queue: asyncio.Queue[int] = asyncio.Queue()
    for item in order:
        queue.put_nowait(item)
    answered: set[int] = set()
    results: list[tuple[int, float, bool, bool]] = []
    headers = {"Authorization": f"Bearer {token}"}
    # One TLS context for every client (the URL is plain HTTP; httpx builds one anyway):
    # httpx builds a context per client by default, 20-35 ms of CPU each, and the 32
    # built one after another on the event loop held back the requests already sent, so
    # a cold burst's latencies included up to 1 s of the load client's own set-up.
    tls = ssl.create_default_context()

    async def client() -> None:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits,
                                     timeout=600, verify=tls) as http:  # fmt: skip
            while True:
                try:
                    which = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                cold = which not in answered
                started = time.perf_counter()
                try:
                    response = await http.post("/cohorts/count", json=definitions[which])
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                results.append((which, time.perf_counter() - started, ok, cold))
                answered.add(which)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return results, time.perf_counter() - started


def report(name: str, results: list[tuple[int, float, bool, bool]], wall: float | None) -> None:
    if not results:
        print(f"{name}: no requests")
        return
    latencies = [r[1] for r in results]
    errors = sum(not r[2] for r in results)
    p95 = percentile(latencies, 95)
    rate = f"{len(results) / wall:.1f} req/s, " if wall else ""
    print(f"{name}: {len(results)} requests, {errors} errors, {rate}"
          f"p50 {percentile(latencies, 50):.3f} s, p95 {p95:.3f} s, "
          f"p99 {percentile(latencies, 99):.3f} s, max {max(latencies):.3f} s "
          f"(p95 <= {TARGET_P95:.0f} s: {'met' if p95 <= TARGET_P95 else 'NOT met'})")  # fmt: skip


def run(server: Server, token: str, order: list[int], definitions: list[dict[str, Any]],
        clients: int) -> tuple[list[tuple[int, float, bool, bool]], float]:  # fmt: skip
    """The load; the server's CPU seconds for it (DuckDB's threads included) are printed."""
    cpu = process_cpu(server.served.process.pid)
    done = asyncio.run(load(server.base, token, order, definitions, clients))
    print(f"  server CPU {process_cpu(server.served.process.pid) - cpu:.1f} s "
          f"in {done[1]:.1f} s of wall")  # fmt: skip
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--persons", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=52)
    parser.add_argument("--workdir", type=Path, default=Path("bench-work"))
    parser.add_argument("--from", dest="source", type=Path, default=None,
                        help="a folder holding an already built lake_P_E to copy")  # fmt: skip
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--computed", type=int, default=64, help="requests without the cache")
    parser.add_argument("--warm", type=int, default=640)
    parser.add_argument("--mixed", type=int, default=480)
    parser.add_argument("--skip", nargs="*", default=[], choices=["engine", "nocache", "cache"])
    parser.add_argument("--threads", type=int, default=None,
                        help="[engine] threads for the server (default: all cores)")  # fmt: skip
    parser.set_defaults(as_ingested=False)  # server_load.prepare's option, not used here
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    workspace = prepare(args)
    token = access.issue_token(workspace, STEWARD).token
    definitions = variants()
    cores = os.cpu_count() or 1
    rng = random.Random(11)
    print(f"lake: {args.persons:,} persons, ~{args.events} events each; {len(definitions)} "
          f"definitions; {args.clients} clients; {cores} cores; load average "
          f"{os.getloadavg()[0]:.1f} at the start")  # fmt: skip

    with acting_as(Principal(STEWARD, Role.STEWARD)):
        one = []
        for _ in range(3):
            clear_cache()
            started = time.perf_counter()
            count_cohort(workspace, parse_definition(definitions[0]))
            one.append(time.perf_counter() - started)
    print(f"reference: one count in-process, compiled, cache empty: median "
          f"{statistics.median(one):.3f} s")  # fmt: skip

    if "engine" not in args.skip:
        modes = [(cores, 1), (1, cores), (cores, cores), (cores, 4 * cores), (1, 16)]
        engine_modes(workspace, definitions, modes)

    if "nocache" not in args.skip:
        order = [i % len(definitions) for i in range(args.computed)]
        for gate in (None, args.clients):
            with Server(workspace, cache=False, gate=gate, threads=args.threads) as server:
                results, wall = run(server, token, order, definitions, args.clients)
            label = f"gate {gate or 2 * cores}" + (" (none)" if gate else " (default)")
            report(f"no cache, {label}, every request computed", results, wall)

    if "cache" not in args.skip:
        with Server(workspace, cache=True, gate=None, threads=args.threads) as server:
            cold_order = [i % len(definitions) for i in range(2 * len(definitions))]
            results, wall = run(server, token, cold_order, definitions, args.clients)
            report("cache, cold (each definition's first 2 requests, all at once)", results,
                   wall)  # fmt: skip
            warm_order = [rng.randrange(len(definitions)) for _ in range(args.warm)]
            results, wall = run(server, token, warm_order, definitions, args.clients)
            report("cache, warm (every definition counted before)", results, wall)
        with Server(workspace, cache=True, gate=None, threads=args.threads) as server:
            mixed = [rng.randrange(len(definitions)) for _ in range(args.mixed)]
            results, wall = run(server, token, mixed, definitions, args.clients)
            report("cache, mixed from a cold start (all)", results, wall)
            report("  of which cold", [r for r in results if r[3]], None)
            report("  of which warm", [r for r in results if not r[3]], None)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
