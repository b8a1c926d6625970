"""Benchmark: new cohort definitions counted from shared steps vs one statement each.

In this process (no HTTP), on a copy of the cohort benchmark's lake, held open and
lending pooled engines as ``medlake serve`` does, two scenarios per mode:

* **16 cold**: ``cohort_load.py``'s 16 definitions (the 5-rule definition with age
  18/40/50/65 x HbA1c > 7/8 % x metformin within 90/180 days) arrive at once, caches
  empty, each in its own thread: wall time until the last answer, per-definition
  latency, process CPU (DuckDB's threads included);
* **UI edits**: a researcher editing in the cohort builder (live attrition): a sequence
  of definitions, each one change from the one before (a threshold, a window, a rule
  removed or added, the prior observation), counted one after another from empty
  caches: per-edit wall and CPU.

Modes, alternated per round in the same process: ``one statement`` (``[cohort]
step_cache_mb = 0``: the session-4 way, each new definition one attrition statement)
and ``steps`` (shared step results, the default). Both must give the same counts
(checked). Usage: ``flock /tmp/medlake-heavy.lock python benchmarks/cohort_steps.py
--workspace COPY_OF/lake_1000000_52`` (never the original: settings are written).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import copy
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cohort_count import DEFINITION
from cohort_load import percentile, variants
from medlake.access import Principal, Role
from medlake.access.context import acting_as
from medlake.config import open_workspace, write_settings
from medlake.service.cohort import count_cohort, parse_definition
from medlake.service.cohort_query import clear_cache
from medlake.service.cohort_steps import step_cache_bytes, step_stats
from medlake.service.lake_pool import serving
from medlake.service.workspace import upgrade_schema

STEWARD = Principal("bench-steward", Role.STEWARD)


def edits() -> list[dict[str, Any]]:
    """A cohort-builder session: each definition one change from the one before."""
    out: list[dict[str, Any]] = []
    d = copy.deepcopy(DEFINITION)

    def step(change: Any) -> None:
        change(d)
        out.append(copy.deepcopy(d))

    def rule(i: int) -> dict[str, Any]:
        return d["inclusion_rules"][i]["expression"]

    def hba1c(v: float) -> Any:
        return lambda d: rule(0)["criteria"][0]["criterion"]["value_as_number"].update(value=v)

    def metformin(v: int) -> Any:
        return lambda d: rule(1)["criteria"][0]["start_window"].update(end=v)

    def age(v: int) -> Any:
        return lambda d: rule(2)["demographics"][0]["age"].update(value=v)

    step(lambda d: None)  # the definition as first written
    step(hba1c(7.5))
    step(hba1c(8))
    step(metformin(120))
    step(metformin(180))
    step(age(40))
    step(age(50))
    step(lambda d: d["inclusion_rules"].pop())  # drop the visits rule
    step(lambda d: d["inclusion_rules"].append(copy.deepcopy(DEFINITION["inclusion_rules"][4])))
    step(lambda d: d["inclusion_rules"][4]["expression"]["criteria"][0]["occurrence"].update(
        count=3))  # fmt: skip
    step(lambda d: d["primary_criteria"].update(prior_observation_days=180))  # a new index
    step(hba1c(7))
    return out


def count(workspace: Path, definition: dict[str, Any]) -> tuple[float, tuple[int, ...]]:
    started = time.perf_counter()
    with acting_as(STEWARD):
        result = count_cohort(workspace, parse_definition(definition), exact=True)
    counts = (result.initial, *(r.remaining for r in result.rules),
              *(r.satisfied_alone for r in result.rules))  # fmt: skip
    return time.perf_counter() - started, counts


def set_mode(workspace: Path, steps: bool) -> None:
    settings = open_workspace(workspace).settings
    settings.cohort.step_cache_mb = 256 if steps else 0
    write_settings(workspace / "medlake.toml", settings)


def cold16(workspace: Path, definitions: list[dict[str, Any]]) -> dict[str, Any]:
    clear_cache()
    cpu = time.process_time()
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(len(definitions)) as pool:
        done = list(pool.map(lambda d: count(workspace, d), definitions))
    return {
        "wall": time.perf_counter() - started,
        "cpu": time.process_time() - cpu,
        "latencies": [w for w, _ in done],
        "counts": [c for _, c in done],
    }


def edit_session(workspace: Path, sequence: list[dict[str, Any]]) -> dict[str, Any]:
    clear_cache()
    walls, cpus, counts = [], [], []
    for definition in sequence:
        cpu = time.process_time()
        wall, found = count(workspace, definition)
        walls.append(wall)
        cpus.append(time.process_time() - cpu)
        counts.append(found)
    return {"walls": walls, "cpus": cpus, "counts": counts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    workspace = args.workspace
    definitions = variants()
    sequence = edits()
    print(f"{workspace.name}: {len(definitions)} definitions at once; {len(sequence)} edits; "
          f"{os.cpu_count()} cores; load {os.getloadavg()[0]:.1f} at the start")  # fmt: skip
    results: dict[str, list[dict[str, Any]]] = {"one statement": [], "steps": []}
    sessions: dict[str, list[dict[str, Any]]] = {"one statement": [], "steps": []}
    upgrade_schema(workspace)
    with serving(open_workspace(workspace)) as held:
        held.execute(held.table("measurement").count().as_table())  # warm the file cache
        for round_ in range(args.rounds):
            for mode in (
                ("one statement", "steps") if round_ % 2 == 0 else ("steps", "one statement")
            ):
                set_mode(workspace, mode == "steps")
                cold = cold16(workspace, definitions)
                stats = step_stats()
                results[mode].append(cold)
                lat = cold["latencies"]
                print(f"round {round_ + 1} {mode:>13}, 16 cold at once: wall {cold['wall']:.2f} s, "
                      f"CPU {cold['cpu']:.2f} s, latency p50 {percentile(lat, 50):.2f} s, "
                      f"p95 {percentile(lat, 95):.2f} s, max {max(lat):.2f} s"
                      + (f"; steps computed {stats.computed}, shared {stats.shared}, "
                         f"hits {stats.hits}, statements {stats.statements}, "
                        f"kept {step_cache_bytes() / 1e6:.1f} MB"
                         if mode == "steps" else ""))  # fmt: skip
                session = edit_session(workspace, sequence)
                sessions[mode].append(session)
                walls, cpus = session["walls"], session["cpus"]
                print(f"round {round_ + 1} {mode:>13}, {len(walls)} edits one by one: total wall "
                      f"{sum(walls):.2f} s, CPU {sum(cpus):.2f} s; per edit after the first: "
                      f"median {statistics.median(walls[1:]):.3f} s, max {max(walls[1:]):.3f} s, "
                      f"CPU median {statistics.median(cpus[1:]):.3f} s; "
                      f"each: {' '.join(f'{w:.2f}' for w in walls)}")  # fmt: skip
    set_mode(workspace, True)
    same = all(r["counts"] == results["one statement"][0]["counts"] for m in results
               for r in results[m])  # fmt: skip
    same_edits = all(s["counts"] == sessions["one statement"][0]["counts"] for m in sessions
                     for s in sessions[m])  # fmt: skip
    print(f"same counts in every mode: 16 definitions {same}, edits {same_edits}")
    for label, key in (("16 cold wall", "wall"), ("16 cold CPU", "cpu")):
        one = statistics.median(r[key] for r in results["one statement"])
        steps = statistics.median(r[key] for r in results["steps"])
        print(f"{label}: one statement {one:.2f} s, steps {steps:.2f} s, ratio {one / steps:.1f}x")
    for label, key in (("edit session wall", "walls"), ("edit session CPU", "cpus")):
        one = statistics.median(sum(s[key]) for s in sessions["one statement"])
        steps = statistics.median(sum(s[key]) for s in sessions["steps"])
        print(f"{label}: one statement {one:.2f} s, steps {steps:.2f} s, ratio {one / steps:.1f}x")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
