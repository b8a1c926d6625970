"""Data-protection figures: mirror overhead on ingest, backup time and size, drill RTO/RPO,
files an encrypting attacker gets through before the ransomware watch freezes the workspace.

Synthesizes a hospital (``--patients``, default 5,000 = the demo), then:

1. ingests it into a fresh workspace without a mirror and into one with a mirror root
   (another folder on the same disk), alternating, ``--repeat`` times; prints records/s
   and the mirror's overhead (goal <= 10 %);
2. on the mirrored workspace: ``backup init``, a first backup, a backup with nothing
   changed, then ingests more (the LIS export, or ``--more`` patients) and backs up
   again: time and size of each (original, and what it added to the repository);
3. a restore drill: RTO and RPO;
4. an attacker process encrypting the workspace's files as fast as it can (XOR with
   random bytes, renamed to ``.locked``) while ``medlake watch`` scans every
   ``--interval`` seconds: the files encrypted when the freeze came.

    .venv/bin/python benchmarks/protect_figures.py --patients 5000 [--skip-lis]
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
import threading
import time
from pathlib import Path

from medlake.config import open_workspace, write_settings
from medlake.ingest.landing import LandingStore, land_file
from medlake.service import backup, watch
from medlake.service.ingest import ingest_paths
from medlake.service.workspace import init_workspace
from medlake.synth import generate_hospital

ATTACKER = r"""
import os, sys
from pathlib import Path
import numpy as np
root, counter = Path(sys.argv[1]), Path(sys.argv[2])
files = [p for p in root.rglob("*") if p.is_file() and "protect" not in p.parts]
files.sort(key=lambda p: ("landing" not in p.parts, p.name))
done = 0
for path in files:
    data = path.read_bytes()
    key = os.urandom(len(data))
    locked = np.frombuffer(data, np.uint8) ^ np.frombuffer(key, np.uint8)
    (path.with_name(path.name + ".locked")).write_bytes(locked.tobytes())
    path.unlink()
    done += 1
    counter.write_text(str(done))
