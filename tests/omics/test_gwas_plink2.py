"""GWAS results agree with PLINK 2 ``--glm`` (v2.00a3.5) on the committed fixture.

PLINK 2 prints 6 significant digits, so "agree" means: every digit PLINK printed is
ours (|ours - printed| within half a unit of the last digit). See
fixtures/plink2/README.md for how the reference outputs were made.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medlake.omics.gwas.association import GlmOptions
from medlake.omics.gwas.qc import VariantFilter, principal_components, variant_keep_mask

from .gwas_helpers import FIXTURE, fixture_inputs, plink_report, printed_tolerance, run


def _same_rows(ours: pd.DataFrame, ref: pd.DataFrame) -> None:
    """Identity, allele, count and error columns are the same; NaN patterns too."""
    assert list(ours["id"]) == list(ref["ID"])
    assert list(ours["a1"]) == list(ref["A1"])
    assert list(ours["obs_ct"]) == list(ref["OBS_CT"])
    # PLINK 2 a3.5's Firth says UNFINISHED when it hit its iteration limit (and still
    # reports the estimate); ours iterates to convergence.
    assert list(ours["errcode"]) == [e.replace("UNFINISHED", ".") for e in ref["ERRCODE"]]
    assert (ours["beta"].isna().to_numpy() == ref["P"].isna().to_numpy()).all()
    assert np.all(np.abs(ours["a1_freq"] - ref["A1_FREQ"]) <= printed_tolerance(ref["A1_FREQ"]))


def _within_printed(ours: np.ndarray, ref: np.ndarray, units: float = 0.5) -> np.ndarray:
    """Which of ``ours`` agree with PLINK's printed ``ref`` (NaN rows left out)."""
    ok = ~np.isnan(ref)
    return np.abs(ours[ok] - ref[ok]) <= printed_tolerance(ref[ok], units)


@pytest.mark.parametrize("kind", ["bed", "pgen"])
def test_linear_matches_plink2_to_every_printed_digit(kind: str) -> None:
    ours = run(kind, "QT", GlmOptions(model="linear"))
    ref = plink_report("ref.QT.glm.linear")
    _same_rows(ours, ref)
    for column, ref_column in (("beta", "BETA"), ("se", "SE"), ("stat", "T_STAT")):
        assert _within_printed(ours[column].to_numpy(), ref[ref_column].to_numpy()).all()
    # P: PLINK's own t-distribution tail differs from SciPy's in the 6th digit at times
    ok = ~ref["P"].isna()
    assert np.allclose(ours["p"][ok], ref["P"][ok], rtol=1e-5, atol=0)


def test_fixture_has_missing_calls_constant_and_flipped_variants() -> None:
    """The fixture exercises what the agreement tests claim to cover."""
    ref = plink_report("ref.QT.glm.linear")
    assert (ref["OBS_CT"] < ref["OBS_CT"].max()).sum() > 50  # missing calls dropped
    assert (ref["ERRCODE"] == "CONST_OMITTED_ALLELE").sum() == 2
    assert (ref["A1"] == ref["REF"]).sum() > 50
    assert (ref["A1"] == ref["ALT"]).sum() > 50


def test_logistic_with_firth_fallback_matches_plink2() -> None:
    ours = run("bed", "CC", GlmOptions(model="logistic", firth="fallback"))
    ref = plink_report("ref_isolated.CC.glm.logistic.hybrid")
    _same_rows(ours, ref)
    assert list(np.where(ours["firth"], "Y", "N")) == list(ref["FIRTH?"])
    ordinary = (ref["FIRTH?"] == "N").to_numpy()
    assert ordinary.sum() > 200
    assert (~ordinary).sum() >= 1
    # to the last printed digit, but for rare variants where PLINK's own iterations stop
    # ~1e-5 short of the optimum
    odds = np.exp(ours["beta"].to_numpy())
    se = ours["se"].to_numpy()
    for mine, theirs in ((odds, ref["OR"]), (se, ref["LOG(OR)_SE"])):
        theirs = theirs.to_numpy()[ordinary]
        assert _within_printed(mine[ordinary], theirs, 1.0).mean() > 0.97
        ok = ~np.isnan(theirs)
        assert np.allclose(mine[ordinary][ok], theirs[ok], rtol=1e-4)
    ok = ordinary & ~ref["P"].isna().to_numpy()
    assert np.allclose(ours["p"][ok], ref["P"][ok], rtol=1e-4, atol=0)
    # Firth rows: PLINK 2 a3.5's Firth fit stops ~1e-4 short of the optimum on rare
    # variants (README), so these agree to 1e-3.
    firth = ~ordinary & ~ref["P"].isna().to_numpy()
    assert np.allclose(odds[firth], ref["OR"][firth], rtol=1e-3)
    assert np.allclose(se[firth], ref["LOG(OR)_SE"][firth], rtol=1e-3)


