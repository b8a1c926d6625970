"""Benchmark: CPU of one patient 360 call by component, this tree against a reference tree.

In-process, one call at a time, on engines lent by the pool as ``medlake serve`` runs
them (``lake_pool.serving``), signed in as a data steward, random persons:

* **audited read**: ``record_read`` of one person on a pooled engine (one event, not
  grouped with others: the cost a lone reader pays);
* **items statement**: the prepared ``UNION ALL`` of the person's rows, run alone;
* **whole call**: ``person_timeline`` (person row, items, sources, omics, the audited
  read overlapping them in a second thread), CPU of every thread of the process;
* **around the items** = whole call - items statement.

CPU is ``time.process_time`` per call (all threads), median over ``--calls`` calls. Each
tree runs in a child process with its own ``src`` on ``PYTHONPATH`` and its own copy of
the lake (``--from``; a reference from before schema v5 cannot open an upgraded lake),
reference and this tree alternately, ``--rounds`` times, so both see the same machine.

Usage: ``flock /tmp/medlake-heavy.lock python benchmarks/p360_call.py --from
/work/cohort-bench --workdir /tmp/p360call/components --reference /path/to/ref/src``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STEWARD = "bench-steward"
COMPONENTS = ("audited read", "items statement", "whole call", "around the items")


def _median_cpu_ms(calls: list[int], call: Callable[[int], object]) -> float:
    spent = []
    for person in calls:
        started = time.process_time()
        call(person)
        spent.append((time.process_time() - started) * 1000)
    return statistics.median(spent)


def child(workspace_dir: Path, calls: int) -> dict[str, float]:
    """Measure in this process (the ``medlake`` on ``sys.path``); figures in ms CPU."""
    from medlake.access import Principal, Role
    from medlake.access.context import acting_as
    from medlake.config import open_workspace
    from medlake.service import access
    from medlake.service import patient360 as p360
    from medlake.service.lake_pool import pooled_lake, serving
    from medlake.service.policy import record_read
    from medlake.service.workspace import open_lake, upgrade_schema

    upgrade_schema(workspace_dir)
    if STEWARD not in {u["user_name"] for u in access.list_users(workspace_dir)}:
        access.add_user(workspace_dir, STEWARD, "steward")
    workspace = open_workspace(workspace_dir)
    with open_lake(workspace) as engine:
        people = engine.table("person")
        ids = engine.execute(people.select("person_id").limit(200_000)).column(0).to_pylist()
    rng = random.Random(11)
    persons = [rng.choice(ids) for _ in range(calls)]
    out: dict[str, float] = {}
    with acting_as(Principal(STEWARD, Role.STEWARD)), serving(workspace):
        for person in persons[:20]:  # statements prepared, pool filled
            p360.person_timeline(workspace, person)
        with pooled_lake(workspace) as engine:
            out["audited read"] = _median_cpu_ms(
                persons,
                lambda p: record_read(
                    engine, "person", str(p), person_ids=[p], detail={"view": "timeline"}
                ),
            )
            statements = p360._statements(engine)
            items = p360._items_query(engine, statements, False)
            assert items is not None
            out["items statement"] = _median_cpu_ms(
                persons, lambda p: engine.run_prepared(items, [p] * items.parameter_count)
            )
        out["whole call"] = _median_cpu_ms(persons, lambda p: p360.person_timeline(workspace, p))
    out["around the items"] = out["whole call"] - out["items statement"]
    return out


def run_child(src: Path, workspace: Path, calls: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(src), "MEDLAKE_LOG_LEVEL": "WARNING"}
    done = subprocess.run(
        [sys.executable, __file__, "--child", str(workspace), "--calls", str(calls)],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"{src}: the measuring child failed:\n{done.stderr[-3000:]}")
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--from", dest="source", type=Path, help="folder holding lake_P_E")
    parser.add_argument("--lake", default="lake_1000000_52")
    parser.add_argument("--workdir", type=Path, default=Path("bench-work/p360_call"))
    parser.add_argument(
        "--reference",
        type=Path,
        required=False,
        help="the src folder of the reference tree (a git worktree)",
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.calls)))
        return
    trees = {"this tree": REPO / "src"}
    if args.reference is not None:
        trees = {"reference": args.reference, **trees}
    lakes = {}
    for name in trees:
        lakes[name] = args.workdir / name.replace(" ", "_") / args.lake
        if not (lakes[name] / "medlake.toml").exists():
            shutil.copytree(args.source / args.lake, lakes[name])
    results: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    for round_ in range(1, args.rounds + 1):
        for name, src in trees.items():
            started = time.perf_counter()
            results[name].append(run_child(src, lakes[name], args.calls))
            print(f"round {round_} {name}: " + ", ".join(
                f"{k} {v:.2f}" for k, v in results[name][-1].items()) +
                f" ms CPU ({time.perf_counter() - started:.0f} s, load "
                f"{os.getloadavg()[0]:.1f})", flush=True)  # fmt: skip
    print(f"median CPU per call over {args.rounds} rounds x {args.calls} calls (ms):")
    for component in COMPONENTS:
        row = {name: statistics.median(r[component] for r in runs)
               for name, runs in results.items()}  # fmt: skip
        ratio = ""
        if "reference" in row and row["this tree"] > 0:
            ratio = f"  (x{row['reference'] / row['this tree']:.2f} less)"
        print(f"  {component:18s} " + "  ".join(f"{n} {v:6.2f}" for n, v in row.items()) + ratio)


if __name__ == "__main__":
    main()
