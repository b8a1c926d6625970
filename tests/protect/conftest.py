"""Fixtures for data protection: a small synthetic hospital and mirrored workspaces."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from medlake.config import open_workspace, write_settings
from medlake.service.workspace import init_workspace
from medlake.synth import generate_hospital

MAPPING = "medlake-mapping.toml"


@pytest.fixture(scope="session")
def small_hospital(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("protect-hospital")
    generate_hospital(out, patients=20, seed=5, workers=1)
    return out


def hospital_inputs(hospital: Path) -> list[Path]:
    """HIS (CSV with its mapping), EMR (FHIR) and two LIS day files: 14 inputs."""
    return [hospital / "his", hospital / "emr", *sorted((hospital / "lis").rglob("*.hl7"))[:2]]


def hospital_options(hospital: Path) -> dict[str, object]:
    return {"mapping": hospital / "his" / MAPPING}


@pytest.fixture(scope="session")
def empty_workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return init_workspace(tmp_path_factory.mktemp("protect-template") / "ws").root


@pytest.fixture
def mirrored_workspace(empty_workspace: Path, tmp_path: Path) -> Callable[[], Path]:
    """A fresh workspace whose landing is mirrored to ``<tmp>/mirror``."""

    def make() -> Path:
        root = tmp_path / "ws"
        shutil.copytree(empty_workspace, root)
        (tmp_path / "mirror").mkdir()
        workspace = open_workspace(root)
        settings = workspace.settings.model_copy(deep=True)
        settings.paths.landing_mirror = str(tmp_path / "mirror")
        write_settings(workspace.settings_file, settings)
        return root

    return make
