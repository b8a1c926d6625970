"""A large plain HL7 file read as planned pieces (several processes) gives what read() gives."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pytest

from medlake.ingest import hl7v2
from medlake.ingest.hl7v2 import Hl7v2Reader
from medlake.ingest.prefetch import ReadingProcesses
from medlake.ingest.staging import ParsedChunk, SourceContext
from medlake.synth import generate_hospital

BROKEN = b"MSH|^~\\&|LIS\rPID|1||\xff\xfe\rOBX|x\r\n"


@pytest.fixture(scope="module")
def one_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The LIS day files as one plain file, with a broken message in the middle."""
    out = tmp_path_factory.mktemp("hospital")
    generate_hospital(out, patients=40, seed=5, workers=1)
    parts = []
    for path in sorted(p for p in (out / "lis").rglob("*") if p.is_file()):
        data = path.read_bytes()
        if path.suffix == ".mllp":
            data = data.replace(b"\x0b", b"").replace(b"\x1c\r", b"\n")
        parts.append(data if data.endswith(b"\n") else data + b"\n")
    parts.insert(len(parts) // 2, BROKEN)
    target = out / "lis.hl7"
    target.write_bytes(b"".join(parts))
    return target


def _context(path: Path) -> SourceContext:
    return SourceContext("lis", "b1", path, path.name, dt.datetime(2026, 1, 2, 3, 4, 5))


def _same(expected: list[ParsedChunk], got: list[ParsedChunk]) -> None:
    assert len(got) == len(expected)
    for a, b in zip(expected, got, strict=True):
        assert (a.records_read, a.quarantine, a.skipped, a.merges) == (
            b.records_read, b.quarantine, b.skipped, b.merges,
        )  # fmt: skip
        assert a.tables.keys() == b.tables.keys()
        for table in a.tables:
            assert pa.concat_tables(a.tables[table]).equals(pa.concat_tables(b.tables[table]))
        assert pa.concat_tables(a.patients).equals(pa.concat_tables(b.patients))


@pytest.mark.parametrize("parts", [1, 4])
def test_planned_pieces_joined_equal_the_chunks_read_gives(
    one_file: Path, monkeypatch: pytest.MonkeyPatch, parts: int
) -> None:
    monkeypatch.setattr(hl7v2, "DEFAULT_CHUNK_MESSAGES", 120)  # several chunks of a small file
    reader = Hl7v2Reader()
    expected = list(reader.read(_context(one_file)))
    plan = reader.chunk_plan(one_file, parts)
    assert plan is not None
    assert len(plan) > parts
    pieces = [reader.read_range(_context(one_file), *piece) for piece in plan]
    joined = [ParsedChunk.joined(pieces[i : i + parts]) for i in range(0, len(pieces), parts)]
    _same(expected, joined)
    assert any("message" in q.location for c in joined for q in c.quarantine)


def test_reading_processes_give_the_chunks_read_gives(
    one_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hl7v2, "DEFAULT_CHUNK_MESSAGES", 200)
    reader = Hl7v2Reader()
    expected = list(reader.read(_context(one_file)))
    plan = reader.chunk_plan(one_file, 2)
    got = list(ReadingProcesses("hl7v2", _context(one_file), plan, 2, 2, group=2))  # type: ignore[arg-type]
    _same(expected, got)  # type: ignore[arg-type]


def test_files_that_are_read_as_one_have_no_plan(one_file: Path, tmp_path: Path) -> None:
    reader = Hl7v2Reader()
    mllp = tmp_path / "framed.hl7"
    mllp.write_bytes(b"\x0b" + one_file.read_bytes()[:2000] + b"\x1c\r")
    noise = tmp_path / "noise.hl7"
    noise.write_bytes(b"not a message\n" + one_file.read_bytes()[:2000])
    empty = tmp_path / "empty.hl7"
    empty.write_bytes(b"")
    none = tmp_path / "none.hl7"
    none.write_bytes(b"no segment of HL7 here")
    for path in (mllp, noise, empty, none):
        assert reader.chunk_plan(path, 2) is None
