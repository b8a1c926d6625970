"""Fixtures every test package may use.

``backend``: one lake engine per installed backend. ``hospital_lake``: a small synthetic
hospital ingested into a workspace, shared read-only (copy it to change it).

A test taking ``backend`` runs once on DuckDB (in memory) and once on Spark (marked
``spark``; deselect with ``-m 'not spark'``). Spark takes ~10 s to start, so one
session serves the whole run; the tables a test creates on it are dropped afterwards.
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from medlake.engine import Engine


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Keep every Spark test on one xdist worker, so one Spark session serves them all."""
    for item in items:
        if item.get_closest_marker("spark"):
            item.add_marker(pytest.mark.xdist_group("spark"))


@pytest.fixture(scope="session")
def spark_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    if importlib.util.find_spec("pyspark") is None or shutil.which("java") is None:
        # `make test` installs both; a skip here would hide a broken set-up, so fail.
        # Deselect the Spark tests explicitly with -m "not spark" instead.
        pytest.fail("Spark tests need the 'spark' extra and Java 17+ (make test installs both)")
    from medlake.engine.backends.spark import SparkEngine

    engine = SparkEngine("local[2]", warehouse_dir=tmp_path_factory.mktemp("spark-warehouse"))
    yield engine
    engine.close()


@pytest.fixture(params=["duckdb", pytest.param("spark", marks=pytest.mark.spark)])
def backend(request: pytest.FixtureRequest) -> Iterator[Engine]:
    if request.param == "duckdb":
        from medlake.engine.backends.duckdb import DuckDBEngine

        with DuckDBEngine() as engine:
            yield engine
        return
    engine = request.getfixturevalue("spark_engine")
    before = set(engine.list_tables())
    yield engine
    for name in set(engine.list_tables()) - before:
        engine.drop_table(name)


#: The role a test package's direct service calls run as: the policy checks every service
#: call (docs/access.md), so a test acts as the user who would make the call, e.g. the data
#: steward for patient-level work, the admin for backups and the audit trail. ``None``: no
#: principal in context, so calls resolve as the CLI does ($MEDLAKE_USER, else the login
#: name, which is the admin of a workspace the test made). A test or module overrides it
#: with ``@pytest.mark.acting_as("researcher", projects=[...])`` or ``acting_as(None)``.
ACTING_ROLE: dict[str, str | None] = {
    "access": None, "audit": "admin", "cli": None, "protect": "admin", "server": None,
    "ui": None,
}  # fmt: skip
DEFAULT_ACTING_ROLE = "steward"
_TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module", autouse=True)
def acting_principal_for_module(request: pytest.FixtureRequest) -> Iterator[object]:
    """The same for the module's own (module-scoped) fixtures, which run before a test's."""
    yield from _acting_principal(request)


@pytest.fixture(autouse=True)
def acting_principal(request: pytest.FixtureRequest) -> Iterator[object]:
    """Run the test as a user of the role :data:`ACTING_ROLE` gives its package."""
    yield from _acting_principal(request)


def _acting_principal(request: pytest.FixtureRequest) -> Iterator[object]:
    from medlake.access import Principal, Role
    from medlake.access.context import acting_as

    marker = request.node.get_closest_marker("acting_as")
    projects: list[str] = []
    if marker is not None:
        role = marker.args[0] if marker.args else None
        projects = list(marker.kwargs.get("projects", []))
    else:
        package = Path(str(request.node.path)).resolve().relative_to(_TESTS).parts[0]
        role = ACTING_ROLE.get(package, DEFAULT_ACTING_ROLE)
    if role is None:
        yield None
        return
    principal = Principal(f"test-{role}", Role(role), frozenset(projects))
    with acting_as(principal):
        yield principal


@dataclass(frozen=True)
class HospitalLake:
    """A small synthetic hospital (with its ``truth/``) ingested as the demo does.

    Shared by every test in a worker: treat ``workspace`` as read-only and call
    :meth:`copy` for a workspace of your own to change.
    """

    hospital: Path
    workspace: Path

    @property
    def truth(self) -> Path:
        return self.hospital / "truth"

    def copy(self, to: Path) -> Path:
        """A private copy of the ingested workspace at ``to`` (which must not exist)."""
        shutil.copytree(self.workspace, to, symlinks=True)
        return to


HOSPITAL_PATIENTS = 400
HOSPITAL_SEED = 11


@pytest.fixture(scope="session")
def hospital_lake(tmp_path_factory: pytest.TempPathFactory) -> HospitalLake:
    """A 400-patient synthetic hospital, synthesized and ingested once per test worker.

    The lake is as ingest leaves it *before* linking (``[empi] link_after_ingest`` off):
    one person per source patient, which the tests comparing persons, planted defects
    and counts with ``truth/`` per source patient rely on. ``tests/empi`` link copies.
    """
    from medlake.config import open_workspace, write_settings
    from medlake.service.demo import ingest_hospital
    from medlake.service.workspace import init_workspace
    from medlake.synth import generate_hospital

    root = tmp_path_factory.mktemp("hospital-lake")
    hospital = root / "hospital"
    generate_hospital(hospital, HOSPITAL_PATIENTS, HOSPITAL_SEED)
    workspace = root / "workspace"
    init_workspace(workspace, name="test-hospital")
    settings = open_workspace(workspace).settings
    settings.empi.link_after_ingest = False
    write_settings(workspace / "medlake.toml", settings)
    from medlake.access import Principal, Role
    from medlake.access.context import acting_as

    with acting_as(Principal("test-admin", Role.ADMIN)):  # ingest is an admin's job
        ingest_hospital(workspace, hospital)
    return HospitalLake(hospital, workspace)
