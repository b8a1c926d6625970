"""Writes while serving: a FHIR Bundle's cost with the EMPI link inline (before) and queued
as one background job (now), and a Bundle that meets the person-order rewrite.

    python benchmarks/live_writes.py [--patients 2000] [--bundles 10] [--workdir DIR]

A synthetic hospital is ingested and linked (as the demo does), then copied twice:

- *inline*: ``bundles`` Bundles of one Patient each POSTed through the service as before
  (each ingest links on its own);
- *queued*: the same Bundles with ``link_later`` (what ``POST /fhir`` now does): each
  request joins one ``empi_link`` job, run once at the end.

It prints wall and CPU per Bundle on both, the one job's time, and whether both lakes
hold the same persons. Then ``measurement`` is grown 20-fold and rewritten in person order
in a thread while a Bundle correcting a lab result is posted: the Bundle waits (it used to
fail with a 409) and the wait is printed beside the rewrite's time.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from medlake.access import Permission
from medlake.config import open_workspace, write_settings
from medlake.engine.rewrite_gate import GATES
from medlake.service.demo import ingest_hospital
from medlake.service.fhir_transaction import post_bundle
from medlake.service.jobs import JobRunner
from medlake.service.lake_layout import keep_person_order
from medlake.service.lake_pool import pooled_lake, serving
from medlake.service.live_link import LiveLinks
from medlake.service.policy import require
from medlake.service.workspace import init_workspace, open_lake
from medlake.synth import generate_hospital


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def bundles(hospital: Path, n: int) -> list[dict[str, Any]]:
    lines = (hospital / "emr" / "Patient.ndjson").read_text("utf-8").splitlines()[:n]
    return [{"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": json.loads(line), "request": {"method": "POST", "url": "Patient"}}]}
        for line in lines]  # fmt: skip


def partition(root: Path) -> set[frozenset[str]]:
    with open_lake(open_workspace(root)) as engine:
        rows = engine.execute(engine.table("source_patient")).to_pylist()
    persons: dict[int, set[str]] = {}
    for r in rows:
        name = f"{r['source_system']}/{r['source_patient_id']}"
        persons.setdefault(r["person_id"], set()).add(name)
    return {frozenset(p) for p in persons.values()}


def post_all(
    root: Any, items: list[dict[str, Any]], link_later: Any = None
) -> list[tuple[float, float]]:
    costs = []
    for bundle in items:
        wall, used = time.perf_counter(), cpu()
        post_bundle(root, bundle, source_system="feed", link_later=link_later)
        costs.append((time.perf_counter() - wall, cpu() - used))
    return costs


def show(name: str, costs: list[tuple[float, float]]) -> float:
    walls = [w for w, _ in costs]
    cpus = [c for _, c in costs]
    print(f"{name:>8}: per Bundle wall median {statistics.median(walls) * 1000:7.0f} ms, "
          f"max {max(walls) * 1000:7.0f} ms; "
          f"CPU median {statistics.median(cpus) * 1000:7.0f} ms")  # fmt: skip
    return statistics.median(walls)


def rewrite_beside_a_bundle(root: Path, hospital: Path) -> None:
    workspace = open_workspace(root)
    with open_lake(workspace) as engine:
        engine.run_sql(
            "INSERT INTO measurement SELECT m.* REPLACE (-(k * 100000000 + row_number() OVER ())"
            " AS measurement_id) FROM measurement AS m, range(1, 20) AS r(k)"
        )
        rows = engine.count("measurement")
    with (hospital / "emr" / "Observation.ndjson").open(encoding="utf-8") as lines:
        observation = next(o for o in map(json.loads, lines) if "valueQuantity" in o)
    observation["valueQuantity"]["value"] = 98765.4321
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": observation, "request": {"method": "PUT", "url": "Observation"}}]}  # fmt: skip
    ended: list[float] = []
    with serving(workspace), pooled_lake(workspace) as engine:
        started = time.perf_counter()
        thread = threading.Thread(target=lambda: (keep_person_order(
            engine, workspace, force=True, tables=["measurement"]),
            ended.append(time.perf_counter())))  # fmt: skip
        thread.start()
        lake = str(workspace.lake_path.resolve())
        while "measurement" not in GATES.rewriting(lake) and thread.is_alive():
            time.sleep(0.001)
        posted = time.perf_counter()
        post_bundle(workspace, bundle, source_system="emr")
        answered = time.perf_counter()
        thread.join()
    print(f"rewrite of measurement ({rows:,} rows): {ended[0] - started:.2f} s; a Bundle posted "
          f"{posted - started:.2f} s in was answered after {answered - posted:.2f} s "
          f"({answered - ended[0]:.2f} s after the rewrite committed), no conflict")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=2000)
    parser.add_argument("--bundles", type=int, default=10)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="live-writes-"))
    hospital, base = work / "hospital", work / "base"
    generate_hospital(hospital, args.patients, 7, workers=1)
    init_workspace(base, name="live-writes")
    settings = open_workspace(base).settings
    settings.empi.link_after_ingest = True
    settings.empi.live_link_delay_seconds = 600.0  # released by hand after the last Bundle
    write_settings(base / "medlake.toml", settings)
    ingest_hospital(base, hospital)
    with open_lake(open_workspace(base)) as engine:
        print(f"lake: {args.patients} patients, {engine.count('source_patient'):,} source "
              f"patients, {engine.count('measurement'):,} measurements")  # fmt: skip
    items = bundles(hospital, args.bundles)

    inline = shutil.copytree(base, work / "inline")
    before = show("inline", post_all(inline, items))

    queued = shutil.copytree(base, work / "queued")
    workspace = open_workspace(queued)
    links = LiveLinks(workspace)  # run here once the Bundles stop, as the listener does
    principal = require(workspace, Permission.INGEST)
    costs = post_all(workspace, items, link_later=lambda: links.request(principal))
    now = show("queued", costs)
    started, used = time.perf_counter(), cpu()
    job = links.close(run_now=True)
    assert job is not None
    JobRunner(workspace).run_here(job)
    print(f"  one link job for {links.requested} Bundles: {time.perf_counter() - started:.2f} s "
          f"wall, {cpu() - used:.2f} s CPU")  # fmt: skip
    print(f"per Bundle: {before / now:.1f}x faster; same persons as inline: "
          f"{partition(inline) == partition(queued)}")  # fmt: skip
    rewrite_beside_a_bundle(shutil.copytree(base, work / "rewrite"), hospital)
    if args.workdir is None:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
