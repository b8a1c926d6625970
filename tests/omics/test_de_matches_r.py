"""medlake de agrees with R DESeq2 on the committed fixture (R is not needed to run this).

The reference CSVs were made by ``fixtures/deseq2/run_deseq2.R`` (R 4.2.2, DESeq2 1.38.3;
see the README there). As PyDESeq2's own tests do, the NaN pattern is checked first
(all-zero genes, Cook's outliers, independent filtering), then the numbers. Genes where
R's IRLS hit its 100-iteration limit and R fell back to ``optim`` are compared apart: R
stops where its L-BFGS-B stops, on likelihoods that are flat (a group of zeros), so the
coefficient is not determined to 1e-3 by either tool; they must stay few.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medlake.omics.expression import RESULT_COLUMNS
from medlake.service.de import run_de

FIXTURE = Path(__file__).parent / "fixtures" / "deseq2"
DESIGNS = [
    pytest.param((("batch",), "deseq2_batch_condition.csv"), id="batch+condition"),
    pytest.param((("batch", "age"), "deseq2_batch_age_condition.csv"), id="batch+age+condition"),
]


def _ours(covariates: tuple[str, ...]) -> pd.DataFrame:
    report = run_de(
        out=None,
        counts=FIXTURE / "counts.tsv",
        samples=FIXTURE / "samples.tsv",
        condition="condition",
        case="case",
        control="control",
        covariates=covariates,
    )
    return report.table


@pytest.fixture(scope="module", params=DESIGNS)
def compared(request: pytest.FixtureRequest) -> tuple[pd.DataFrame, pd.DataFrame]:
    covariates, reference = request.param
    ours = _ours(covariates)
    r = pd.read_csv(FIXTURE / reference, index_col="gene_id")
    assert list(ours.index) == list(r.index)
    return ours, r


def _r_irls_converged(r: pd.DataFrame) -> pd.Series:
    return r["betaIter"] < 100


def test_nan_pattern_is_r_s(compared: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    ours, r = compared
    for column in RESULT_COLUMNS:
        mismatch = ours[column].isna() != r[column].isna()
        assert not mismatch.any(), f"{column}: NaN differs for {list(ours.index[mismatch])[:5]}"
    # the fixture exercises each kind of NA
    assert (r["baseMean"] == 0).any()
    assert (r["pvalue"].isna() & (r["baseMean"] > 0)).any() or r["padj"].isna().sum() > 10


def test_base_mean_is_r_s(compared: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    ours, r = compared
    np.testing.assert_allclose(ours["baseMean"], r["baseMean"], rtol=1e-9)


def test_log2_fold_change_within_1e_3(compared: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    ours, r = compared
    converged = _r_irls_converged(r) & r["log2FoldChange"].notna()
    difference = (ours["log2FoldChange"] - r["log2FoldChange"]).abs()[converged]
    assert difference.max() < 1e-3, difference.sort_values().tail(3)
    fallback = (~_r_irls_converged(r) & (r["baseMean"] > 0)).sum()
    assert fallback <= 0.02 * len(r), f"{fallback} genes left to R's optim fallback"


def test_standard_errors_and_p_values_close(compared: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    ours, r = compared
    converged = _r_irls_converged(r) & r["pvalue"].notna()
    for column, rtol in (("lfcSE", 1e-4), ("stat", 2e-3), ("pvalue", 1e-3)):
        np.testing.assert_allclose(
            ours.loc[converged, column], r.loc[converged, column], rtol=rtol, err_msg=column
        )


def test_same_significant_calls(compared: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    ours, r = compared
    ours_calls = ours["padj"] < 0.05
    r_calls = r["padj"] < 0.05
    assert r_calls.sum() > 50
    assert list(ours.index[ours_calls != r_calls]) == []
