"""``medlake extract``: the bundled demo cohort and feature spec, end to end on the
synthetic hospital, against the cohort's own member list."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from medlake.cli import extract as extract_cli
from medlake.cohort import example_path
from medlake.config import open_workspace
from medlake.privacy import pseudonym
from medlake.service.cohort import cohort_members, load_definition
from medlake.service.extract import example_features_path, extract_demo_cohort
from medlake.service.workspace import pseudonym_secret


@pytest.mark.slow
def test_extract_writes_the_demo_cohort_with_its_manifest(hospital_lake, tmp_path: Path) -> None:
    workspace = hospital_lake.copy(tmp_path / "workspace")
    app = typer.Typer()
    extract_cli.register(app)
    app.command("unused")(lambda: None)  # a second command keeps 'extract' a subcommand
    definition_file = example_path("t2d_hba1c_metformin")
    out = tmp_path / "out"
    args = ["extract", str(definition_file), "--features", str(example_features_path())]
    args += ["--out", str(out), "--workspace", str(workspace), "--json"]
    from medlake.service import access

    access.add_user(workspace, "li", "researcher", as_user=access.login_name())
    access.create_project(workspace, "t2d", "metformin and HbA1c", as_user=access.login_name())
    refused = CliRunner().invoke(app, [*args, "--as", "li", "--project", "t2d"])
    assert "may not extract datasets in project 't2d': not a member" in str(refused.exception)
    assert not out.exists()
    access.add_member(workspace, "t2d", "li", as_user=access.login_name())
    result = CliRunner().invoke(app, [*args, "--as", "li", "--project", "t2d"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)

    members = cohort_members(workspace, load_definition(definition_file)).to_pandas()
    persons = set(members.person_id)
    dataset = pd.read_parquet(out / "dataset.parquet")
    assert printed["persons"] == len(persons)
    assert printed["rows"] + printed["dropped_rows"] == len(persons)
    key = pseudonym_secret(open_workspace(workspace))
    assert set(dataset.person_pseudonym) <= {pseudonym(key, p) for p in persons}
    assert {"metformin_exposed", "hba1c_latest", "hypertension", "egfr_latest"} <= set(dataset)
    # Every member started metformin at index (the entry event) and had HbA1c > 7 % before.
    assert (dataset.metformin_exposed == 1).all()
    assert (dataset.hba1c_max > 7).all()

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["definition"]["name"] == load_definition(definition_file).name
    for name, entry in manifest["files"].items():
        assert entry["sha256"] == hashlib.sha256((out / name).read_bytes()).hexdigest()

    # The demo's service call writes the same dataset again, byte for byte.
    again = extract_demo_cohort(workspace, tmp_path / "again")
    assert again.files == {name: entry["sha256"] for name, entry in manifest["files"].items()}
