"""Benchmark: the HTTP API under load: patient 360 (and cohort counts) with 32 clients.

A real ``medlake serve`` process (``tests/serve_process.py``) serves a lake of
``--persons`` persons (built by ``benchmarks/cohort_count.py``'s builder: persons,
observation periods and about ``--events`` events each; reused when it exists, or copied
from ``--from``); this process is the load: ``--clients`` concurrent HTTP clients on
loopback (asyncio + httpx, one connection each), signed in as a data steward, sending
``GET /persons/{id}/timeline`` (patient 360) for random persons, in two modes:

* **closed loop** (always): every client sends its next request as soon as the last
  one is answered: the most the server can take, and latency is mostly queueing;
* **think time** (``--think-time S``, repeatable): each client waits a random, exponentially
  distributed time of mean ``S`` seconds before each request, as interactive users do:
  the latency a clinician sees at that rate.

Then ``POST /cohorts/count`` with the cohort benchmark's 5-rule definition, ``--counts``
requests, closed loop (0 to skip; ``benchmarks/cohort_load.py`` measures counts fully).

Reports per run: requests, errors (any status but 200, or a transport error), throughput,
p50/p95/p99 latency against the issue's targets (patient 360 p95 <= 20 ms, count p95 <=
2 s), and CPU per request: the server process's CPU seconds (all its threads, from
``/proc``) and this load process's, divided by the requests. The reference, in the same
script: the same service call in this process, one at a time, without HTTP, on engines
lent by the pool as the server does (``person_timeline`` inside ``lake_pool.serving``).

Usage: ``flock /tmp/medlake-heavy.lock python benchmarks/server_load.py --from
/work/cohort-bench --workdir /tmp/srvbench --think-time 1`` (1M persons by default).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import ssl
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(REPO))
from tests.serve_process import medlake_serve  # noqa: E402

from as_ingested import make_as_ingested  # noqa: E402
from cohort_count import DEFINITION, build_lake  # noqa: E402
from medlake.access import Principal, Role  # noqa: E402
from medlake.access.context import acting_as  # noqa: E402
from medlake.config import open_workspace, read_settings, write_settings  # noqa: E402
from medlake.service import access  # noqa: E402
from medlake.service.cohort import count_cohort, parse_definition  # noqa: E402
from medlake.service.lake_pool import serving  # noqa: E402
from medlake.service.patient360 import person_timeline  # noqa: E402
from medlake.service.workspace import open_lake, upgrade_schema  # noqa: E402

STEWARD = "bench-steward"
Request = tuple[str, str, object]


def prepare(args: argparse.Namespace) -> Path:
    name = f"lake_{args.persons}_{args.events}"
    workspace = args.workdir / name
    if args.as_ingested:
        # A copy laid out as ingest leaves a lake (shuffled rows, a provenance row per
        # CDM row): the builder's person-ordered lake without provenance flatters it.
        workspace = args.workdir / f"{name}_ingested"
        if not (workspace / "medlake.toml").exists():
            shutil.copytree(args.source / name if args.source is not None
                            else build_lake(args.workdir, args.persons, args.events),
                            workspace)  # fmt: skip
            settings = read_settings(workspace / "medlake.toml")
            # bounded: the lake is several GB and the machine shared (sorts spill)
            settings.engine.memory_limit = settings.engine.memory_limit or "4GB"
            write_settings(workspace / "medlake.toml", settings)
        upgrade_schema(workspace)  # before: provenance rows get person_id on v5 lakes
        print(f"as ingested: {make_as_ingested(workspace)}")
    elif not (workspace / "medlake.toml").exists() and args.source is not None:
        shutil.copytree(args.source / name, workspace)
    if not args.as_ingested:
        workspace = build_lake(args.workdir, args.persons, args.events)
    upgrade_schema(workspace)
    if STEWARD not in {u["user_name"] for u in access.list_users(workspace)}:
        access.add_user(workspace, STEWARD, "steward")
    return workspace


def reorder(workspace: Path) -> None:
    """Rewrite the person tables in person order, timed (wall and this process's CPU)."""
    from medlake.service.lake_layout import reorder_lake

    started, cpu = time.perf_counter(), time.process_time()
    with acting_as(Principal(STEWARD, Role.STEWARD)):
        done = reorder_lake(workspace, force=True)
    print(f"person-order rewrite: {time.perf_counter() - started:.1f} s wall, "
          f"{time.process_time() - cpu:.1f} s CPU; " + ", ".join(
              f"{t.table} {t.rows:,} rows ({t.share:.0%} out of order) {t.seconds:.1f} s"
              for t in done.tables if t.reordered))  # fmt: skip


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def settle(pid: int, seconds: float, idle_share: float = 0.05) -> None:
    """Wait until the server used under ``idle_share`` of a core for 3 s (at most
    ``seconds``); print how long it took and the CPU it used meanwhile."""
    started, cpu = time.perf_counter(), process_cpu(pid)
    while time.perf_counter() - started < seconds:
        before = process_cpu(pid)
        time.sleep(3)
        if process_cpu(pid) - before < 3 * idle_share:
            break
    print(f"server settled after {time.perf_counter() - started:.0f} s "
          f"({process_cpu(pid) - cpu:.1f} CPU-s of start-up work)")  # fmt: skip


@dataclass
class Run:
    latencies: list[float]
    errors: int
    wall: float
    server_cpu: float
    client_cpu: float


async def load(base: str, token: str, requests: list[Request], clients: int,
               think: float, seed: int) -> tuple[list[float], int, float]:  # fmt: skip
    """Send ``requests`` from ``clients`` concurrent clients, each waiting an exponential
    think time of mean ``think`` s before each request (0: back to back)."""
    queue: asyncio.Queue[Request] = asyncio.Queue()
    for item in requests:
        queue.put_nowait(item)
    latencies: list[float] = []
    errors = 0
    headers = {"Authorization": f"Bearer {token}"}
    # One TLS context for every client (the URL is plain HTTP; httpx builds one anyway):
    # httpx builds a context per client by default, 20-35 ms of CPU each, built one after
    # another on the event loop while earlier clients' requests were in flight, so their
    # measured latencies included the load client's own set-up (as in cohort_load.py).
    tls = ssl.create_default_context()

    async def client(number: int) -> None:
        nonlocal errors
        rng = random.Random(seed * 1000 + number)
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits,
                                     timeout=120, verify=tls) as http:  # fmt: skip
            while True:
                if think > 0:
                    await asyncio.sleep(rng.expovariate(1 / think))
                try:
                    method, url, body = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                started = time.perf_counter()
                try:
                    response = await http.request(method, url, json=body)
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                latencies.append(time.perf_counter() - started)
                errors += not ok

    started = time.perf_counter()
    await asyncio.gather(*(client(n) for n in range(clients)))
    return latencies, errors, time.perf_counter() - started


