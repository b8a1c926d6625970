"""Shared helpers of the GWAS tests: the PLINK 2 fixture and its committed outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from medlake.omics.gwas.association import Backend, GlmOptions, run_glm
from medlake.omics.gwas.plink_io import GenotypeFile, align, read_sample_table

FIXTURE = Path(__file__).parent / "fixtures" / "plink2"


def fixture_inputs(kind: str = "bed") -> tuple[GenotypeFile, dict[str, np.ndarray], np.ndarray]:
    """The fixture's genotypes, phenotypes by name (CC coded 0/1) and covariate matrix."""
    geno = GenotypeFile(FIXTURE / "small", kind)
    pheno_iid, phenos = read_sample_table(FIXTURE / "pheno.tsv")
    covar_iid, covars = read_sample_table(FIXTURE / "covar.tsv")
    covariates = np.column_stack([align(geno.samples.iid, covar_iid, v) for v in covars.values()])
    qt = align(geno.samples.iid, pheno_iid, phenos["QT"])
    cc = align(geno.samples.iid, pheno_iid, phenos["CC"])
    cc = np.where(cc == 2, 1.0, np.where(cc == 1, 0.0, np.nan))
    return geno, {"QT": qt, "CC": cc}, covariates


def run(kind: str, pheno: str, options: GlmOptions, backend: Backend | None = None) -> pd.DataFrame:
    """Our results on the fixture as a DataFrame in file order."""
    geno, phenos, covariates = fixture_inputs(kind)
    with geno:
        batches = list(run_glm(geno, phenos[pheno], covariates, options, backend))
    return pa.Table.from_batches(batches).to_pandas()


def plink_report(name: str) -> pd.DataFrame:
    """A committed PLINK 2 report, ``NA`` as NaN and ERRCODE ``.`` kept as text."""
    return pd.read_csv(FIXTURE / name, sep="\t", keep_default_na=False, na_values=["NA"])


def printed_tolerance(reference: np.ndarray, units: float = 0.5) -> np.ndarray:
    """``units`` of the 6th significant digit PLINK 2 prints, plus 1e-6 relative.

    PLINK 2 writes 6 significant digits, so a value that agrees to full precision can
    differ from the printed one by half a unit and no more.
    """
    reference = np.asarray(reference, dtype=np.float64)
    with np.errstate(divide="ignore"):
        magnitude = np.floor(np.log10(np.abs(reference)))
    magnitude[~np.isfinite(magnitude)] = -300.0
    return units * 10.0 ** (magnitude - 5) * 1.0001 + 1e-6 * np.abs(reference)
