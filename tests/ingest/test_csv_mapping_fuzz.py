"""Fuzzed exports: mutated rows never crash the reader and never take good rows with them."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medlake.ingest.csv_mapping import CsvMappingReader
from medlake.ingest.mapping_spec import parse_mapping
from medlake.ingest.staging import SourceContext

SPEC = parse_mapping(
    {
        "file": [
            {
                "match": "*.csv",
                "target": "condition_occurrence",
                "encoding": "gb18030",
                "record_id": "{JZH}/{XH}",
                "patient_id": "BRID",
                "visit_id": "JZH",
                "date_formats": {"RQ": "%Y%m%d"},
                "columns": {
                    "condition_source_value": {"column": "DM", "vocabulary": "ICD10CM"},
                    "condition_start_date": "RQ",
                    "condition_status_concept_id": {"column": "LB", "map": {"主要": 32902}},
                    "condition_type_concept_id": 32817,
                },
            }
        ]
    },
    "fuzz.toml",
)
HEADER = "JZH,BRID,XH,DM,LB,RQ"


def good_row(i: int) -> str:
    return f"MZ{i:05d},H{i:05d},{i % 3 + 1},I10,主要,2023{i % 12 + 1:02d}{i % 28 + 1:02d}"


mutation = st.one_of(
    st.text(max_size=40),  # anything at all in place of the row
    st.binary(max_size=40).map(lambda b: b.decode("gb18030", "replace")),
    st.tuples(st.integers(0, 5), st.text(max_size=12)),  # one field replaced
    st.just(""),
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.tuples(st.booleans(), mutation), min_size=1, max_size=30), st.binary(max_size=8))
def test_mutated_rows_never_crash_the_reader_or_lose_good_rows(
    tmp_path: Path, plan: list[tuple[bool, object]], junk: bytes
) -> None:
    lines, good = [HEADER], []
    for i, (keep, change) in enumerate(plan):
        if keep:
            lines.append(good_row(i))
            good.append(f"MZ{i:05d}/{i % 3 + 1}")
        elif isinstance(change, tuple):
            cells = good_row(i).split(",")
            cells[change[0]] = change[1]
            lines.append(",".join(cells))
        else:
            lines.append(str(change))
    data = "\r\n".join(lines).encode("gb18030", "replace") + b"\r\n" + junk
    path = tmp_path / "fuzz.csv"
    path.write_bytes(data)
    context = SourceContext("his", "b", path, "fuzz.csv", dt.datetime(2024, 1, 1),
                            options={"mapping": SPEC})  # fmt: skip
    chunks = list(CsvMappingReader(chunk_rows=7).read(context))
    staged = [rid for c in chunks for t in c.tables.get("condition_occurrence", [])
              for rid in t.column("_source_record_id").to_pylist()]  # fmt: skip
    assert set(good) <= set(staged)
    quarantined = sum(len(c.quarantine) for c in chunks)
    assert len(staged) + quarantined == sum(c.records_read for c in chunks)
    for entry in (q for c in chunks for q in c.quarantine):
        assert entry.location.startswith("fuzz.csv:")
