"""Plain-file mode: ``medlake empi dedupe`` on a CSV, scored against the truth."""

from __future__ import annotations

import csv
from pathlib import Path

from typer.testing import CliRunner

from medlake.cli.main import app
from medlake.empi.evaluate import pairwise_score


def test_dedupe_a_csv_of_recorded_identities(hospital_lake, tmp_path: Path) -> None:
    # The identities each source system recorded (names in hanzi or pinyin, birth
    # dates, resident IDs with their noise), one row per source record.
    rows = list(csv.DictReader((hospital_lake.truth / "source_records.csv").open()))
    people = tmp_path / "people.csv"
    with people.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["rec_id", "name", "dob", "id_no"])
        for i, row in enumerate(rows):
            writer.writerow([i, row["recorded_name"], row["recorded_birth_date"],
                             row["recorded_resident_id"]])  # fmt: skip
    out = tmp_path / "clusters.csv"
    result = CliRunner().invoke(
        app,
        ["empi", "dedupe", str(people), "--id", "rec_id", "--field", "full_name=name",
         "--field", "birth_date=dob", "--field", "id_number=id_no", "--out", str(out)],
        catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    clusters = {r["id"]: r["cluster_id"] for r in csv.DictReader(out.open())}
    assert len(clusters) == len(rows)
    ids = [str(i) for i in range(len(rows))]
    score = pairwise_score([clusters[i] for i in ids], [r["person_key"] for r in rows])
    assert score.precision >= 0.99
    assert score.recall >= 0.97
    # A cluster's id is one of its members' ids.
    assert all(clusters[c] == c for c in set(clusters.values()))


def test_unknown_field_kind_is_one_clear_error(tmp_path: Path) -> None:
    people = tmp_path / "p.csv"
    people.write_text("id,x\n1,a\n", encoding="utf-8")
    result = CliRunner().invoke(
        app, ["empi", "dedupe", str(people), "--id", "id", "--field", "shoe_size=x",
              "--out", str(tmp_path / "o.csv")],
    )  # fmt: skip
    assert result.exit_code != 0
    assert "unknown field kind 'shoe_size'" in str(result.exception)