"""


def ingest_all(root: Path, hospital: Path, sources: list[str]) -> tuple[float, int]:
    """Seconds and records read for the hospital's sources, in the demo's order."""
    started = time.perf_counter()
    records = 0
    for system in sources:
        options = {"mapping": hospital / "his" / "medlake-mapping.toml"} if system == "his" else {}
        report = ingest_paths(
            root,
            [hospital / system],
            source_system="biobank" if system == "omics" else system,
            options=options,
        )
        records += sum(s.read for s in report.sources)
    return time.perf_counter() - started, records


def new_workspace(scratch: Path, name: str, mirror: bool) -> Path:
    """A workspace; linkage and QC after ingest are off, so ingest itself is measured."""
    root = scratch / name
    init_workspace(root)
    workspace = open_workspace(root)
    settings = workspace.settings.model_copy(deep=True)
    settings.empi.link_after_ingest = False
    settings.quality.run_after_ingest = False
    if mirror:
        (scratch / f"{name}-mirror").mkdir()
        settings.paths.landing_mirror = str(scratch / f"{name}-mirror")
    write_settings(workspace.settings_file, settings)
    return root


def landing_only(scratch: Path, hospital: Path) -> tuple[float, float, int]:
    """Seconds to land every file of the hospital on one root, and on two (fsync'd)."""
    files = sorted(p for p in hospital.rglob("*") if p.is_file() and "truth" not in p.parts)
    size = sum(p.stat().st_size for p in files)
    (scratch / "l1").mkdir()
    (scratch / "l2a").mkdir()
    (scratch / "l2b").mkdir()
    started = time.perf_counter()
    for path in files:
        land_file(path, scratch / "l1")
    one = time.perf_counter() - started
    store = LandingStore(scratch / "l2a", scratch / "l2b", state_file=scratch / "state.json")
    started = time.perf_counter()
    for path in files:
        land_file(path, store)
    two = time.perf_counter() - started
    for folder in ("l1", "l2a", "l2b"):
        shutil.rmtree(scratch / folder)
    return one, two, size


def mb(value: float) -> str:
    return f"{value / 1e6:,.1f} MB"


def ransomware(root: Path, scratch: Path, interval: float) -> None:
    """An attacker encrypting a copy of the workspace at full speed, the watch scanning."""
    victim = scratch / "victim"
    shutil.copytree(root, victim, symlinks=True)
    files = sum(1 for p in victim.rglob("*") if p.is_file() and "protect" not in p.parts)
    settings = open_workspace(victim).settings
    counter = scratch / "encrypted"
    stop, scanned = threading.Event(), threading.Event()
    outcome: dict[str, object] = {}

    def run_watch() -> None:
        outcome["record"] = watch.watch(
            victim, stop=stop, interval=interval, on_scan=lambda n: scanned.set()
        )
        outcome["encrypted"] = int(counter.read_text()) if counter.exists() else 0

    watcher = threading.Thread(target=run_watch)
    watcher.start()
    scanned.wait(600)  # the baseline scan and one more are done
    attacker = subprocess.Popen([sys.executable, "-c", ATTACKER, str(victim), str(counter)])
    started = time.perf_counter()
    watcher.join(timeout=300)
    attacker.kill()
    attacker.wait()
    stop.set()
    record = outcome.get("record") or {}
    print(
        f"ransomware: attacker at full speed on {files:,} files; watch every "
        f"{interval:g} s (rename burst {settings.watch.rename_burst}): frozen after "
        f"{time.perf_counter() - started:.1f} s with {outcome.get('encrypted')} files encrypted "
        f"({record.get('reason')})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=5, help="alternating pairs")
    parser.add_argument("--skip-lis", action="store_true", help="leave the LIS out (slow)")
    parser.add_argument("--skip-landing", action="store_true", help="no landing-alone timing")
    parser.add_argument(
        "--workspace",
        type=Path,
        help="an ingested workspace with a backup repository (an interrupted run's): take an "
        "incremental backup, run the drill and the attacker on it; no synthesis, no ingest",
    )
    parser.add_argument("--interval", type=float, default=2.0, help="watch scan interval (s)")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="medlake-protect-bench-"))
    if args.workspace is not None:
        after = backup.run_backup(args.workspace)
        print(
            f"incremental backup: {after.seconds:.1f} s, {mb(after.stats.original_size)} in all, "
            f"added {mb(after.stats.deduplicated_size)}"
        )
        print(backup.drill(args.workspace).summary())
        ransomware(args.workspace, scratch, args.interval)
        shutil.rmtree(scratch, ignore_errors=True)
        return
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, python "
        f"{platform.python_version()}, load {os.getloadavg()[0]:.1f}; "
        f"{args.patients:,} patients, seed {args.seed}"
    )
    hospital = scratch / "hospital"
    generate_hospital(hospital, args.patients, args.seed)
    first_sources = ["his", "emr", "omics"]

    # 1. mirror overhead
    plain_times, mirror_times, records = [], [], 0
    for rep in range(args.repeat):
        for mirrored in (False, True) if rep % 2 == 0 else (True, False):
            root = new_workspace(scratch, f"rep{rep}-{'m' if mirrored else 'p'}", mirrored)
            seconds, records = ingest_all(root, hospital, first_sources)
            (mirror_times if mirrored else plain_times).append(seconds)
            if not (rep == args.repeat - 1 and mirrored):
                shutil.rmtree(root)
                shutil.rmtree(root.with_name(f"{root.name}-mirror"), ignore_errors=True)
            else:
                workspace_root = root
    plain, mirrored = statistics.median(plain_times), statistics.median(mirror_times)
    # Each pair ran back to back, so its ratio is less exposed to the shared machine's drift.
    ratios = [m / p for p, m in zip(plain_times, mirror_times, strict=True)]
    print(
        f"ingest HIS+EMR+biobank, {records:,} records: no mirror {plain:.2f} s "
        f"({records / plain:,.0f}/s), mirrored {mirrored:.2f} s ({records / mirrored:,.0f}/s); "
        f"mirror overhead {100 * (mirrored / plain - 1):+.1f} % (medians of {args.repeat}), "
        f"median of pair ratios {100 * (statistics.median(ratios) - 1):+.1f} %; "
        f"all runs: {[round(t, 2) for t in plain_times]} vs {[round(t, 2) for t in mirror_times]}"
    )

    one, two, size = landing_only(scratch, hospital) if not args.skip_landing else (1, 1, 0)
    print(
        f"landing alone, {mb(size)}: one root {one:.2f} s, two roots {two:.2f} s "
        f"({100 * (two / one - 1):+.0f} %; each root fsync'd before the call returns)"
    )

    # 2. backups
    root = workspace_root
    backup.init_backups(root)
    first = backup.run_backup(root)
    print(
        f"first backup: {first.seconds:.1f} s, {first.stats.files:,} files, "
        f"{mb(first.stats.original_size)} → {mb(first.stats.deduplicated_size)} in the repository"
    )
    time.sleep(1)
    same = backup.run_backup(root)
    print(
        f"second backup, nothing changed: {same.seconds:.1f} s, "
        f"added {mb(same.stats.deduplicated_size)}"
    )
    more = [] if args.skip_lis else ["lis"]
    if more:
        seconds, lis_records = ingest_all(root, hospital, more)
        print(f"then ingested the LIS: {lis_records:,} messages in {seconds:.1f} s")
        time.sleep(1)
        after = backup.run_backup(root)
        print(
            f"incremental backup after the LIS: {after.seconds:.1f} s, "
            f"{mb(after.stats.original_size)} in all, added {mb(after.stats.deduplicated_size)}"
        )

    # 3. drill
    result = backup.drill(root)
    print(result.summary())

    # 4. ransomware
    ransomware(root, scratch, args.interval)
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
