"""Omics criteria resolved to events: genotype carriers and expression thresholds.

Genotypes and expression live in files (PLINK ``.bed``/``.pgen``, counts Parquet) under
the workspace's ``omics/`` folder, registered in ``omics_sample`` with the person each
sample belongs to; SQL cannot read them. This module reads them and returns Arrow tables
of events (``person_id, source_id, start_date, end_date``: one row per qualifying
sample, dated by its collection date) that the compiler joins like any other event
table, through an engine memtable.

Genotypes are read with pgenlib (PLINK 2's own reader; it reads PLINK 1 ``.bed`` too),
one variant at a time, so memory is one variant's calls per file whatever the cohort.
"""

from __future__ import annotations

import datetime as dt
import zlib
from pathlib import Path

import ibis
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from medlake.cohort.model import Expression, Genotype, NumericRange
from medlake.engine import Engine
from medlake.errors import InputError

EVENT_SCHEMA = pa.schema(
    [
        ("person_id", pa.int64()),
        ("source_id", pa.int64()),
        ("start_date", pa.date32()),
        ("end_date", pa.date32()),
    ]
)
# Samples without a collection date still carry their genome: date them at the epoch so
# that unbounded windows find them (omics criteria are not bound to observation periods).
_UNDATED = dt.date(1900, 1, 1)


def _samples(engine: Engine, assay: str) -> pa.Table:
    t = engine.table("omics_sample")
    expr = t.filter((t.assay == assay) & t.person_id.notnull()).select(
        "sample_id", "file_uri", "file_format", "person_id", "collected_date"
    )
    return engine.execute(expr)


def _events(rows: list[tuple[int, str, dt.date | None]]) -> pa.Table:
    starts = [d or _UNDATED for _, _, d in rows]
    return pa.table(
        {
            "person_id": [p for p, _, _ in rows],
            # a stable id per sample, for occurrence counts
            "source_id": [zlib.crc32(s.encode()) for _, s, _ in rows],
            "start_date": starts,
            "end_date": [d + dt.timedelta(days=1) for d in starts],
        },
        schema=EVENT_SCHEMA,
    )


# ---------------------------------------------------------------------- genotypes


