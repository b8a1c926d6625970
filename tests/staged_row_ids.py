"""Row ids that reading processes derive for the writer, checked and set aside.

Chunks parsed by reading processes carry ``_row_id`` (hashed there, not in the writer);
chunks read in-process do not. Tests that compare the two check every such id against
the reference :func:`medlake.ingest.ids.row_id` of the row's record, then drop it.
"""

from __future__ import annotations

from medlake.ingest.ids import row_id
from medlake.ingest.staging import SOURCE_RECORD_ID, ParsedChunk
from medlake.ingest.versions import ROW_ID


def row_ids_checked(chunks: list[ParsedChunk], source_system: str) -> tuple[list[ParsedChunk], int]:
    """``chunks`` without their staged row ids, each checked; and how many were checked."""
    checked = 0
    for chunk in chunks:
        for table, parts in chunk.tables.items():
            plain = []
            for rows in parts:
                if ROW_ID in rows.column_names:
                    expected = [
                        None if rid is None else row_id(table, source_system, rid)
                        for rid in rows.column(SOURCE_RECORD_ID).to_pylist()
                    ]
                    assert rows.column(ROW_ID).to_pylist() == expected, table
                    checked += rows.num_rows
                    rows = rows.drop_columns([ROW_ID])
                plain.append(rows)
            parts[:] = plain
    return chunks, checked


__all__ = ["row_ids_checked"]
