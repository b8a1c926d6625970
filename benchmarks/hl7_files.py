"""HL7 v2 files end to end into the DuckDB lake: messages/s, against a reference tree.

Two inputs from the synthetic hospital's LIS export (``--hospital``, generated with
``--patients`` if missing):

- ``day``: the export as it is, a folder of small day files (~13 messages each);
- ``big``: the same messages as one file (the day files concatenated in order).

Each is ingested into a fresh workspace of its own (EMPI linking and QC after ingest off) with
``ingest_paths(..., source_system="lis")`` under a fixed clock, in a child process,
alternating this tree's ``src`` with a reference tree's (``--reference``, e.g. a git
worktree of the commit before) so both meet the same load on shared cores. Prints per
run the wall time of ``ingest_paths``, messages/s and CPU seconds (the process and its
reading processes), then the medians and the ratio.

    .venv/bin/python benchmarks/hl7_files.py --hospital /tmp/h5k --reference /tmp/ref7/src
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLOCK = "2026-01-02T03:04:05.678000"
HERE = Path(__file__).resolve().parents[1] / "src"

RUN = """
import json, os, sys, time
from pathlib import Path
import medlake.service.ingest as service
from medlake.service.workspace import init_workspace
assert service.__file__.startswith(sys.argv[3]), service.__file__
root, source = Path(sys.argv[1]), Path(sys.argv[2])
init_workspace(root)
settings = root / "medlake.toml"
text = settings.read_text(encoding="utf-8")
text = text.replace("link_after_ingest = true", "link_after_ingest = false")
settings.write_text(text.replace("run_after_ingest = true", "run_after_ingest = false"))
cpu, children = time.process_time(), os.times()
started = time.perf_counter()
report = service.ingest_paths(root, [source], source_system="lis")
seconds = time.perf_counter() - started
after = os.times()
print(json.dumps({
    "seconds": seconds,
    "cpu": time.process_time() - cpu,
    "children_cpu": after.children_user + after.children_system
    - children.children_user - children.children_system,
    "messages": sum(s.read for s in report.sources),
    "failed": len(report.failed),
}))
"""


def run(src: Path, workspace: Path, source: Path) -> dict[str, float]:
    assert not workspace.exists(), workspace
    env = {**os.environ, "PYTHONPATH": str(src), "MEDLAKE_CLOCK": CLOCK}
    out = subprocess.run(
        [sys.executable, "-c", RUN, str(workspace), str(source), str(src)],
        env=env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    import json

    return json.loads(out.stdout.strip().splitlines()[-1])


def one_file(lis: Path, target: Path) -> Path:
    """The day files' messages, in order, as one plain file (MLLP frames unwrapped: a
    plain file's messages start after a line break)."""
    if not target.exists():
        with target.open("wb") as out:
            for path in sorted(p for p in lis.rglob("*") if p.is_file()):
                data = path.read_bytes()
                if path.suffix == ".mllp":
                    data = data.replace(b"\x0b", b"").replace(b"\x1c\r", b"\n")
                out.write(data if data.endswith(b"\n") else data + b"\n")
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hospital", type=Path, help="a synthetic hospital (has lis/)")
    parser.add_argument("--patients", type=int, default=5000)
    parser.add_argument("--reference", type=Path, required=True, help="reference tree's src")
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--inputs", default="day,big")
    parser.add_argument("--scratch", type=Path)
    args = parser.parse_args()
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="medlake-hl7-files-"))
    scratch.mkdir(parents=True, exist_ok=True)
    hospital = args.hospital or scratch / "hospital"
    if not (hospital / "lis").is_dir():
        from medlake.synth import generate_hospital

        generate_hospital(hospital, patients=args.patients, seed=42)
    inputs = {"day": hospital / "lis", "big": one_file(hospital / "lis", scratch / "lis.hl7")}
    trees = {"reference": args.reference.resolve(), "this": HERE}
    now = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"{platform.node()}, {os.cpu_count()} CPUs, {now}")
    # Each run ingests into a workspace of its own, all removed after the last run: a
    # workspace removed just before a run leaves thousands of inodes freed moments ago,
    # which ext4's inode allocator then checks (recently_deleted) for every file the run
    # lands (day folder: 2-2.5 CPU-s of system time more, for either tree; perf, session 9).
    workspaces = Path(tempfile.mkdtemp(prefix="workspaces-", dir=scratch))
    for name in args.inputs.split(","):
        rates: dict[str, list[float]] = {tree: [] for tree in trees}
        for pair in range(args.pairs):
            for tree, src in trees.items():
                r = run(src, workspaces / f"{name}-{tree}-{pair}", inputs[name])
                rate = r["messages"] / r["seconds"]
                rates[tree].append(rate)
                print(f"  {name} {tree:>9} #{pair}: {r['messages']:,} messages in "
                      f"{r['seconds']:6.2f} s = {rate:7,.0f}/s; CPU {r['cpu']:5.1f} s "
                      f"+ children {r['children_cpu']:4.1f} s; failed {r['failed']}")  # fmt: skip
        ref, this = (statistics.median(rates[t]) for t in trees)
        print(f"{name}: median reference {ref:,.0f}/s, this {this:,.0f}/s, x{this / ref:.2f}")
    shutil.rmtree(workspaces, ignore_errors=True)


if __name__ == "__main__":
    main()
