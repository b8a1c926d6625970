"""Crash safety: kill -9 a real ingest at named points, re-run, get the uninterrupted lake.

The ingest runs in a subprocess with ``MEDLAKE_PAUSE_AT`` set; when it reaches that
point it writes a marker file and sleeps, and the test sends SIGKILL — a real kill -9
at a known moment (see :mod:`medlake.ingest.pause_points`). Running the same ingest
again must end in exactly the lake an uninterrupted run builds: every table, row for
row, timestamps included (``MEDLAKE_CLOCK`` fixes the clock for both).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.ingest_workspace import ingest_only_workspace

from medlake.clock import CLOCK_ENV
from medlake.config import open_workspace
from medlake.ingest.pause_points import PAUSE_AT_ENV, PAUSE_FILE_ENV
from medlake.service.ingest import ingest_paths
from medlake.service.workspace import open_lake
from medlake.synth import generate_hospital

CLOCK = "2026-01-02T03:04:05.678000"
MAPPING = Path(__file__).resolve().parents[2] / "src/medlake/synth/data/his_mapping.toml"
INGEST_SCRIPT = """
import sys
from pathlib import Path
from medlake.service.ingest import ingest_paths
root, mapping, *inputs = sys.argv[1:]
ingest_paths(Path(root), [Path(p) for p in inputs], options={"mapping": Path(mapping)})
"""


@pytest.fixture(scope="module")
def hospital(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("hospital")
    generate_hospital(out, patients=25, seed=7, workers=1)
    lis_days = sorted((out / "lis").rglob("*.hl7"))[:3]
    return [out / "his", out / "emr", *lis_days]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ingest_only_workspace(tmp_path_factory.mktemp("template") / "ws")


@pytest.fixture(scope="module")
def reference(
    hospital: list[Path], template: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, object]:
    root = tmp_path_factory.mktemp("reference") / "ws"
    shutil.copytree(template, root)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CLOCK_ENV, CLOCK)
        report = ingest_paths(root, hospital, options={"mapping": MAPPING})
    assert not report.failed
    return lake_state(root)


QC_HISTORY = {"qc_run", "qc_result"}


def lake_state(root: Path) -> dict[str, object]:
    """Every lake table's rows (sorted) and the landed files.

    Not the data-quality history (``qc_run``, ``qc_result``): it records when checks ran,
    with run ids and times of its own, and a re-run after a crash checks again.
    """
    state: dict[str, object] = {}
    with open_lake(open_workspace(root)) as engine:
        for table in sorted(set(engine.list_tables()) - QC_HISTORY):
            rows = engine.execute(engine.table(table)).to_pylist()
            state[table] = sorted((tuple(row.items()) for row in rows), key=repr)
    landing = root / "landing"
    state["landing/"] = sorted(
        str(p.relative_to(landing))
        for p in landing.rglob("*")
        if p.is_file() and not p.name.startswith(".landing-")
    )
    return state


def run_until_killed(root: Path, inputs: list[Path], point: str, marker: Path) -> None:
    env = {**os.environ, CLOCK_ENV: CLOCK, PAUSE_AT_ENV: point, PAUSE_FILE_ENV: str(marker)}
    process = subprocess.Popen(
        [sys.executable, "-c", INGEST_SCRIPT, str(root), str(MAPPING), *map(str, inputs)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    try:
        while not marker.exists():
            if process.poll() is not None:
                raise AssertionError(
                    f"ingest ended before {point}: {process.stderr.read().decode()[-2000:]}"  # type: ignore[union-attr]
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"ingest never reached {point}")
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL


@pytest.mark.parametrize(
    "point",
    [
        "landed:2",  # the second file landed, its batch not registered
        "registered:4",  # a batch received, never started
        "running:3",  # a batch marked running, nothing written
        "chunk:6",  # a batch's rows written, not committed
        "before_commit:5",  # status loaded written, not committed
        "committed:9",  # killed between two batches
    ],
)
def test_killed_ingest_rerun_equals_uninterrupted_ingest(
    point: str,
    hospital: list[Path],
    template: Path,
    reference: dict[str, object],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = tmp_path / "ws"
    shutil.copytree(template, root)
    run_until_killed(root, hospital, point, tmp_path / "paused")
    assert lake_state(root) != reference  # the kill did interrupt something
    monkeypatch.setenv(CLOCK_ENV, CLOCK)
    report = ingest_paths(root, hospital, options={"mapping": MAPPING})
    assert not report.failed
    assert lake_state(root) == reference
