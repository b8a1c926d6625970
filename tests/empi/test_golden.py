"""Survivorship rules of the golden record."""

from __future__ import annotations

import pytest

from medlake.empi.golden import golden_records

RECORDS = [
    {"person_id": 1, "source_system": "lis", "source_version": 30, "phone": "111",
     "address": None, "sex": "M"},
    {"person_id": 1, "source_system": "his", "source_version": 10, "phone": "222",
     "address": "A", "sex": "M"},
    {"person_id": 1, "source_system": "emr", "source_version": 20, "phone": "222",
     "address": "B", "sex": "F"},
    {"person_id": 2, "source_system": "lis", "source_version": 5, "phone": None,
     "address": "C", "sex": None},
]  # fmt: skip


@pytest.mark.parametrize(
    ("rule", "phone", "address", "sex"),
    [
        ("most_recent", "111", "B", "M"),  # lis is newest; its address is null
        ("most_frequent", "222", "B", "M"),  # ties go to the most recent
        ("most_trusted", "222", "A", "M"),  # his first
    ],
)
def test_rules(rule: str, phone: str, address: str, sex: str) -> None:
    rows = golden_records(RECORDS, rule=rule, trusted=["his", "emr", "lis"])
    golden = {g["person_id"]: g for g in rows}
    assert (golden[1]["phone"], golden[1]["address"], golden[1]["sex"]) == (phone, address, sex)
    assert golden[1]["records"] == 3
    assert golden[2]["address"] == "C"
    assert golden[2]["phone"] is None


def test_unknown_rule() -> None:
    with pytest.raises(ValueError, match="unknown survivorship rule"):
        golden_records(RECORDS, rule="loudest")
