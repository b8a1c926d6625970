"""The GWAS kernels: exact per-variant regressions however they are computed.

The linear kernel's low-rank handling of missing calls and the batched logistic fit are
checked against a plain refit of each variant on its called samples; the PyTorch path
(CPU device here, CUDA when present) against NumPy in float64.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special

from medlake.omics.gwas import kernels
from medlake.omics.gwas.association import GlmOptions, design_basis, select_backend
from medlake.omics.gwas.firth import firth_logistic
from medlake.omics.gwas.plots import genomic_inflation

from .gwas_helpers import fixture_inputs, run


def _data(seed: int = 3, n: int = 300, b: int = 40, c: int = 4):
    rng = np.random.default_rng(seed)
    cov = rng.normal(0, 1, (n, c)) * [1, 10, 0.1, 3] + [0, 50, 0, 1]  # scales differ
    calls = rng.binomial(2, rng.uniform(0.05, 0.6, b)[:, None], (b, n)).astype(float)
    missing = rng.random((b, n)) < rng.uniform(0, 0.1, b)[:, None]
    y = cov @ rng.normal(0, 0.1, c) + 0.3 * calls[0] + rng.normal(0, 1, n)
    return cov, calls, missing, y


def _linear_refit(cov, g, keep, y):
    x = np.column_stack([np.ones(keep.sum()), cov[keep], g[keep]])
    coef, rss, *_ = np.linalg.lstsq(x, y[keep], rcond=None)
    df = keep.sum() - x.shape[1]
    var = rss[0] / df * np.linalg.inv(x.T @ x)[-1, -1]
    return coef[-1], np.sqrt(var)


def test_linear_missing_calls_by_low_rank_correction_equal_refits() -> None:
    cov, calls, missing, y = _data()
    q = design_basis(cov)
    setup = kernels.linear_setup(q, y)
    g = np.where(missing, 0.0, calls)
    out = kernels.linear_block(setup, g, kernels.missing_index(missing))
    for j in range(len(calls)):
        beta, se = _linear_refit(cov, calls[j], ~missing[j], y)
        assert out["beta"][j] == pytest.approx(beta, rel=1e-9)
        assert out["se"][j] == pytest.approx(se, rel=1e-9)
        assert out["obs"][j] == (~missing[j]).sum()


def _logistic_refit(x, y):
    coef = np.zeros(x.shape[1])
    for _ in range(100):
        mu = special.expit(x @ coef)
        info = x.T @ (x * (mu * (1 - mu))[:, None])
        step = np.linalg.solve(info, x.T @ (y - mu))
        coef += step
        if np.abs(step).max() < 1e-13:
            break
    mu = special.expit(x @ coef)
    info = x.T @ (x * (mu * (1 - mu))[:, None])
    return coef[-1], np.sqrt(np.linalg.inv(info)[-1, -1])


def test_batched_logistic_equals_per_variant_refits() -> None:
    cov, calls, missing, _ = _data(seed=5)
    rng = np.random.default_rng(9)
    y = (rng.random(len(cov)) < special.expit(-0.5 + 0.4 * calls[0] + 0.02 * cov[:, 1] - 1)) * 1.0
    q = design_basis(cov)
    setup = kernels.logistic_setup(q, y)
    g = np.where(missing, 0.0, calls)
    out = kernels.logistic_block(setup, g, (~missing).astype(float))
    assert out["converged"].all()
    for j in range(len(calls)):
        keep = ~missing[j]
        x = np.column_stack([np.ones(keep.sum()), cov[keep], calls[j, keep]])
        beta, se = _logistic_refit(x, y[keep])
        # Newton stops once its step is < 1e-6: beta is then exact to ~1e-12, and the SE
        # (from the last iteration's information) to ~1e-7
        assert out["beta"][j] == pytest.approx(beta, rel=1e-9)
        assert out["se"][j] == pytest.approx(se, rel=1e-6)


def test_firth_estimate_is_finite_under_separation_and_solves_its_score() -> None:
    rng = np.random.default_rng(1)
    n = 200
    g = np.zeros(n)
    g[:4] = 1.0
    y = (rng.random(n) < 0.3) * 1.0
    y[:4] = 1.0  # every carrier is a case: ordinary ML diverges
    x = np.column_stack([np.ones(n), rng.normal(size=n), g])
    coef, se, ok = firth_logistic(x, y)
    assert ok
    assert np.isfinite(coef).all()
    assert np.isfinite(se).all()
    mu = special.expit(x @ coef)
    w = mu * (1 - mu)
    inv = np.linalg.inv(x.T @ (x * w[:, None]))
    hat = np.einsum("ij,jk,ik->i", x, inv, x) * w
    assert np.abs(x.T @ (y - mu + hat * (0.5 - mu))).max() < 1e-8  # Firth's score is 0


@pytest.mark.parametrize(("pheno", "model"), [("QT", "linear"), ("CC", "logistic")])
def test_torch_path_equals_numpy_in_float64(pheno: str, model: str) -> None:
    torch_backend = select_backend("torch", device="cpu")
    numpy_backend = select_backend("numpy")
    options = GlmOptions(model=model, block_variants=64)  # type: ignore[arg-type]
    a = run("bed", pheno, options, numpy_backend)
    b = run("bed", pheno, options, torch_backend)
    for column in ("beta", "se", "p"):
        assert np.allclose(a[column], b[column], rtol=1e-9, atol=0, equal_nan=True)
    assert list(a["firth"]) == list(b["firth"])


def test_results_do_not_depend_on_the_block_size() -> None:
    one = run("pgen", "QT", GlmOptions(block_variants=1))
    many = run("pgen", "QT", GlmOptions(block_variants=1000))
    assert np.allclose(one["beta"], many["beta"], rtol=1e-12, equal_nan=True)
    assert list(one["errcode"]) == list(many["errcode"])


def test_genotype_blocks_stream_at_most_the_block_size() -> None:
    geno, _, _ = fixture_inputs("pgen")
    with geno:
        sizes = [calls.shape[0] for _, _, calls in geno.blocks(50)]
        direct = geno.read(0, len(geno.variants))
        again = np.vstack([c.copy() for _, _, c in geno.blocks(64)])
    assert max(sizes) == 50
    assert sum(sizes) == len(geno.variants)
    assert (direct == again).all()


def test_genomic_inflation_is_one_under_the_null() -> None:
    p = np.random.default_rng(0).random(200_000)
    assert genomic_inflation(p) == pytest.approx(1.0, abs=0.02)
    assert genomic_inflation(p**2) > 1.5  # inflated statistics
