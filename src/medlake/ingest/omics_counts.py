"""Expression count matrices: validate a genes × samples table and store it as Parquet.

``format = "counts"`` reads raw read counts as featureCounts and DESeq2 take them: one
row per gene, one column per sample, first column ``gene_id`` — tab- or
comma-separated (by the header line), plain or gzip. featureCounts' own output is
accepted too: ``#`` comment lines, first column ``Geneid``, then ``Chr, Start, End,
Strand, Length`` (dropped) and sample columns named by BAM path (reduced to the file
name without ``.bam``).

Validation (:class:`~medlake.errors.InputError` naming ``file:line`` and the column):
every count an integer ≥ 0 (no blanks, ``NA`` or decimals: DESeq2 wants raw counts),
each row as many fields as the header, gene ids non-empty and unique, sample ids
non-empty and unique. A matrix is one record: a bad cell rejects the file (a matrix
with a hole silently dropped would bias every analysis), and nothing is stored.

Storage: ``omics/expression/<key>/counts.parquet`` (:mod:`medlake.ingest.omics_store`),
a ``gene_id`` string column then one int64 column per sample, in file order, zstd
compressed, row groups of a fixed number of genes (about :data:`CELLS_PER_GROUP`
counts), so the bytes depend on the input only. Companions ``"samples"`` (a sample
sheet such as ``rnaseq_samples.tsv``: collection dates, sequencing batch) and
``"genes"`` (gene annotation) are stored unchanged beside it as ``samples.tsv``/
``genes.tsv`` (``.csv`` when comma-separated) for the analyses; each sample column is
registered with assay ``rnaseq``, linked by the ``"manifest"`` companion, its
collection date from the manifest or else the sample sheet.

Memory: the file is parsed by pyarrow's streaming CSV reader in blocks of
:data:`BLOCK_BYTES` and written one row group at a time; what is held is one row group,
one parse block and the set of gene ids seen (tens of thousands). AnnData ``.h5ad``
files are read by :mod:`medlake.ingest.omics_h5ad` into the same stored layout.
"""

from __future__ import annotations

import datetime as dt
import gzip
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, ClassVar

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from medlake.errors import InputError
from medlake.ingest.omics_plink import omics_dir
from medlake.ingest.omics_samples import (
    Manifest,
    StoredFile,
    context_manifest,
    parse_sample_sheet,
    sample_rows,
)
from medlake.ingest.omics_store import StoredFileset, build_fileset
from medlake.ingest.staging import ParsedChunk, SourceContext
from medlake.log import get_logger

RNASEQ_ASSAY = "rnaseq"
EXPRESSION_KIND = "expression"
COUNTS_MEMBER = "counts.parquet"
GENE_COLUMNS = ("gene_id", "geneid")
FEATURECOUNTS_ANNOTATION = ("chr", "start", "end", "strand", "length")
BLOCK_BYTES = 8 << 20
CELLS_PER_GROUP = 1 << 22  # ~32 MiB of int64 counts per row group
MAX_HEADER_BYTES = 64 << 20
SNIFF_LINE_BYTES = 4 << 20  # a header of 100,000 sample ids fits; sniffing stays cheap
_COUNT = re.compile(r"^\+?[0-9]+$")
_GZIP_MAGIC = b"\x1f\x8b"

log = get_logger(__name__)


def open_text(path: Path) -> IO[bytes]:
    """The file's bytes, gunzipped when it starts with the gzip magic."""
    with path.open("rb") as handle:
        magic = handle.read(2)
    return gzip.open(path, "rb") if magic == _GZIP_MAGIC else path.open("rb")


def _split(line: str, delimiter: str) -> list[str]:
    return [f.strip().strip('"') for f in line.rstrip("\r\n").split(delimiter)]


def _head_lines(path: Path, limit: int, max_bytes: int = MAX_HEADER_BYTES) -> tuple[int, list[str]]:
    """(comment lines skipped, up to ``limit`` following lines) from the top of ``path``."""
    comments, lines = 0, []
    with open_text(path) as handle:
        while len(lines) < limit:
            raw = handle.readline(max_bytes)
            if not raw:
                break
            text = raw.decode("utf-8-sig" if not comments and not lines else "utf-8", "replace")
            if text.startswith("#") and not lines:
                comments += 1
            else:
                lines.append(text)
    return comments, lines