def test_firth_always_matches_plink2() -> None:
    ours = run("bed", "CC", GlmOptions(model="logistic", firth="always"))
    ref = plink_report("ref_isolated.CC.glm.firth")
    _same_rows(ours, ref)
    ok = ~ref["P"].isna().to_numpy()
    odds, se = np.exp(ours["beta"].to_numpy())[ok], ours["se"].to_numpy()[ok]
    assert np.allclose(odds, ref["OR"][ok], rtol=1e-3)
    assert np.allclose(se, ref["LOG(OR)_SE"][ok], rtol=1e-3)
    assert np.allclose(ours["p"][ok], ref["P"][ok], rtol=5e-3)  # |z| amplifies: 5e-3
    # the typical row agrees to PLINK's printing precision
    assert np.median(np.abs(odds / ref["OR"][ok] - 1.0)) < 5e-6


def test_plink2_whole_file_logistic_se_depends_on_the_variant_before() -> None:
    """Why the logistic reference is made one variant per run (README): PLINK 2 a3.5's
    whole-file report differs from its own single-variant runs on some variants with
    missing calls, while our results do not depend on the order of variants."""
    whole = plink_report("ref.CC.glm.logistic.hybrid")
    isolated = plink_report("ref_isolated.CC.glm.logistic.hybrid")
    ordinary = (whole["FIRTH?"] == "N") & ~whole["P"].isna()
    whole, isolated = whole[ordinary], isolated[ordinary]
    assert np.allclose(whole["OR"], isolated["OR"], rtol=1e-5)
    differs = ~np.isclose(whole["LOG(OR)_SE"], isolated["LOG(OR)_SE"], rtol=1e-5)
    assert differs.sum() > 0
    assert (whole["OBS_CT"][differs] < whole["OBS_CT"].max()).all()  # missing calls only
    small = run("bed", "CC", GlmOptions(model="logistic", block_variants=7))
    large = run("bed", "CC", GlmOptions(model="logistic", block_variants=500))
    assert np.allclose(small["se"], large["se"], rtol=1e-12, equal_nan=True)


def test_variant_filters_keep_what_plink2_keeps() -> None:
    geno, _, _ = fixture_inputs()
    with geno:
        calls = geno.read(0, len(geno.variants))
        flt = VariantFilter(maf=0.05, geno=0.05, hwe=1e-4)
        keep = variant_keep_mask(calls, geno.samples.founder, flt)
        ours = set(geno.variants.id[keep])
    expected = set((FIXTURE / "filtered.snplist").read_text().split())
    assert ours == expected
    assert len(expected) < len(geno.variants) - 30  # each filter removed something


def test_filters_apply_in_the_association() -> None:
    flt = VariantFilter(maf=0.05, geno=0.05, hwe=1e-4)
    ours = run("bed", "QT", GlmOptions(filters=flt, block_variants=50))
    assert set(ours["id"]) == set((FIXTURE / "filtered.snplist").read_text().split())


def test_principal_components_match_plink2_pca() -> None:
    geno, _, _ = fixture_inputs()
    with geno:
        calls = geno.read(0, len(geno.variants))
        pcs = principal_components([calls], len(geno.samples), 3)
    ref = pd.read_csv(FIXTURE / "pca.eigenvec", sep="\t")
    for i in range(3):
        # PLINK 2 weights variants slightly differently; the axes are the same
        assert abs(np.corrcoef(pcs[:, i], ref[f"PC{i + 1}"])[0, 1]) > 0.99
