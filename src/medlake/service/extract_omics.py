"""Omics features of a cohort's members: genotype dosages and gene expression.

Read from the files registered in ``omics_sample`` (genotypes: PLINK ``.bed``/``.pgen``
through pgenlib; expression: the counts Parquet ingest wrote), with the cohort domain's
readers, so a variant or gene means the same in a cohort criterion and in its extract.
A person with several samples gets the value of the earliest collected one (then the
smallest sample id) that has a value; a person without one gets null.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa

from medlake.cohort.omics import allele_copies, expression_values
from medlake.engine import Engine
from medlake.errors import InputError
from medlake.service.extract_spec import ExpressionFeature, GenotypeFeature

_NEVER = dt.date(9999, 12, 31)


def _member_samples(engine: Engine, assay: str, persons: set[int]) -> list[dict]:  # type: ignore[type-arg]
    t = engine.table("omics_sample")
    rows = engine.execute(
        t.filter((t.assay == assay) & t.person_id.notnull()).select(
            "sample_id", "file_uri", "person_id", "collected_date"
        )
    ).to_pylist()
    rows = [r for r in rows if r["person_id"] in persons]
    return sorted(rows, key=lambda r: (r["collected_date"] or _NEVER, r["sample_id"]))


def _first_per_person(values: list[tuple[int, object]]) -> dict[int, object]:
    chosen: dict[int, object] = {}
    for person, value in values:  # already in sample order
        if value is not None and person not in chosen:
            chosen[person] = value
    return chosen


def genotype_dosages(
    engine: Engine, omics_dir: Path, persons: pa.Array, features: list[GenotypeFeature]
) -> dict[str, pa.Array]:
    """One int8 column per feature, aligned with ``persons``: copies of the allele."""
    ids = persons.to_pylist()
    samples = _member_samples(engine, "genotype", set(ids))
    files = sorted({s["file_uri"] for s in samples})
    columns: dict[str, pa.Array] = {}
    for feature in features:
        copies: dict[str, int] = {}
        found = False
        for uri in files:
            try:
                copies |= allele_copies(omics_dir / uri, feature.variant, feature.allele)
                found = True
            except InputError as error:
                if "no variant" not in error.message:
                    raise
        if files and not found:
            raise InputError(f"no registered genotype file has variant {feature.variant!r}")
        chosen = _first_per_person([(s["person_id"], copies.get(s["sample_id"])) for s in samples])
        columns[feature.column] = pa.array([chosen.get(p) for p in ids], type=pa.int8())
    return columns


def gene_expression(
    engine: Engine, omics_dir: Path, persons: pa.Array, features: list[ExpressionFeature]
) -> dict[str, pa.Array]:
    """One float64 column per feature, aligned with ``persons``."""
    ids = persons.to_pylist()
    wanted = set(ids)
    columns: dict[str, pa.Array] = {}
    for feature in features:
        values = expression_values(engine, omics_dir, feature.gene, feature.measure).to_pylist()
        values = [v for v in values if v["person_id"] in wanted]
        values.sort(key=lambda v: (v["collected_date"] or _NEVER, v["sample_id"]))
        chosen = _first_per_person([(v["person_id"], v["value"]) for v in values])
        columns[feature.column] = pa.array([chosen.get(p) for p in ids], type=pa.float64())
    return columns
