"""EMPI linkage on the Spark engine against the DuckDB engine, on the same records.

A synthetic hospital's identity records (``--persons`` true persons recorded in HIS,
LIS and EMR with those systems' noise; made by ``benchmarks/empi_linkage.py``'s
``make_records``, from ``medlake.synth``) are loaded into two workspaces, one per
engine (Spark: real PySpark in local mode, ``local[*]``), then on each:

1. ``link_workspace`` from scratch: trains the model (EM, on that engine), scores,
   clusters, writes;
2. ``--new`` more records are added and linked incrementally.

Reported per engine: seconds (per stage), pairs scored, persons, review queue and
pairwise precision/recall against the truth; then the ratio Spark/DuckDB and how many
clusters the two engines agree on. The reference is the DuckDB run in the same script,
so the ratio holds on a shared machine.

    .venv/bin/python benchmarks/empi_spark.py --persons 5000
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import time
from pathlib import Path

from medlake.access.context import acting_as
from medlake.access.policy import Principal, Role
from medlake.config import open_workspace
from medlake.service.empi import link_workspace
from medlake.service.workspace import init_workspace, open_lake

sys.path.insert(0, str(Path(__file__).resolve().parent))
from empi_linkage import RECORDS_PER_PERSON, load, make_records, score


def clusters(workspace: Path) -> set[frozenset[str]]:
    with open_lake(open_workspace(workspace)) as engine:
        rows = engine.execute(engine.table("source_patient")).to_pylist()
    groups: dict[int, set[str]] = {}
    for row in rows:
        groups.setdefault(row["person_id"], set()).add(
            f"{row['source_system']}|{row['source_patient_id']}"
        )
    return {frozenset(g) for g in groups.values()}


def run_engine(kind: str, root: Path, first: list, later: list, truth: dict) -> dict:
    workspace = root / kind
    t = time.perf_counter()
    init_workspace(workspace, engine_kind=kind, name=f"empi-{kind}")
    load(workspace, first)
    setup = time.perf_counter() - t
    t = time.perf_counter()
    outcome = link_workspace(workspace)
    scratch = time.perf_counter() - t
    s = score(workspace, truth)
    print(f"{kind}: set-up {setup:.1f} s; from scratch {len(first):,} records in {scratch:.1f} s "
          f"({ {k: round(v, 1) for k, v in outcome.seconds.items()} }); pairs "
          f"{outcome.pairs_scored:,}, persons {outcome.persons_after:,}, review queue "
          f"{outcome.review_queue:,}; precision {s.precision:.5f} recall {s.recall:.5f}",
          flush=True)  # fmt: skip
    first_clusters = clusters(workspace)
    load(workspace, later)
    t = time.perf_counter()
    incremental = link_workspace(workspace)
    increment = time.perf_counter() - t
    s2 = score(workspace, truth)
    print(f"{kind}: incremental {len(later):,} new in {increment:.1f} s "
          f"({ {k: round(v, 1) for k, v in incremental.seconds.items()} }); "
          f"precision {s2.precision:.5f} recall {s2.recall:.5f}", flush=True)  # fmt: skip
    return {"scratch": scratch, "incremental": increment, "first": first_clusters,
            "final": clusters(workspace), "score": s, "score2": s2}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--persons", type=int, default=5000)
    parser.add_argument("--new", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/medlake-empi-spark-bench"))
    args = parser.parse_args()
    records, truth_list = make_records(int(args.persons * RECORDS_PER_PERSON), args.seed)
    order = list(range(len(records)))
    random.Random(args.seed).shuffle(order)
    new_ids = set(order[: args.new])
    truth = {
        f"{rec['source_system']}|{rec['source_patient_id']}": t
        for rec, t in zip(records, truth_list, strict=True)
    }
    first = [rec for i, rec in enumerate(records) if i not in new_ids]
    later = [rec for i, rec in enumerate(records) if i in new_ids]
    shutil.rmtree(args.workdir, ignore_errors=True)
    results = {}
    # Linking is a data steward's permission (as `medlake empi link` checks it).
    with acting_as(Principal("benchmark", Role.STEWARD)):
        for kind in ("duckdb", "spark"):
            results[kind] = run_engine(kind, args.workdir, first, later, truth)
    duck, spark = results["duckdb"], results["spark"]
    same_first = len(duck["first"] & spark["first"])
    same_final = len(duck["final"] & spark["final"])
    print(f"spark/duckdb: from scratch {spark['scratch'] / duck['scratch']:.1f}x, "
          f"incremental {spark['incremental'] / duck['incremental']:.1f}x; clusters the same "
          f"on both: {same_first:,}/{len(duck['first']):,} after the first link, "
          f"{same_final:,}/{len(duck['final']):,} after the incremental one")  # fmt: skip


if __name__ == "__main__":
    main()