def _variant_table(path: Path) -> tuple[list[str], list[str], list[str]]:
    """ids, first alleles (allele index 1 = ALT, PLINK 1 A1) and second (REF, A2)."""
    ids: list[str] = []
    alt: list[str] = []
    ref: list[str] = []
    if path.suffix == ".bed":
        with path.with_suffix(".bim").open(encoding="utf-8") as handle:
            for line in handle:
                fields = line.split()
                ids.append(fields[1])
                alt.append(fields[4])
                ref.append(fields[5])
        return ids, alt, ref
    columns: list[str] = []
    with path.with_suffix(".pvar").open(encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("##"):
                continue
            fields = line.rstrip("\n").split("\t")
            if line.startswith("#"):
                columns = [c.lstrip("#") for c in fields]
                continue
            row = dict(zip(columns, fields, strict=False))
            ids.append(row["ID"])
            ref.append(row["REF"])
            alt.append(row["ALT"].split(",")[0])
    return ids, alt, ref


def _file_samples(path: Path) -> list[str]:
    if path.suffix == ".bed":
        with path.with_suffix(".fam").open(encoding="utf-8") as handle:
            return [line.split()[1] for line in handle if line.strip()]
    samples: list[str] = []
    with path.with_suffix(".psam").open(encoding="utf-8") as handle:
        header: list[str] = []
        for line in handle:
            fields = line.rstrip("\n").split("\t")
            if line.startswith("#"):
                header = [c.lstrip("#") for c in fields]
                continue
            samples.append(fields[header.index("IID")] if "IID" in header else fields[0])
    return samples


def allele_copies(path: Path, variant: str, allele: str) -> dict[str, int]:
    """Copies of ``allele`` at ``variant`` per sample id of a ``.bed``/``.pgen`` file.

    Missing calls are left out. Raises InputError when the variant is not in the file or
    ``allele`` is neither of its alleles.
    """
    import pgenlib  # the omics readers load lazily: a count without omics never needs them

    ids, alt, ref = _variant_table(path)
    try:
        index = ids.index(variant)
    except ValueError:
        raise InputError(f"{path.name}: no variant {variant!r}") from None
    if allele not in (alt[index], ref[index]):
        raise InputError(
            f"{path.name}: variant {variant} has alleles {ref[index]}/{alt[index]}, not {allele!r}"
        )
    samples = _file_samples(path)
    reader = pgenlib.PgenReader(bytes(str(path), "utf-8"), raw_sample_ct=len(samples))
    try:
        calls = np.empty(len(samples), dtype=np.int8)
        reader.read(index, calls, allele_idx=1)
    finally:
        reader.close()
    copies = calls.astype(np.int16)
    if allele == ref[index] and allele != alt[index]:
        copies = np.where(copies >= 0, 2 - copies, -9)
    return {s: int(c) for s, c in zip(samples, copies, strict=True) if c >= 0}


def genotype_events(engine: Engine, omics_dir: Path, criterion: Genotype) -> pa.Table:
    """Linked genotyped samples with at least ``min_copies`` of the allele."""
    samples = _samples(engine, "genotype").to_pylist()
    by_file: dict[str, list[dict]] = {}  # type: ignore[type-arg]
    for sample in samples:
        by_file.setdefault(sample["file_uri"], []).append(sample)
    rows: list[tuple[int, str, dt.date | None]] = []
    found = False
    for uri, members in sorted(by_file.items()):
        try:
            copies = allele_copies(omics_dir / uri, criterion.variant, criterion.allele)
        except InputError as error:
            if "no variant" in error.message:
                continue  # another file may hold it
            raise
        found = True
        for sample in members:
            if copies.get(sample["sample_id"], -1) >= criterion.min_copies:
                rows.append((sample["person_id"], sample["sample_id"], sample["collected_date"]))
    if by_file and not found:
        raise InputError(f"no registered genotype file has variant {criterion.variant!r}")
    return _events(rows)


# ---------------------------------------------------------------------- expression


def expression_values(engine: Engine, omics_dir: Path, gene: str, measure: str) -> pa.Table:
    """``person_id, sample_id, collected_date, value`` of ``gene`` for linked samples."""
    samples = _samples(engine, "rnaseq").to_pylist()
    by_file: dict[str, list[dict]] = {}  # type: ignore[type-arg]
    for sample in samples:
        by_file.setdefault(sample["file_uri"], []).append(sample)
    out: dict[str, list] = {"person_id": [], "sample_id": [], "collected_date": [], "value": []}  # type: ignore[type-arg]
    found = False
    for uri, members in sorted(by_file.items()):
        path = omics_dir / uri
        wanted = [m["sample_id"] for m in members]
        table = pq.read_table(path, columns=["gene_id", *wanted])
        genes = table.column("gene_id").to_pylist()
        if gene not in genes:
            continue
        found = True
        row = genes.index(gene)
        for member in members:
            column = table.column(member["sample_id"])
            count = column[row].as_py()
            value = float(count)
            if measure == "cpm":
                total = float(pa.compute.sum(column).as_py() or 0)
                value = count / total * 1e6 if total else 0.0
            out["person_id"].append(member["person_id"])
            out["sample_id"].append(member["sample_id"])
            out["collected_date"].append(member["collected_date"])
            out["value"].append(value)
    if by_file and not found:
        raise InputError(f"no registered expression matrix has gene {gene!r}")
    return pa.table(out)


def _threshold(values: np.ndarray, quantile: NumericRange) -> NumericRange:
    """A range in quantile space as the same range on the values (numpy's linear rule)."""
    value = float(np.quantile(values, quantile.value)) if len(values) else 0.0
    extent = None
    if quantile.extent is not None:
        extent = float(np.quantile(values, quantile.extent)) if len(values) else 0.0
    return NumericRange(op=quantile.op, value=value, extent=extent)


def _passes(value: float, bound: NumericRange) -> bool:
    low, high = bound.value, bound.extent
    return {
        "lt": value < low,
        "lte": value <= low,
        "gt": value > low,
        "gte": value >= low,
        "eq": value == low,
        "neq": value != low,
        "bt": high is not None and low <= value <= high,
        "nbt": high is not None and not low <= value <= high,
    }[bound.op]


def expression_events(engine: Engine, omics_dir: Path, criterion: Expression) -> pa.Table:
    """Linked RNA-seq samples whose value for the gene passes the criterion."""
    values = expression_values(engine, omics_dir, criterion.gene, criterion.measure)
    numbers = np.asarray(values.column("value").to_pylist(), dtype=float)
    bound = criterion.value or _threshold(numbers, criterion.quantile)  # type: ignore[arg-type]
    rows = [
        (p, s, d)
        for p, s, d, v in zip(
            values.column("person_id").to_pylist(),
            values.column("sample_id").to_pylist(),
            values.column("collected_date").to_pylist(),
            numbers,
            strict=True,
        )
        if _passes(float(v), bound)
    ]
    return _events(rows)


def omics_memtable(events: pa.Table) -> ibis.Table:
    """The events as an Ibis memtable the compiler can join on any engine."""
    return ibis.memtable(events)
