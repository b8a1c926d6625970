"""The scrubber on the test hospital's notes, scored against the PHI its generator
labelled (a different seed from any used while writing the recognizers)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from medlake.service.deid import score_hospital_notes

REQUIRED_RECALL = {"ID_NUMBER": 0.99, "PHONE": 0.99, "NAME": 0.95, "ADDRESS": 0.95,
                   "DATE": 0.95, "MRN": 0.95, "EMAIL": 0.95}  # fmt: skip


@pytest.mark.parametrize("use_known", [False, True], ids=["text-only", "known-identifiers"])
def test_recall_and_precision_per_entity_meet_the_targets(hospital_lake, use_known) -> None:
    result = score_hospital_notes(hospital_lake.hospital, use_known=use_known)
    assert result.documents > 50
    for entity, required in REQUIRED_RECALL.items():
        score = result.scores[entity]
        assert score.labelled > 0, entity
        assert score.recall >= required, (entity, score)
        assert score.precision >= 0.95, (entity, score)


def test_cli_scores_and_scrubs(hospital_lake) -> None:
    command = [sys.executable, "-m", "medlake.cli.main", "deid", "score",
               str(hospital_lake.hospital), "--json"]  # fmt: skip
    scores = json.loads(subprocess.run(command, check=True, capture_output=True).stdout)
    assert {e["entity"] for e in scores["entities"]} >= set(REQUIRED_RECALL)
    scrubbed = subprocess.run(
        [sys.executable, "-m", "medlake.cli.main", "deid", "text", "--shift-days", "2"],
        input="患者张伟，电话13912345678，2024-02-28入院。".encode(), check=True,
        capture_output=True,
    ).stdout.decode()  # fmt: skip
    assert scrubbed == "患者[姓名]，电话[电话]，2024-03-01入院。"


def test_score_refuses_a_folder_that_is_not_a_synthetic_hospital(tmp_path) -> None:
    from medlake.errors import InputError

    with pytest.raises(InputError, match=r"DocumentReference\.ndjson: not found"):
        score_hospital_notes(tmp_path)


def test_lake_notes_are_released_without_phi_and_with_the_extract_date_shift(
    hospital_lake,
) -> None:
    import base64
    import datetime as dt

    from medlake.config import open_workspace
    from medlake.privacy import date_shifts, pseudonym
    from medlake.privacy.phi_text import shift_date_text
    from medlake.service.deid import deidentified_notes
    from medlake.service.workspace import open_lake, pseudonym_secret

    workspace = open_workspace(hospital_lake.workspace)
    released = deidentified_notes(workspace).to_pylist()
    with open_lake(workspace) as engine:
        lake = engine.execute(engine.table("note").order_by("note_id")).to_pylist()
    assert len(released) == len(lake) > 50
    documents = {}
    for line in (hospital_lake.hospital / "emr" / "DocumentReference.ndjson").open():
        resource = json.loads(line)
        text = base64.b64decode(resource["content"][0]["attachment"]["data"]).decode()
        documents[text] = resource["id"]
    spans: dict[str, list[dict]] = {}
    for line in (hospital_lake.truth / "note_phi.ndjson").open():
        span = json.loads(line)
        spans.setdefault(span["document_id"], []).append(span)
    key = pseudonym_secret(workspace)
    shifts = date_shifts(key, [row["person_id"] for row in lake],
                         workspace.settings.privacy.date_shift_max_days)  # fmt: skip
    leaked = checked = 0
    for original, out in zip(lake, released, strict=True):
        shift = shifts[original["person_id"]]
        assert out["person_pseudonym"] == pseudonym(key, original["person_id"])
        assert out["note_date"] == original["note_date"] + dt.timedelta(days=shift)
        for span in spans[documents[original["note_text"]]]:
            checked += 1
            if span["entity"] == "DATE":
                assert shift_date_text(span["text"], shift) in out["note_text"]
                leaked += span["text"] in out["note_text"] and shift != 0
            else:
                leaked += span["text"] in out["note_text"]
    assert checked > 500
    assert leaked / checked < 0.01


def test_notes_command_is_for_stewards(hospital_lake, tmp_path) -> None:
    import pyarrow.parquet as pq
    from typer.testing import CliRunner

    from medlake.cli.main import app
    from medlake.service import access

    workspace = hospital_lake.copy(tmp_path / "ws")
    runner = CliRunner()
    out = tmp_path / "notes.parquet"
    refused = runner.invoke(app, ["deid", "notes", "--out", str(out), "-w", str(workspace)])
    assert refused.exit_code != 0
    assert "may not read identified data" in str(refused.exception)
    assert not out.exists()
    access.add_user(workspace, "st1", "steward", as_user=access.login_name())
    done = runner.invoke(app, ["deid", "notes", "--out", str(out), "--as", "st1",
                               "-w", str(workspace)])  # fmt: skip
    assert done.exit_code == 0, done.output
    assert pq.read_table(out).num_rows > 50
