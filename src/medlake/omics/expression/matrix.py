"""Count matrices and sample tables for differential expression.

Two sources of counts, one shape out (:class:`CountData`: samples × genes, int64):

- a **counts file** as sequencing cores deliver it (genes × samples, first column the
  gene id, tab- or comma-separated by the header line, gzip or not), read with pandas;
- a **registered matrix**: the Parquet the ingest wrote under the workspace's
  ``omics/expression/<key>/counts.parquet`` (``gene_id`` then one int64 column per
  sample), of which only the wanted sample columns are read (pyarrow column pruning).

A **sample table** (TSV/CSV, first column or ``sample_id`` the sample id) gives the
condition and covariates. Numeric covariates are centred and scaled to unit variance
before fitting, as DESeq2 advises (a raw age of 30–80 makes the GLM ill-conditioned);
this changes no estimate of the condition's effect, only the covariate's own
coefficient. Only samples present in both the counts and the table, with the condition
and every covariate filled, are analysed; the others are counted in ``dropped``.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from medlake.errors import InputError, UsageError

SAMPLE_ID_COLUMNS = ("sample_id", "sample", "samples")
_GZIP_MAGIC = b"\x1f\x8b"


def _delimiter(path: Path) -> str:
    opener = gzip.open if path.read_bytes()[:2] == _GZIP_MAGIC else open
    with opener(path, "rt", encoding="utf-8-sig") as handle:  # type: ignore[operator]
        header = handle.readline()
    return "\t" if "\t" in header else ","


def read_counts_file(path: Path) -> pd.DataFrame:
    """A genes × samples counts TSV/CSV (gzip or not) as samples × genes int64."""
    if not path.is_file():
        raise UsageError(f"{path}: no such counts file")
    try:
        frame = pd.read_csv(
            path, sep=_delimiter(path), index_col=0, compression="infer", comment=None
        )
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: unreadable counts file ({exc})") from None
    if frame.shape[1] == 0 or frame.shape[0] == 0:
        raise InputError(f"{path}: no genes or no sample columns")
    if frame.index.has_duplicates:
        gene = frame.index[frame.index.duplicated()][0]
        raise InputError(f"{path}: gene {gene!r} repeated")
    for column in frame.columns:
        values = frame[column]
        if not pd.api.types.is_integer_dtype(values) or (values < 0).any():
            raise InputError(
                f"{path}: column {column!r}: counts must be integers >= 0 (raw counts)"
            )
    frame.index = frame.index.astype(str)
    frame.columns = frame.columns.astype(str)
    return frame.T.astype(np.int64)


def read_counts_parquet(path: Path, samples: list[str]) -> pd.DataFrame:
    """The ``samples`` columns of a registered counts Parquet, as samples × genes int64."""
    if not path.is_file():
        raise InputError(f"{path}: registered counts file is missing from the workspace")
    present = set(pq.read_schema(path).names)
    missing = [s for s in samples if s not in present]
    if missing:
        raise InputError(f"{path}: sample {missing[0]!r} is registered but not in the file")
    table = pq.read_table(path, columns=["gene_id", *samples])
    genes = table.column("gene_id").to_pylist()
    data = np.column_stack([table.column(s).to_numpy() for s in samples]) if samples else None
    return pd.DataFrame(data.T if data is not None else [], index=samples, columns=genes)


def read_sample_table(path: Path) -> pd.DataFrame:
    """A sample table (TSV/CSV) indexed by sample id, every column as read."""
    if not path.is_file():
        raise UsageError(f"{path}: no such sample table")
    try:
        frame = pd.read_csv(path, sep=_delimiter(path), dtype=str, keep_default_na=True)
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: unreadable sample table ({exc})") from None
    id_column = next((c for c in frame.columns if c.lower() in SAMPLE_ID_COLUMNS), frame.columns[0])
    frame = frame.set_index(id_column)
    frame.index = frame.index.astype(str)
    if frame.index.has_duplicates:
        sample = frame.index[frame.index.duplicated()][0]
        raise InputError(f"{path}: sample {sample!r} repeated")
    return frame


@dataclass
class CountData:
    """Counts (samples × genes) and the aligned sample table, ready for the model."""

    counts: pd.DataFrame
    samples: pd.DataFrame
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> samples


def align(
    counts: pd.DataFrame,
    samples: pd.DataFrame,
    condition: str,
    covariates: list[str],
    *,
    source: str = "sample table",
) -> CountData:
    """Keep samples in both with condition and covariates filled; type the covariates."""
    for column in [condition, *covariates]:
        if column not in samples.columns:
            raise UsageError(
                f"{source}: no column {column!r} (has: {', '.join(map(str, samples.columns))})"
            )
    dropped: dict[str, int] = {}
    in_counts = samples.index.isin(counts.index)
    if (~in_counts).any():
        dropped["not in the counts"] = int((~in_counts).sum())
    table = samples[in_counts]
    complete = table[[condition, *covariates]].notna().all(axis=1)
    if (~complete).any():
        dropped["condition or covariate missing"] = int((~complete).sum())
    table = table[complete].copy()
    not_in_table = int((~counts.index.isin(table.index)).sum())
    if not_in_table:
        dropped["not in the sample table"] = not_in_table
    table[condition] = table[condition].astype(str)
    for column in covariates:
        numeric = pd.to_numeric(table[column], errors="coerce")
        if numeric.notna().all() and table[column].nunique() > 2:
            spread = numeric.std()
            table[column] = (numeric - numeric.mean()) / (spread if spread > 0 else 1.0)
        else:
            table[column] = table[column].astype(str)
    return CountData(counts.loc[table.index], table[[condition, *covariates]], dropped)
