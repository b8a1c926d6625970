"""The record of an ingest run, landed with its inputs, so landing alone can rebuild the lake.

A landed file is only bytes; to read it again as it was read, one needs what the
``ingest_batch`` table knows (source system, format, original name, receive time) and
what it does not (the companion files' names, the CSV mapping, the forced format). At
the end of each run ``medlake ingest`` lands one JSON record listing every input it
loaded with all of that — the mapping file itself is landed too and named by its
SHA-256 — so ``medlake rebuild`` can replay the runs in order from ``landing/`` alone.
Records are recognised by their first bytes (:data:`MAGIC`).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field

MAGIC = b'{"medlake_ingest_run":1,'


@dataclass(frozen=True)
class RecordedInput:
    original_name: str
    sha256: str
    source_system: str
    format: str
    batch_id: str
    received_at: str  # ISO, naive UTC, as ingest_batch has it
    size_bytes: int
    companions: dict[str, dict[str, str]] = field(default_factory=dict)  # role -> name, sha256


@dataclass(frozen=True)
class RunRecord:
    started_at: str
    format: str | None
    source_system: str | None
    options: dict[str, object]  # JSON values; landed files as {"landed_sha256": ...}
    inputs: list[RecordedInput]
    # Rows of ingest_batch once the run was done: orders runs even when clocks tie.
    batches_after: int = 0

    def to_bytes(self) -> bytes:
        body = {"medlake_ingest_run": 1, **asdict(self)}
        # The magic must be the record's first bytes: key order is kept, not sorted.
        return json.dumps(body, separators=(",", ":")).encode()

    @property
    def received_at(self) -> dt.datetime:
        times = [dt.datetime.fromisoformat(i.received_at) for i in self.inputs]
        return min(times) if times else dt.datetime.fromisoformat(self.started_at)


def parse_run_record(data: bytes) -> RunRecord | None:
    """The record in ``data``, or None when ``data`` is not a run record."""
    if not data.startswith(MAGIC):
        return None
    body = json.loads(data)
    body.pop("medlake_ingest_run")
    inputs = [RecordedInput(**item) for item in body.pop("inputs")]
    return RunRecord(inputs=inputs, **body)
