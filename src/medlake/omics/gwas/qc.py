"""Variant filters (MAF, call rate, Hardy–Weinberg) and genotype principal components.

Filters follow PLINK 2's ``--maf``, ``--geno`` and ``--hwe``: frequencies and the
Hardy–Weinberg test use founders with a call; call rate uses every sample. The HWE
p-value is the exact test of Wigginton, Cutler & Abecasis (2005), written here because
it is a short recurrence and no maintained Python package provides a vectorised one.

Principal components (Patterson, Price & Reich 2006): genotypes standardised per variant
by ``(g - 2p) / sqrt(2p(1-p))`` (missing calls at the mean), the sample-by-sample
relationship matrix accumulated block by block (memory ``n_samples²``, independent of
the number of variants), and its leading eigenvectors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medlake.errors import UsageError


@dataclass(frozen=True)
class VariantFilter:
    """Keep variants with ``MAF >= maf``, missing-call rate ``<= geno`` and HWE
    ``p >= hwe`` (each ``None`` to skip that filter)."""

    maf: float | None = None
    geno: float | None = None
    hwe: float | None = None

    def __post_init__(self) -> None:
        for name in ("maf", "geno", "hwe"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise UsageError(f"filter {name} must be within [0, 1], got {value}")

    @property
    def active(self) -> bool:
        """True when any filter is set."""
        return any(v is not None for v in (self.maf, self.geno, self.hwe))


def genotype_counts(calls: np.ndarray, founders: np.ndarray) -> np.ndarray:
    """``(B, 3)`` founder counts of ALT dosage 0, 1, 2."""
    f = calls[:, founders]
    return np.stack([(f == v).sum(axis=1) for v in (0, 1, 2)], axis=1)


def hwe_exact_p(het: int, hom1: int, hom2: int) -> float:
    """Exact Hardy–Weinberg p-value (Wigginton et al. 2005) for one variant."""
    rare_hom, common_hom = sorted((hom1, hom2))
    n = het + rare_hom + common_hom
    if n == 0:
        return 1.0
    rare = 2 * rare_hom + het
    probs = np.zeros(rare + 1)
    mid = rare * (2 * n - rare) // (2 * n)
    if (rare - mid) % 2:
        mid += 1
    probs[mid] = 1.0
    cur_hom_r = (rare - mid) // 2
    cur_hom_c = n - mid - cur_hom_r
    h = mid
    while h >= 2:
        probs[h - 2] = probs[h] * h * (h - 1) / (4.0 * (cur_hom_r + 1) * (cur_hom_c + 1))
        h -= 2
        cur_hom_r += 1
        cur_hom_c += 1
    cur_hom_r = (rare - mid) // 2
    cur_hom_c = n - mid - cur_hom_r
    h = mid
    while h <= rare - 2:
        probs[h + 2] = probs[h] * 4.0 * cur_hom_r * cur_hom_c / ((h + 2.0) * (h + 1.0))
        h += 2
        cur_hom_r -= 1
        cur_hom_c -= 1
    total = probs.sum()
    observed = probs[het]
    return float(min(1.0, probs[probs <= observed * (1 + 1e-8)].sum() / total))


def variant_keep_mask(calls: np.ndarray, founders: np.ndarray, flt: VariantFilter) -> np.ndarray:
    """Boolean mask of the block's variants that pass ``flt``."""
    keep = np.ones(calls.shape[0], dtype=bool)
    if not flt.active:
        return keep
    if flt.geno is not None:
        keep &= (calls < 0).mean(axis=1) <= flt.geno
    counts = genotype_counts(calls, founders)
    called = counts.sum(axis=1)
    if flt.maf is not None:
        with np.errstate(invalid="ignore", divide="ignore"):
            alt = (counts[:, 1] + 2 * counts[:, 2]) / (2.0 * called)
        maf = np.minimum(alt, 1 - alt)
        keep &= np.nan_to_num(maf) >= flt.maf
    if flt.hwe is not None:
        for j in np.flatnonzero(keep):
            hom_ref, het, hom_alt = counts[j]
            keep[j] = hwe_exact_p(int(het), int(hom_ref), int(hom_alt)) >= flt.hwe
    return keep


def standardised(calls: np.ndarray) -> np.ndarray:
    """``(B, n)`` calls standardised per variant; missing calls and monomorphic rows 0."""
    present = calls >= 0
    g = np.where(present, calls, 0).astype(np.float64)
    called = present.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = g.sum(axis=1) / (2.0 * called)
        scale = np.sqrt(2.0 * p * (1.0 - p))
        z = (g - 2.0 * p[:, None]) / scale[:, None]
    z[~present] = 0.0
    z[~np.isfinite(z)] = 0.0
    return z


def principal_components(blocks: object, n_samples: int, n_pcs: int = 10) -> np.ndarray:
    """Leading ``n_pcs`` eigenvectors of the genetic relationship matrix.

    ``blocks`` yields ``(B, n_samples)`` int8 call blocks (-9 missing), e.g. the calls
    of common, pruned variants. Returns ``(n_samples, n_pcs)`` with unit-norm columns.
    """
    if n_pcs < 1 or n_pcs >= n_samples:
        raise UsageError(f"number of PCs must be within 1..{n_samples - 1}, got {n_pcs}")
    grm = np.zeros((n_samples, n_samples))
    used = 0
    for calls in blocks:  # type: ignore[attr-defined]
        z = standardised(np.asarray(calls))
        grm += z.T @ z
        used += z.shape[0]
    if used == 0:
        raise UsageError("no variants to compute principal components from")
    values, vectors = np.linalg.eigh(grm / used)
    order = np.argsort(values)[::-1][:n_pcs]
    pcs = vectors[:, order]
    # Sign convention: each PC's largest-magnitude loading positive (reproducible).
    signs = np.sign(pcs[np.abs(pcs).argmax(axis=0), np.arange(n_pcs)])
    return pcs * signs