def measured(pid: int, base: str, token: str, requests: list[Request], clients: int,
             think: float = 0.0, seed: int = 1) -> Run:  # fmt: skip
    server0, client0 = process_cpu(pid), time.process_time()
    latencies, errors, wall = asyncio.run(load(base, token, requests, clients, think, seed))
    return Run(latencies, errors, wall, process_cpu(pid) - server0,
               time.process_time() - client0)  # fmt: skip


def report(name: str, run: Run, target: float, reference: float) -> None:
    n = len(run.latencies)
    p95 = percentile(run.latencies, 95)
    print(f"{name}: {n} requests, {run.errors} errors, {n / run.wall:.1f} req/s; "
          f"p50 {percentile(run.latencies, 50) * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms, "
          f"p99 {percentile(run.latencies, 99) * 1000:.1f} ms "
          f"(target p95 <= {target * 1000:.0f} ms: {'met' if p95 <= target else 'NOT met'}); "
          f"CPU per request: server {run.server_cpu / n * 1000:.1f} ms, load client "
          f"{run.client_cpu / n * 1000:.1f} ms; in-process call one at a time: median "
          f"{reference * 1000:.1f} ms, p95/reference {p95 / reference:.1f}x")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--persons", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=52)
    parser.add_argument("--workdir", type=Path, default=Path("bench-work"))
    parser.add_argument("--from", dest="source", type=Path, default=None,
                        help="a folder holding an already built lake_P_E to copy")  # fmt: skip
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--p360", type=int, default=2000, help="requests per patient 360 run")
    parser.add_argument("--think-time", type=float, action="append", default=[],
                        metavar="SECONDS", help="also run with this mean exponential think "
                        "time per client (repeat for several runs)")  # fmt: skip
    parser.add_argument("--counts", type=int, default=96, help="cohort counts (0: none)")
    parser.add_argument("--as-ingested", action="store_true",
                        help="serve a copy laid out as ingest leaves a lake: rows in random "
                        "order, a source_record row per CDM row (benchmarks/as_ingested.py)")
    parser.add_argument("--reorder", action="store_true",
                        help="first rewrite the person tables in person order "
                        "(medlake schema reorder --all), timed")
    parser.add_argument("--settle", type=float, default=0.0, metavar="SECONDS",
                        help="after the server starts, wait (at most this long) until it is "
                        "idle: background start-up work, such as building patient 360's "
                        "serving copy, done")  # fmt: skip
    parser.add_argument("--in-process", type=int, default=100,
                        help="in-process patient 360 calls for the reference")  # fmt: skip
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    workspace = prepare(args)
    if args.reorder:
        reorder(workspace)
    token = access.issue_token(workspace, STEWARD).token
    with open_lake(open_workspace(workspace)) as engine:
        people = engine.table("person")
        ids = engine.execute(people.select("person_id").limit(200_000)).column(0).to_pylist()
    rng = random.Random(7)
    persons = [rng.choice(ids) for _ in range(args.p360 + 200)]

    # the reference: the services in this process, one call at a time, as the server runs them
    with acting_as(Principal(STEWARD, Role.STEWARD)):
        one: list[float] = []
        with serving(open_workspace(workspace)):
            person_timeline(workspace, persons[-1])  # statements prepared
            cpu = time.process_time()
            for person in persons[-args.in_process:]:
                started = time.perf_counter()
                person_timeline(workspace, person)
                one.append(time.perf_counter() - started)
            cpu = (time.process_time() - cpu) / args.in_process
        counts: list[float] = []
        definition = parse_definition(DEFINITION)
        for _ in range(3 if args.counts else 0):
            started = time.perf_counter()
            count_cohort(workspace, definition)
            counts.append(time.perf_counter() - started)
    print(f"patient 360 in-process, one call at a time ({args.in_process} calls): median "
          f"{statistics.median(one) * 1000:.1f} ms, p95 {percentile(one, 95) * 1000:.1f} ms, "
          f"CPU {cpu * 1000:.1f} ms per call")  # fmt: skip

    with medlake_serve(workspace, env={"MEDLAKE_LOG_LEVEL": "WARNING"}, timeout=180) as server:
        pid, base = server.process.pid, server.api
        warm = [("GET", f"/persons/{p}/timeline", None) for p in persons[-200:-136]]
        measured(pid, base, token, warm, args.clients)
        if args.settle:  # after the first calls: the serving copy is kept from then on
            settle(pid, args.settle)
        p360 = [("GET", f"/persons/{p}/timeline", None) for p in persons[: args.p360]]
        run = measured(pid, base, token, p360, args.clients)
        report("patient 360, closed loop", run, 0.020, statistics.median(one))
        for seed, think in enumerate(args.think_time, start=2):
            run = measured(pid, base, token, p360, args.clients, think=think, seed=seed)
            report(f"patient 360, think time {think:g} s", run, 0.020, statistics.median(one))
        if args.counts:
            count_requests: list[Request] = [("POST", "/cohorts/count", DEFINITION)] * args.counts
            run = measured(pid, base, token, count_requests, args.clients)
            report("cohort count, closed loop", run, 2.0, statistics.median(counts))
    print(f"lake: {args.persons:,} persons, ~{args.events} events each; {args.clients} "
          f"clients on loopback; {os.cpu_count()} cores; load average "
          f"{os.getloadavg()[0]:.1f} at the end")  # fmt: skip


if __name__ == "__main__":
    main()