def looks_like_counts(path: Path) -> bool:
    """Header starts with ``gene_id``/``Geneid`` and the first data row ends in a count."""
    try:
        _, lines = _head_lines(path, 2, SNIFF_LINE_BYTES)
    except (OSError, EOFError, gzip.BadGzipFile):
        return False
    if len(lines) < 2:
        return False
    delimiter = "\t" if "\t" in lines[0] else ","
    header, first = _split(lines[0], delimiter), _split(lines[1], delimiter)
    return header[0].lower() in GENE_COLUMNS and len(first) > 1 and bool(_COUNT.match(first[-1]))


class CountsLayout:
    """Where the counts are in the file: delimiter, header line, kept columns, sample ids."""

    def __init__(self, path: Path, name: str) -> None:
        comments, lines = _head_lines(path, 1)
        if not lines:
            raise InputError(f"{name}: empty count matrix")
        self.delimiter = "\t" if "\t" in lines[0] else ","
        self.columns = _split(lines[0], self.delimiter)
        self.header_line = comments + 1
        if self.columns[0].lower() not in GENE_COLUMNS:
            raise InputError(f"{name}:{self.header_line}: first column must be gene_id")
        annotation = [c.lower() for c in self.columns[1:6]] == list(FEATURECOUNTS_ANNOTATION)
        first_sample = 6 if annotation and self.columns[0].lower() == "geneid" else 1
        self.sample_columns = self.columns[first_sample:]
        self.sample_ids = [
            re.sub(r"\.bam$", "", c.rsplit("/", 1)[-1]) if annotation else c
            for c in self.sample_columns
        ]
        if not self.sample_ids:
            raise InputError(f"{name}:{self.header_line}: no sample columns")
        seen: set[str] = set()
        for i, sample in enumerate(self.sample_ids):
            if not sample or sample in seen:
                what = "empty" if not sample else f"repeated ({sample!r})"
                raise InputError(
                    f"{name}:{self.header_line}: sample column {first_sample + i + 1} {what}"
                )
            seen.add(sample)
        # positional names so repeated or blank header cells cannot confuse the parser
        self.parse_names = [f"c{i}" for i in range(len(self.columns))]
        self.keep = [self.parse_names[0], *self.parse_names[first_sample:]]

    def schema(self) -> pa.Schema:
        return pa.schema(
            [pa.field("gene_id", pa.string())] + [pa.field(s, pa.int64()) for s in self.sample_ids]
        )


