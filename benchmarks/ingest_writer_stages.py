"""FHIR ingest: resources/s end to end and the writer's CPU per stage, against a reference.

Ingests an EMR FHIR export (``--emr DIR``, else one synthesized with ``--patients``) into
fresh workspaces (EMPI linking and QC after ingest off: ingest alone), the reader in a
forked child for files of 16 MiB or more, as ``medlake ingest`` does. Each run is a
child Python process, alternating between this checkout's ``src`` and ``--reference``
(another checkout's ``src``, e.g. ``git archive HEAD~1 src | tar -x -C /tmp/ref``), so
both see the same load on a shared machine; medians of ``--pairs`` runs are printed
with the ratio.

The stages are timed in CPU seconds of the ingesting process (``time.process_time``:
DuckDB's threads included, the reading child not), by wrapping the writer's functions
in the child; a stage's time includes the stages it calls, so the rows overlap.

    .venv/bin/python benchmarks/ingest_writer_stages.py --patients 5000 --reference /tmp/ref/src
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# (module, attribute) of the functions timed; a method is "module:Class.method".
STAGES = {
    "write_batch (single files)": [("medlake.service.ingest", "write_batch"),
                                   ("medlake.service.ingest_groups", "write_batch")],
    "write_batch_group (small files)": [("medlake.service.ingest_groups", "write_batch_group")],
    "  write_chunk": [("medlake.ingest.writer", "LakeWriter.write_chunk")],
    "    row ids (with_row_ids)": [("medlake.ingest.writer", "with_row_ids")],
    "    current provenance (_current_of)": [("medlake.ingest.writer", "LakeWriter._current_of")],
    "    derive_columns": [("medlake.ingest.writer", "derive_columns"),
                           ("medlake.ingest.group_writer", "derive_columns")],
    "      concept mapping": [("medlake.ingest.concepts", "ConceptMapper.map_table")],
    "      row/visit ids (stable_ids)": [("medlake.ingest.cdm_rows", "stable_ids"),
                                         ("medlake.ingest.cdm_rows", "stable_ids_by_system")],
    "      person ids": [("medlake.ingest.identities", "PersonResolver.person_ids")],
    "    store rows + provenance": [("medlake.ingest.writer", "LakeWriter._store_rows")],
    "  observation periods": [("medlake.ingest.writer", "update_observation_periods"),
                              ("medlake.ingest.group_writer", "update_observation_periods")],
    "person-order rewrite after ingest": [("medlake.service.lake_layout", "after_ingest")],
    "DuckDB inserts (load_arrow)": [("medlake.engine.backends.duckdb",
                                     "DuckDBEngine._insert_batches")],
    "DuckDB commits": [("medlake.engine.backends.duckdb", "DuckDBEngine._commit")],
    "landing (copy + hash)": [("medlake.service.ingest", "land_file"),
                              ("medlake.service.ingest_groups", "land_file")],
}  # fmt: skip

CHILD = r"""
import collections, functools, importlib, json, resource, shutil, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from ingest_writer_stages import STAGES
from ingest_throughput import fresh_workspace
import medlake.service.ingest as service

spent = collections.Counter()
def timed(function, label):
    running = [False]
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        if running[0]:
            return function(*args, **kwargs)
        running[0], started = True, time.process_time()
        try:
            return function(*args, **kwargs)
        finally:
            spent[label] += time.process_time() - started
            running[0] = False
    return wrapper
for label, targets in STAGES.items():
    for module_name, name in targets:
        owner = importlib.import_module(module_name)
        *path, attribute = name.split(".")
        for part in path:
            owner = getattr(owner, part)
        if hasattr(owner, attribute):  # a reference checkout may not have every stage
            setattr(owner, attribute, timed(getattr(owner, attribute), label))
service._READ_IN_PROCESS_FROM = 16 << 20
workspace = fresh_workspace(Path(tempfile.mkdtemp(prefix="medlake-stages-")) / "workspace")
started, cpu = time.perf_counter(), time.process_time()
report = service.ingest_paths(workspace, [Path(sys.argv[1])], source_system="emr")
wall, cpu = time.perf_counter() - started, time.process_time() - cpu
resources = sum(row.read for row in report.sources)
children = resource.getrusage(resource.RUSAGE_CHILDREN)
result = {"wall": wall, "cpu": cpu, "resources": resources, "stages": spent,
          "readers": children.ru_utime + children.ru_stime}
Path(sys.argv[2]).write_text(json.dumps(result))
shutil.rmtree(workspace.parent)  # ~0.9 GB a run at 1M
"""


def run_once(src: Path, emr: Path, scratch: Path) -> dict:
    out = scratch / "result.json"
    env = dict(os.environ, PYTHONPATH=str(src))
    subprocess.run(
        [sys.executable, "-c", CHILD, str(emr), str(out), str(ROOT / "benchmarks")],
        env=env, check=True, cwd=scratch,
    )  # fmt: skip
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emr", type=Path, help="an EMR FHIR export (default: synthesize)")
    parser.add_argument("--patients", type=int, default=5000)
    parser.add_argument("--reference", type=Path, help="another checkout's src to compare")
    parser.add_argument("--pairs", type=int, default=2)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="medlake-stages-bench-"))
    emr = args.emr
    if emr is None:
        from medlake.synth import generate_hospital

        generate_hospital(scratch / "hospital", args.patients, 1)
        emr = scratch / "hospital" / "emr"
    sources = {"this": ROOT / "src"}
    if args.reference is not None:
        sources["reference"] = args.reference.resolve()
    runs: dict[str, list[dict]] = {name: [] for name in sources}
    for _ in range(args.pairs):
        for name, src in sources.items():
            result = run_once(src, emr, scratch)
            runs[name].append(result)
            count, wall, cpu = result["resources"], result["wall"], result["cpu"]
            print(f"  {name:>9}: {count:,} resources in {wall:5.1f} s = {count / wall:8,.0f}/s; "
                  f"CPU {cpu:.2f} s = {count / cpu:8,.0f}/s; "
                  f"reading processes {result.get('readers', 0.0):.2f} s")  # fmt: skip
    medians = {
        name: {
            "cpu": statistics.median(r["cpu"] for r in results),
            "wall": statistics.median(r["wall"] for r in results),
            "readers": statistics.median(r.get("readers", 0.0) for r in results),
            **{
                label: statistics.median(r["stages"].get(label, 0.0) for r in results)
                for label in STAGES
            },
        }
        for name, results in runs.items()
    }
    resources = runs["this"][0]["resources"]
    names = list(sources)
    print(f"\nmedians of {args.pairs} ({resources:,} resources), CPU seconds in the ingesting "
          "process:")  # fmt: skip
    ratio_head = "      ratio" if len(names) > 1 else ""
    print(f"{'':40}" + "".join(f"{n:>11}" for n in names) + ratio_head)
    for label in ("wall", "cpu", "readers", *STAGES):
        values = [medians[n][label] for n in names]
        ratio = f"{values[0] / values[1]:11.2f}" if len(values) > 1 and values[1] else ""
        print(f"{label:40}" + "".join(f"{v:11.2f}" for v in values) + ratio)
    for name in names:
        wall, cpu = medians[name]["wall"], medians[name]["cpu"]
        print(f"{name}: {resources / wall:,.0f} resources/s wall, "
              f"{resources / cpu:,.0f}/s per CPU second of the ingesting process")  # fmt: skip
    shutil.rmtree(scratch)  # the synthesized export, if any


if __name__ == "__main__":
    main()
