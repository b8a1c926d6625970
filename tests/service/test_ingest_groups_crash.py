"""Groups of day files (landed together, read in child processes, written while the next
group is read): kill -9 at any point, re-run, get the lake an uninterrupted run builds,
and no reading process outlives the killed ingest."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.ingest.test_crash_safety import CLOCK, lake_state
from tests.ingest_workspace import ingest_only_workspace

from medlake.clock import CLOCK_ENV
from medlake.ingest.pause_points import PAUSE_AT_ENV, PAUSE_FILE_ENV
from medlake.synth import generate_hospital

#: Groups of 12 files, read in children from 4 files: a kill finds one group written,
#: the next landed and registered (being read) and a third being landed.
SCRIPT = """
import sys
from pathlib import Path
import medlake.ingest.file_reading as reading
import medlake.service.ingest_groups as groups
from medlake.service.ingest import ingest_paths
groups._GROUP_FILES = 12
reading.CHILDREN_FROM = 4
root, *inputs = sys.argv[1:]
report = ingest_paths(Path(root), [Path(p) for p in inputs], source_system="lis")
assert not report.failed, report.failed
"""


@pytest.fixture(scope="module")
def days(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("hospital")
    generate_hospital(out, patients=25, seed=7, workers=1)
    return sorted((out / "lis").rglob("*.hl7"))[:40]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ingest_only_workspace(tmp_path_factory.mktemp("template") / "ws")


def _run(root: Path, days: list[Path], point: str | None, marker: Path) -> list[int]:
    """Run the ingest (killed at ``point``); the reading processes it had then."""
    env = {**os.environ, CLOCK_ENV: CLOCK}
    if point is not None:
        env |= {PAUSE_AT_ENV: point, PAUSE_FILE_ENV: str(marker)}
    process = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(root), *map(str, days)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    if point is None:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err.decode()[-2000:]
        return []
    deadline = time.monotonic() + 120
    try:
        while not marker.exists():
            if process.poll() is not None:
                raise AssertionError(f"ended before {point}: {process.stderr.read().decode()}")  # type: ignore[union-attr]
            assert time.monotonic() < deadline, f"never reached {point}"
            time.sleep(0.02)
        children = _children(process.pid)
        process.send_signal(signal.SIGKILL)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
    return children


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture(scope="module")
def reference(days: list[Path], template: Path, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("reference") / "ws"
    shutil.copytree(template, root)
    _run(root, days, None, root / "unused")
    return lake_state(root)


@pytest.mark.slow
@pytest.mark.parametrize(
    "point",
    [
        "landed:14",  # the second group landed durably, nothing of it registered
        "registered:30",  # group 2 registered and being read, group 3 being landed
        # Group 3 landed and being read (in a thread, while group 2 is written), none of
        # its batches registered.
        "landed_ahead:2",
        "chunk:2",  # the first group's rows written, not committed
        "before_commit:20",  # the second group's batches marked loaded, not committed
    ],
)
def test_a_killed_grouped_ingest_reruns_to_the_uninterrupted_lake(
    point: str, days: list[Path], template: Path, reference: dict[str, object], tmp_path: Path
) -> None:
    root = tmp_path / "ws"
    shutil.copytree(template, root)
    children = _run(root, days, point, tmp_path / "paused")
    if point.startswith(("registered", "landed_ahead")):
        assert children  # a group was being read in children when killed
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in children if _alive(pid)]  # no reading process left behind
    assert lake_state(root) != reference  # the kill did interrupt something
    _run(root, days, None, tmp_path / "unused")
    assert lake_state(root) == reference
