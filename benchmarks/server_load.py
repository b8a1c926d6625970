"""Benchmark: the HTTP API under load: patient 360 and cohort counts with 32 clients.

A real ``medlake serve`` process serves a lake of ``--persons`` persons (built by
``benchmarks/cohort_count.py``'s builder: persons, observation periods and about
``--events`` events each; reused when it exists, or copied from ``--from``); this
process is the load: ``--clients`` concurrent HTTP clients on loopback (asyncio +
httpx, one connection each), signed in as a data steward, for

* ``GET /persons/{id}/timeline`` (patient 360) on random persons, ``--p360`` requests;
* ``POST /cohorts/count`` with the cohort benchmark's 5-rule definition, ``--counts``
  requests.

Reports per endpoint: requests, errors (any status but 200, or a transport error),
throughput, p50/p95/p99 latency, against the issue's targets (patient 360 p95 <= 20 ms,
cohort count p95 <= 2 s). The reference, in the same script: the same service call in
this process, one at a time, without HTTP (``person_timeline``/``count_cohort``), so
the ratio shows what HTTP, the sign-in and concurrency add on this machine.

Usage: ``python benchmarks/server_load.py --persons 1000000 --events 52
--from /path/with/lake_1000000_52`` (under the heavy lock on a shared machine).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cohort_count import DEFINITION, build_lake
from medlake.access import Principal, Role
from medlake.access.context import acting_as
from medlake.config import open_workspace
from medlake.service import access
from medlake.service.cohort import count_cohort, parse_definition
from medlake.service.patient360 import person_timeline
from medlake.service.workspace import open_lake, upgrade_schema

STEWARD = "bench-steward"


def prepare(args: argparse.Namespace) -> Path:
    name = f"lake_{args.persons}_{args.events}"
    workspace = args.workdir / name
    if not (workspace / "medlake.toml").exists() and args.source is not None:
        shutil.copytree(args.source / name, workspace)
    workspace = build_lake(args.workdir, args.persons, args.events)
    upgrade_schema(workspace)
    if STEWARD not in {u["user_name"] for u in access.list_users(workspace)}:
        access.add_user(workspace, STEWARD, "steward")
    return workspace


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def load(base: str, token: str, requests: list[tuple[str, str, object]],
               clients: int) -> tuple[list[float], int, float]:  # fmt: skip
    """Send ``requests`` with ``clients`` concurrent clients; (latencies s, errors, wall s)."""
    queue: asyncio.Queue[tuple[str, str, object]] = asyncio.Queue()
    for item in requests:
        queue.put_nowait(item)
    latencies: list[float] = []
    errors = 0
    headers = {"Authorization": f"Bearer {token}"}

    async def client() -> None:
        nonlocal errors
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits,
                                     timeout=120) as http:  # fmt: skip
            while True:
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
    await asyncio.gather(*(client() for _ in range(clients)))
    return latencies, errors, time.perf_counter() - started


def report(name: str, latencies: list[float], errors: int, wall: float, target: float,
           reference: float) -> None:  # fmt: skip
    p95 = percentile(latencies, 95)
    print(f"{name}: {len(latencies)} requests, {errors} errors, "
          f"{len(latencies) / wall:.1f} req/s; p50 {percentile(latencies, 50) * 1000:.1f} ms, "
          f"p95 {p95 * 1000:.1f} ms, p99 {percentile(latencies, 99) * 1000:.1f} ms "
          f"(target p95 <= {target * 1000:.0f} ms: {'met' if p95 <= target else 'NOT met'}); "
          f"in-process service call one at a time: median {reference * 1000:.1f} ms, "
          f"p95/reference {p95 / reference:.1f}x")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--persons", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=52)
    parser.add_argument("--workdir", type=Path, default=Path("bench-work"))
    parser.add_argument("--from", dest="source", type=Path, default=None,
                        help="a folder holding an already built lake_P_E to copy")  # fmt: skip
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--p360", type=int, default=2000)
    parser.add_argument("--counts", type=int, default=96)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    workspace = prepare(args)
    token = access.issue_token(workspace, STEWARD).token
    with open_lake(open_workspace(workspace)) as engine:
        people = engine.table("person")
        ids = engine.execute(people.select("person_id").limit(200_000)).column(0).to_pylist()
    rng = random.Random(7)
    persons = [rng.choice(ids) for _ in range(args.p360)]

    # the reference: the services in this process, one call at a time
    definition = parse_definition(DEFINITION)
    with acting_as(Principal(STEWARD, Role.STEWARD)):
        one: list[float] = []
        for person in persons[:50]:
            started = time.perf_counter()
            person_timeline(workspace, person)
            one.append(time.perf_counter() - started)
        counts: list[float] = []
        for _ in range(3):
            started = time.perf_counter()
            count_cohort(workspace, definition)
            counts.append(time.perf_counter() - started)

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "medlake.cli.main", "serve", "--port", str(port),
         "--workspace", str(workspace)],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        env={**os.environ, "MEDLAKE_LOG_LEVEL": "WARNING"},
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}/api/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                httpx.get(f"{base}/health").raise_for_status()
                break
            except httpx.HTTPError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the server did not start") from None
                time.sleep(0.3)
        warm = [("GET", f"/persons/{p}/timeline", None) for p in persons[:64]]
        asyncio.run(load(base, token, warm, args.clients))
        p360 = [("GET", f"/persons/{p}/timeline", None) for p in persons]
        lat, err, wall = asyncio.run(load(base, token, p360, args.clients))
        report("patient 360", lat, err, wall, 0.020, statistics.median(one))
        count_requests = [("POST", "/cohorts/count", DEFINITION)] * args.counts
        lat, err, wall = asyncio.run(load(base, token, count_requests, args.clients))
        report("cohort count", lat, err, wall, 2.0, statistics.median(counts))
    finally:
        server.terminate()
        server.wait(timeout=60)
    print(f"lake: {args.persons:,} persons, ~{args.events} events each; {args.clients} "
          f"clients on loopback; {os.cpu_count()} cores; load average "
          f"{os.getloadavg()[0]:.1f} at the end")  # fmt: skip


if __name__ == "__main__":
    main()
