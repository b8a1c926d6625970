"""Golden records: one value per identifier field per person, by a survivorship rule.

- ``most_recent``: the value of the most recently recorded source record.
- ``most_frequent``: the value most of the person's records agree on (ties: recent).
- ``most_trusted``: the value from the most trusted source system (the configured
  order; ties: recent).

Null values never win over a value. Small enough to write here: a rule is a sort key.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

GOLDEN_FIELDS = (
    "name_hanzi", "name_pinyin", "family_name", "given_name", "name_latin", "resident_id",
    "birth_date", "sex", "phone", "address", "postcode", "email",
)  # fmt: skip
RULES = ("most_recent", "most_frequent", "most_trusted")


def golden_records(
    records: Sequence[dict[str, Any]], *, rule: str, trusted: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """One golden record per ``person_id`` of ``records``.

    Each record has ``person_id``, ``source_system``, ``source_version`` (higher is more
    recent) and the :data:`GOLDEN_FIELDS` it knows.
    """
    if rule not in RULES:
        raise ValueError(f"unknown survivorship rule {rule!r}; one of {', '.join(RULES)}")
    rank = {system: i for i, system in enumerate(trusted)}
    by_person: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        by_person[record["person_id"]].append(record)
    golden = []
    for person_id, members in by_person.items():
        if rule == "most_trusted":
            ordered = sorted(
                members,
                key=lambda r: (
                    rank.get(r["source_system"], len(rank)),
                    -(r["source_version"] or 0),
                ),
            )
        else:
            ordered = sorted(members, key=lambda r: -(r["source_version"] or 0))
        row: dict[str, Any] = {"person_id": person_id, "records": len(members), "rule": rule}
        for name in GOLDEN_FIELDS:
            values = [r.get(name) for r in ordered if r.get(name) not in (None, "")]
            if not values:
                row[name] = None
            elif rule == "most_frequent":
                counts = Counter(values)
                best = max(counts.values())
                row[name] = next(v for v in values if counts[v] == best)
            else:
                row[name] = values[0]
        golden.append(row)
    return golden
