"""Small files read in forked processes give exactly what reading them here gives."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from medlake.errors import InputError
from medlake.ingest import file_reading
from medlake.ingest.file_reading import FileReaders
from medlake.ingest.formats import reader_for
from medlake.ingest.staging import ParsedChunk, SourceContext
from medlake.synth import generate_hospital


@pytest.fixture(scope="module")
def day_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("hospital")
    generate_hospital(out, patients=25, seed=11, workers=1)
    days = sorted((out / "lis").rglob("*.hl7"))[:60]
    bad = out / "bad.hl7"
    bad.write_text("no segment of HL7 here", encoding="utf-8")
    broken = out / "broken.hl7"  # a message the reader quarantines, in a good file
    broken.write_bytes(days[0].read_bytes() + b"MSH|^~\\&|LIS\rPID|1||\xff\xfe\rOBX|x\r\n")
    return [*days[:30], bad, broken, *days[30:]]


def _contexts(paths: list[Path]) -> list[SourceContext]:
    return [
        SourceContext("lis", f"batch-{i}", path, path.name, dt.datetime(2026, 1, 2, 3, 4, i))
        for i, path in enumerate(paths)
    ]


def _plain(chunks: list[ParsedChunk]) -> list[object]:
    return [
        (
            {name: [t.to_pylist() for t in tables] for name, tables in c.tables.items()},
            [t.to_pylist() for t in c.patients],
            c.quarantine,
            c.records_read,
            dict(c.skipped),
            c.merges,
        )
        for c in chunks
    ]


def test_files_read_in_children_equal_files_read_here(day_files: list[Path]) -> None:
    contexts = _contexts(day_files)
    assert len(contexts) >= file_reading.CHILDREN_FROM
    readers = FileReaders()
    try:
        reading = readers.read("hl7v2", contexts)
        assert reading.futures  # really in children
        (bad,) = (context for context in contexts if context.original_name == "bad.hl7")
        with pytest.raises(InputError, match=r"bad\.hl7: not an HL7 v2 file"):
            list(reader_for("hl7v2").read(bad))  # the error each result must carry
        _assert_each_as_read_here(reading, contexts)
    finally:
        readers.close()
    assert readers.pool is None


def _assert_each_as_read_here(reading: Any, contexts: list[SourceContext]) -> None:
    """Each file's result equals the reader's own chunks; bad.hl7 gives its error."""
    for index, context in enumerate(contexts):
        if context.original_name == "bad.hl7":
            with pytest.raises(InputError, match=r"bad\.hl7: not an HL7 v2 file"):
                reading.result(index)
            continue
        expected = list(reader_for("hl7v2").read(context))
        assert _plain(reading.result(index)) == _plain(expected)


@pytest.mark.parametrize("children", [True, False])
def test_files_given_as_they_come_with_their_bytes_equal_files_read_here(
    day_files: list[Path], tmp_path: Path, children: bool
) -> None:
    """A stream of files (as a group being landed gives them): each file's bytes, its
    path not there yet, one file at a time; read in children or here as each is read."""
    contexts = _contexts(day_files)
    readers = FileReaders(workers=None if children else 0)
    try:
        reading = readers.stream("hl7v2", len(contexts))
        for context in contexts:
            not_landed = dataclasses.replace(context, path=tmp_path / "not-yet" / context.path.name)
            reading.add([not_landed], [context.path.read_bytes()])
        reading.complete()
        assert bool(reading.futures) == children
        _assert_each_as_read_here(reading, contexts)
    finally:
        readers.close()


def test_few_files_are_read_here(day_files: list[Path]) -> None:
    readers = FileReaders()
    reading = readers.read("hl7v2", _contexts(day_files[:3]))
    assert not reading.futures
    assert readers.pool is None
    assert _plain(reading.result(2)) == _plain(list(reader_for("hl7v2").read(reading.contexts[2])))


def test_many_files_read_at_once_equal_each_read_alone(
    day_files: list[Path], tmp_path: Path
) -> None:
    """``read_many`` (one Arrow conversion for all files' rows) gives each file's chunks as
    ``read`` does: tables equal with their types, a failing file's error, an empty file,
    and a file of several chunks."""
    empty = tmp_path / "empty.hl7"
    empty.write_bytes(b"")
    contexts = _contexts([*day_files[:8], empty, *day_files[8:]])
    several = contexts[3]  # read as chunks of 2 messages: more than one chunk
    contexts[3] = SourceContext(several.source_system, several.batch_id, several.path,
                                several.original_name, several.received_at,
                                options={"chunk_messages": 2})  # fmt: skip
    reader = reader_for("hl7v2")
    got = reader.read_many(contexts)  # type: ignore[attr-defined]
    assert len(got) == len(contexts)
    for context, result in zip(contexts, got, strict=True):
        if context.original_name == "bad.hl7":  # the reader's error, for this file
            with pytest.raises(InputError) as error:
                list(reader.read(context))
            assert isinstance(result, InputError)
            assert str(result) == str(error.value)
            continue
        expected = list(reader.read(context))
        assert _plain(result) == _plain(expected)
        for mine, theirs in zip(result, expected, strict=True):
            assert all(
                a.equals(b, check_metadata=True)
                for name in theirs.tables
                for a, b in zip(mine.tables[name], theirs.tables[name], strict=True)
            )
            assert all(a.equals(b) for a, b in zip(mine.patients, theirs.patients, strict=True))
    assert len(got[3]) > 1
    assert _plain(got[8]) == _plain([ParsedChunk()])
