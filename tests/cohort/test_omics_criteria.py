"""Omics criteria: genotype carriers and expression thresholds, against independent readers.

Genotypes are read here with bed-reader (not pgenlib, which the cohort module uses) and
expression with pandas from the stored count matrix; samples are linked to persons
through the ``omics_sample`` rows.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from bed_reader import open_bed
from tests.cohort.reference import Lake, attrition, observed

from medlake.errors import InputError


def _entry(lake: Lake) -> pd.DataFrame:
    visits = lake.events("visit_occurrence").sort_values(["person_id", "start", "source_id"])
    return lake.entry(visits.groupby("person_id").head(1))


def _planted(hospital: Path) -> dict[str, str]:
    with (hospital / "truth" / "planted_variants.csv").open(encoding="utf-8") as handle:
        row = next(r for r in csv.DictReader(handle) if r["trait"] == "t2d")
    return row


def _copies(lake: Lake, variant: str, allele: str) -> dict[str, int]:
    """Copies of ``allele`` per genotyped sample id, by bed-reader."""
    samples = lake.frames["omics_sample"]
    genotype_files = samples.loc[samples.assay == "genotype", "file_uri"].unique()
    copies: dict[str, int] = {}
    for uri in genotype_files:
        path = lake.workspace / "omics" / uri
        with open_bed(path, count_A1=True) as bed:
            column = list(bed.sid).index(variant)
            a1 = bed.allele_1[column]
            values = bed.read(index=np.s_[:, column], dtype="float32")[:, 0]
            for iid, value in zip(bed.iid, values, strict=True):
                if not np.isnan(value):
                    copies[iid] = int(value) if allele == a1 else 2 - int(value)
    return copies


def test_genotype_carriers_and_homozygotes(lake: Lake, count: Any, hospital_lake: Any) -> None:
    variant = _planted(hospital_lake.hospital)
    result = count(
        {
            "name": "carriers",
            "primary_criteria": {"criteria": [{"domain": "visit_occurrence", "first": True}]},
            "inclusion_rules": [
                {
                    "name": "carrier",
                    "expression": {
                        "criteria": [
                            {
                                "criterion": {
                                    "domain": "genotype",
                                    "variant": variant["variant_id"],
                                    "allele": variant["alt"],
                                }
                            }
                        ]
                    },
                },
                {
                    "name": "homozygous",
                    "expression": {
                        "criteria": [
                            {
                                "criterion": {
                                    "domain": "genotype",
                                    "variant": variant["variant_id"],
                                    "allele": variant["alt"],
                                    "min_copies": 2,
                                }
                            }
                        ]
                    },
                },
            ],
        }
    )
    copies = _copies(lake, variant["variant_id"], variant["alt"])
    samples = lake.frames["omics_sample"]
    linked = samples[(samples.assay == "genotype") & samples.person_id.notna()]
    per_person = (
        linked.assign(copies=linked.sample_id.map(copies)).groupby("person_id").copies.max()
    )
    index = _entry(lake)
    person_copies = index.person_id.map(per_person)
    expected = attrition(index, [person_copies >= 1, person_copies >= 2])
    assert observed(result) == expected
    assert 0 < expected["remaining"][1] < expected["remaining"][0]


def _cpm(lake: Lake, gene: str) -> pd.Series:
    """CPM of ``gene`` per linked RNA-seq person (library size = the sample's column sum)."""
    samples = lake.frames["omics_sample"]
    linked = samples[(samples.assay == "rnaseq") & samples.person_id.notna()]
    values = {}
    for uri, group in linked.groupby("file_uri"):
        matrix = pd.read_parquet(lake.workspace / "omics" / uri).set_index("gene_id")
        for sample, person in zip(group.sample_id, group.person_id, strict=True):
            values[person] = matrix.loc[gene, sample] / matrix[sample].sum() * 1e6
    return pd.Series(values)


def test_expression_above_a_value_and_a_quantile(
    lake: Lake, count: Any, hospital_lake: Any
) -> None:
    genes = pd.read_csv(hospital_lake.truth / "de_genes.csv")
    gene = genes.sort_values("base_mean").gene_id.iloc[-1]
    cpm = _cpm(lake, gene)
    threshold = float(cpm.median())
    result = count(
        {
            "name": "expression",
            "primary_criteria": {"criteria": [{"domain": "visit_occurrence", "first": True}]},
            "inclusion_rules": [
                {
                    "name": "expressed",
                    "expression": {
                        "criteria": [
                            {
                                "criterion": {
                                    "domain": "expression",
                                    "gene": gene,
                                    "value": {"op": "gt", "value": threshold},
                                }
                            }
                        ]
                    },
                },
                {
                    "name": "top quarter",
                    "expression": {
                        "criteria": [
                            {
                                "criterion": {
                                    "domain": "expression",
                                    "gene": gene,
                                    "quantile": {"op": "gt", "value": 0.75},
                                }
                            }
                        ]
                    },
                },
            ],
        }
    )
    index = _entry(lake)
    value = index.person_id.map(cpm)
    top = float(np.quantile(cpm.to_numpy(), 0.75))
    expected = attrition(index, [value > threshold, value > top])
    assert observed(result) == expected
    assert 0 < expected["remaining"][1] < expected["remaining"][0]


def test_unknown_variant_and_allele_are_refused(count: Any) -> None:
    base = {"name": "x", "primary_criteria": {"criteria": [{"domain": "visit_occurrence"}]}}
    for criterion, message in (
        ({"domain": "genotype", "variant": "rs0", "allele": "A"}, "no registered genotype file"),
        ({"domain": "genotype", "variant": "rs990710001", "allele": "G"}, "not 'G'"),
        (
            {"domain": "expression", "gene": "NOPE", "value": {"op": "gt", "value": 1}},
            "gene 'NOPE'",
        ),
    ):
        rules = [{"name": "r", "expression": {"criteria": [{"criterion": criterion}]}}]
        with pytest.raises(InputError, match=message):
            count({**base, "inclusion_rules": rules})
