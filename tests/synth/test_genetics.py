"""The planted causal variants: shapes, Hardy–Weinberg draws and recoverable effects."""

from __future__ import annotations

import numpy as np
import pytest

from medlake.errors import UsageError
from medlake.synth.genetics import (
    GRCH38_AUTOSOME_LENGTHS,
    PLANTED_VARIANTS,
    draw_causal_genotypes,
    ldl_shift_mmol,
    t2d_logit_shift,
)


def test_planted_variants_are_plausible_and_unique() -> None:
    ids = [v.variant_id for v in PLANTED_VARIANTS]
    assert len(set(ids)) == len(ids)
    assert len({(v.chrom, v.pos) for v in PLANTED_VARIANTS}) == len(PLANTED_VARIANTS)
    t2d = [v for v in PLANTED_VARIANTS if v.trait == "t2d"]
    ldl = [v for v in PLANTED_VARIANTS if v.trait == "ldl"]
    assert len(t2d) == 3
    assert 2 <= len(ldl) <= 3
    for v in t2d:
        assert 1.6 - 1e-9 <= np.exp(v.effect) <= 2.5
        assert 0.2 <= v.alt_freq <= 0.4
    for v in ldl:
        assert 0.25 <= v.effect <= 0.5
    for v in PLANTED_VARIANTS:
        assert 1 <= v.pos <= GRCH38_AUTOSOME_LENGTHS[int(v.chrom) - 1]
        assert v.ref != v.alt
        assert {v.ref, v.alt} <= set("ACGT")


def test_draws_follow_hardy_weinberg_at_the_planted_frequencies() -> None:
    g = draw_causal_genotypes(np.random.default_rng(7), 40_000)
    assert g.dtype == np.int8
    assert g.shape == (40_000, len(PLANTED_VARIANTS))
    for j, v in enumerate(PLANTED_VARIANTS):
        p = v.alt_freq
        observed = np.bincount(g[:, j], minlength=3) / g.shape[0]
        expected = np.array([(1 - p) ** 2, 2 * p * (1 - p), p**2])
        np.testing.assert_allclose(observed, expected, atol=0.01)


def test_draws_are_reproducible_by_seed() -> None:
    a = draw_causal_genotypes(np.random.default_rng(3), 100)
    b = draw_causal_genotypes(np.random.default_rng(3), 100)
    c = draw_causal_genotypes(np.random.default_rng(4), 100)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_ldl_effect_is_recovered_by_regression() -> None:
    rng = np.random.default_rng(11)
    n = 5_000
    g = draw_causal_genotypes(rng, n)
    ldl = 3.0 + ldl_shift_mmol(g) + rng.normal(0.0, 0.8, n)
    for j, v in enumerate(PLANTED_VARIANTS):
        x = g[:, j].astype(float)
        slope = np.cov(x, ldl)[0, 1] / x.var(ddof=1)
        expected = v.effect if v.trait == "ldl" else 0.0
        assert slope == pytest.approx(expected, abs=0.06)


def test_t2d_shift_gives_the_planted_odds_ratio() -> None:
    rng = np.random.default_rng(5)
    n = 60_000
    g = draw_causal_genotypes(rng, n)
    logit = -2.0 + t2d_logit_shift(g)
    case = rng.random(n) < 1.0 / (1.0 + np.exp(-logit))
    for j, v in enumerate(PLANTED_VARIANTS):
        if v.trait != "t2d":
            continue
        # allelic odds ratio from the 2x2 table of alleles in cases and controls
        alt_case = g[case, j].sum()
        alt_ctrl = g[~case, j].sum()
        ref_case = 2 * case.sum() - alt_case
        ref_ctrl = 2 * (~case).sum() - alt_ctrl
        log_or = np.log(alt_case * ref_ctrl / (ref_case * alt_ctrl))
        assert log_or == pytest.approx(v.effect, abs=0.12)


def test_shifts_are_centred_and_reject_wrong_shapes() -> None:
    g = draw_causal_genotypes(np.random.default_rng(1), 50_000)
    assert abs(ldl_shift_mmol(g).mean()) < 0.02
    assert abs(t2d_logit_shift(g).mean()) < 0.02
    with pytest.raises(UsageError):
        ldl_shift_mmol(g[:, :2])