class _Validator:
    """Checks one parse block and turns it into a typed record batch."""

    def __init__(self, layout: CountsLayout, name: str) -> None:
        self.layout = layout
        self.name = name
        self.genes: set[str] = set()
        self.next_line = layout.header_line + 1

    def typed(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        first_line = self.next_line
        self.next_line += batch.num_rows
        genes = batch.column(self.layout.keep[0])
        for offset, gene in enumerate(genes.to_pylist()):
            if not gene or gene in self.genes:
                what = "empty gene id" if not gene else f"gene {gene!r} repeated"
                raise InputError(f"{self.name}:{first_line + offset}: {what}")
            self.genes.add(gene)
        arrays: list[pa.Array] = [genes]
        for sample, column in zip(self.layout.sample_ids, self.layout.keep[1:], strict=True):
            arrays.append(self._counts(batch.column(column), sample, first_line))
        return pa.RecordBatch.from_arrays(arrays, schema=self.layout.schema())

    def _counts(self, values: pa.Array, sample: str, first_line: int) -> pa.Array:
        try:
            counts = pc.cast(values, pa.int64())
            if len(counts) == 0 or pc.min(counts).as_py() >= 0:
                return counts
        except pa.ArrowInvalid:
            pass
        good = pc.fill_null(pc.match_substring_regex(values, _COUNT.pattern), False)
        bad = pc.index(good, False).as_py()
        if bad < 0:  # digits only, yet no int64: out of range
            raise InputError(f"{self.name}: column {sample!r}: count beyond int64")
        raise InputError(
            f"{self.name}:{first_line + bad}: column {sample!r}: "
            f"{values[bad].as_py()!r} is not a count (integer >= 0)"
        )


def _batches(path: Path, layout: CountsLayout, name: str) -> Iterator[pa.RecordBatch]:
    """Raw string record batches of the data lines, with parse errors as InputError."""
    bad_rows: list[tuple[int | None, str]] = []

    def on_invalid(row: pa_csv.InvalidRow) -> str:
        bad_rows.append((row.number, row.text))
        return "error"

    read = pa_csv.ReadOptions(
        use_threads=False,
        block_size=BLOCK_BYTES,
        skip_rows=layout.header_line,
        column_names=layout.parse_names,
    )
    parse = pa_csv.ParseOptions(delimiter=layout.delimiter, invalid_row_handler=on_invalid)
    convert = pa_csv.ConvertOptions(
        column_types={c: pa.string() for c in layout.parse_names},
        include_columns=layout.keep,
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
    )
    with open_text(path) as handle:
        try:
            reader = pa_csv.open_csv(
                handle, read_options=read, parse_options=parse, convert_options=convert
            )
            yield from reader
        except (pa.ArrowInvalid, OSError, EOFError) as exc:
            if bad_rows:
                number, text = bad_rows[0]
                where = f"{name}:{number}" if number is not None else name
                fields = len(text.split(layout.delimiter))
                raise InputError(
                    f"{where}: {fields} fields, the header has {len(layout.columns)}"
                ) from None
            raise InputError(f"{name}: unreadable count matrix ({exc})") from None


def write_counts_parquet(path: Path, source: Path, name: str) -> list[str]:
    """Validate ``source`` and write it to ``path`` as Parquet; returns the sample ids."""
    layout = CountsLayout(source, name)
    validator = _Validator(layout, name)
    raw = _batches(source, layout, name)
    genes = write_count_batches(path, layout.schema(), (validator.typed(b) for b in raw))
    if not genes:
        raise InputError(f"{name}: count matrix without genes")
    return layout.sample_ids


def write_count_batches(path: Path, schema: pa.Schema, batches: Iterator[pa.RecordBatch]) -> int:
    """Write typed ``gene_id`` + int64 sample columns to ``path`` in the stored layout.

    Row groups hold a fixed number of genes (:data:`CELLS_PER_GROUP` counts), whatever
    the batches' sizes, so the same matrix gives the same bytes from any input format
    (TSV, CSV, h5ad). Returns the number of genes written.
    """
    group_rows = max(1024, CELLS_PER_GROUP // max(1, len(schema) - 1))
    pending: list[pa.RecordBatch] = []
    pending_rows = written = 0
    with pq.ParquetWriter(path, schema, compression="zstd") as writer:
        for batch in batches:
            pending.append(batch)
            pending_rows += batch.num_rows
            while pending_rows >= group_rows:
                table = pa.Table.from_batches(pending, schema=schema)
                writer.write_table(table.slice(0, group_rows), row_group_size=group_rows)
                written += group_rows
                rest = table.slice(group_rows)
                pending = rest.to_batches()
                pending_rows = rest.num_rows
        if pending_rows or not written:
            table = pa.Table.from_batches(pending, schema=schema)
            writer.write_table(table, row_group_size=group_rows)
            written += pending_rows
    return written


def _companion_member(path: Path, base: str) -> str:
    with path.open("rb") as handle:
        first = handle.readline(MAX_HEADER_BYTES)
    return f"{base}.tsv" if b"\t" in first or b"," not in first else f"{base}.csv"


class CountsReader:
    """``format = "counts"``: a genes × samples count matrix (TSV/CSV, gzip or not)."""

    format: ClassVar[str] = "counts"

    def sniff(self, path: Path, head: bytes) -> bool:
        return looks_like_counts(path)

    def read(self, context: SourceContext) -> Iterator[ParsedChunk]:
        root = omics_dir(context)
        name = context.original_name
        manifest = context_manifest(context)
        sheet = context.companions.get("samples")
        dates = parse_sample_sheet(sheet, f"{name} sample sheet") if sheet else {}
        stored = StoredFileset(root, "")
        with build_fileset(root, EXPRESSION_KIND, stored) as fileset:
            samples = write_counts_parquet(fileset.tmp / COUNTS_MEMBER, context.path, name)
            fileset.adopt(COUNTS_MEMBER)
            for role in ("samples", "genes"):
                extra = context.companions.get(role)
                if extra is not None:
                    fileset.copy(extra, _companion_member(extra, role))
        log.info(
            "%s: %d RNA-seq samples in %s (%s)",
            name,
            len(samples),
            stored.folder,
            "stored" if stored.created else "already stored",
        )
        yield registration_chunk(context, samples, stored, manifest, dates)


def registration_chunk(
    context: SourceContext,
    samples: list[str],
    stored: StoredFileset,
    manifest: Manifest | None,
    dates: Mapping[str, dt.date],
) -> ParsedChunk:
    """The chunk that registers a stored count matrix's samples (with the manifest's
    quarantined rows): the last step of every expression reader."""
    file = StoredFile(stored.uri(COUNTS_MEMBER), "parquet", stored.digests[COUNTS_MEMBER])
    chunk = ParsedChunk(records_read=len(samples))
    if manifest is not None:
        chunk.quarantine.extend(manifest.quarantine)
    chunk.omics_samples.append(sample_rows(context, samples, RNASEQ_ASSAY, file, manifest, dates))
    return chunk
