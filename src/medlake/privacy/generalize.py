"""Generalization of quasi-identifiers: ages in bands, birth years in bands, regions cut.

Each function takes and returns Arrow arrays (nulls stay null) so an extract is
generalized column by column. Ages are completed years; bands are closed ranges written
``"40-44"`` with an open top band (``"90+"``), the HIPAA Safe Harbor convention of
pooling ages over 89. Region codes keep their leading characters: a Chinese
administrative division code ``110105`` cut to 2 is the province ``11``, to 4 the city
``1101``; a postcode cut to 3 is its sorting district.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

DEFAULT_AGE_BAND = 5
DEFAULT_TOP_AGE = 90


def age_in_years(
    birth_dates: pa.Array | pa.ChunkedArray, on: pa.Array | pa.ChunkedArray
) -> pa.Array:
    """Completed years between each birth date and the date ``on`` (int32, null if either is)."""
    born = pc.cast(birth_dates, pa.date32())
    when = pc.cast(on, pa.date32())
    years = pc.subtract(pc.year(when), pc.year(born))
    before_birthday = pc.less(
        pc.add(pc.multiply(pc.month(when), 100), pc.day(when)),
        pc.add(pc.multiply(pc.month(born), 100), pc.day(born)),
    )
    return pc.cast(pc.subtract(years, pc.cast(before_birthday, pa.int64())), pa.int32())


def age_band(
    ages: pa.Array | pa.ChunkedArray,
    width: int = DEFAULT_AGE_BAND,
    top: int = DEFAULT_TOP_AGE,
) -> pa.Array:
    """``"40-44"`` style bands of ``width`` years from 0, and ``"<top>+"`` from ``top`` up."""
    if width < 1 or top < 1:
        raise ValueError(f"age band width and top must be positive, got {width} and {top}")
    out: list[str | None] = []
    for age in ages.to_pylist():
        if age is None:
            out.append(None)
        elif age >= top:
            out.append(f"{top}+")
        else:
            low = max(age, 0) // width * width
            high = min(low + width - 1, top - 1)
            out.append(f"{low}-{high}" if high > low else str(low))
    return pa.array(out, type=pa.string())


def birth_year_band(years: pa.Array | pa.ChunkedArray, width: int = 1) -> pa.Array:
    """Birth years as given (``width`` 1, int) or in bands ``"1950-1954"`` (string)."""
    if width < 1:
        raise ValueError(f"birth year band width must be positive, got {width}")
    if width == 1:
        return pc.cast(years, pa.int32())
    return pa.array(
        [
            None if y is None else f"{y // width * width}-{y // width * width + width - 1}"
            for y in years.to_pylist()
        ],
        type=pa.string(),
    )


def truncate_code(codes: pa.Array | pa.ChunkedArray, keep: int) -> pa.Array:
    """The first ``keep`` characters of each code (whitespace trimmed); empty codes to null."""
    if keep < 0:
        raise ValueError(f"keep must be at least 0, got {keep}")
    trimmed = pc.utf8_trim_whitespace(pc.cast(codes, pa.string()))
    cut = pc.utf8_slice_codeunits(trimmed, 0, keep)
    empty = pc.equal(pc.utf8_length(cut), 0)
    return pc.if_else(empty, pa.scalar(None, pa.string()), cut)
