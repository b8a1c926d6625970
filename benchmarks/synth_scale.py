"""How the synthetic hospital scales: wall time and peak memory by number of patients.

Runs ``medlake synth`` as a child process for each size and samples the resident memory
of its whole process tree (the generator and its workers) every 100 ms with psutil.
Bounded memory shows as a peak that stays flat while the patient count grows tenfold;
the script prints that ratio next to the time ratio.

    python benchmarks/synth_scale.py 10000 100000 [1000000] [--workers 2]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil


def tree_rss(process: psutil.Process) -> int:
    total = 0
    for member in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += member.memory_info().rss
    return total


def directory_size(path: Path) -> int:
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file())


def measure(patients: int, workers: int | None, scratch: Path) -> dict[str, float]:
    out = scratch / f"hospital-{patients}"
    command = [
        sys.executable,
        "-m",
        "medlake.cli.main",
        "synth",
        str(out),
        "--patients",
        str(patients),
    ]
    if workers:
        command += ["--workers", str(workers)]
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    watched = psutil.Process(child.pid)
    peak = 0
    while child.poll() is None:
        try:
            peak = max(peak, tree_rss(watched))
        except psutil.NoSuchProcess:
            break
        time.sleep(0.1)
    elapsed = time.perf_counter() - started
    if child.returncode != 0:
        raise SystemExit(f"medlake synth failed for {patients} patients (exit {child.returncode})")
    size = directory_size(out)
    shutil.rmtree(out)
    return {
        "patients": patients,
        "seconds": elapsed,
        "peak_rss_mib": peak / 2**20,
        "output_mib": size / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[10_000, 100_000])
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--scratch", type=Path, default=None)
    args = parser.parse_args()
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="medlake-synth-bench-"))
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB, python {platform.python_version()}"
    )
    results = []
    for patients in args.sizes:
        row = measure(patients, args.workers, scratch)
        results.append(row)
        print(
            f"{patients:>9,} patients: {row['seconds']:8.1f} s "
            f"({patients / row['seconds']:,.0f} patients/s), "
            f"peak RSS {row['peak_rss_mib']:,.0f} MiB, "
            f"output {row['output_mib']:,.0f} MiB"
        )
    for smaller, larger in itertools.pairwise(results):
        size_ratio = larger["patients"] / smaller["patients"]
        print(
            f"x{size_ratio:.0f} patients: time x{larger['seconds'] / smaller['seconds']:.1f}, "
            f"peak memory x{larger['peak_rss_mib'] / smaller['peak_rss_mib']:.2f}"
        )


if __name__ == "__main__":
    main()
