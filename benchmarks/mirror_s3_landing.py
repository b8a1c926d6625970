"""Landing with a mirror on an S3-compatible store vs a local mirror vs no mirror.

Synthesizes a small hospital, starts moto's standalone S3 server on the loopback (the
store of the tests; a real deployment's store is across a network, so this is the
client side's cost, a lower bound), and lands every exported file ``--repeat`` times in
alternating order on: one root, two local roots, a local root + ``s3://``. Prints the
median seconds of each and the ratios.

    .venv/bin/python benchmarks/mirror_s3_landing.py --patients 500 --repeat 3
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from medlake.ingest.landing import LandingStore, land_file
from medlake.synth import generate_hospital

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.protect.test_mirror_s3 import BUCKET, S3Server


def land_all(files: list[Path], store: LandingStore) -> float:
    started = time.perf_counter()
    for path in files:
        land_file(path, store)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="medlake-s3-landing-"))
    hospital = scratch / "hospital"
    generate_hospital(hospital, args.patients, 1)
    files = sorted(p for p in hospital.rglob("*") if p.is_file() and "truth" not in p.parts)
    size = sum(p.stat().st_size for p in files)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; "
        f"{len(files):,} files, {size / 1e6:.1f} MB"
    )
    server = S3Server(scratch / "moto.log")
    server.start()
    server.client().create_bucket(Bucket=BUCKET)
    times: dict[str, list[float]] = {"one root": [], "local mirror": [], "s3 mirror": []}
    try:
        for rep in range(args.repeat):
            kinds = list(times) if rep % 2 == 0 else list(reversed(times))
            for kind in kinds:
                base = scratch / f"{kind.replace(' ', '-')}-{rep}"
                (base / "a").mkdir(parents=True)
                mirror: Path | str | None = None
                if kind == "local mirror":
                    (base / "b").mkdir()
                    mirror = base / "b"
                elif kind == "s3 mirror":
                    mirror = f"s3://{BUCKET}/rep{rep}"
                store = LandingStore(
                    base / "a", mirror, state_file=base / "state.json",
                    storage_options=server.storage_options(),
                )  # fmt: skip
                times[kind].append(land_all(files, store))
                assert not store.state().get("events"), store.state()  # no side failed
                shutil.rmtree(base)
    finally:
        server.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    one = statistics.median(times["one root"])
    for kind, values in times.items():
        median = statistics.median(values)
        print(
            f"{kind}: median {median:.2f} s ({len(files) / median:,.0f} files/s), "
            f"{100 * (median / one - 1):+.0f} % vs one root; runs {[round(v, 2) for v in values]}"
        )


if __name__ == "__main__":
    main()
