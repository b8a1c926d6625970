"""Planted causal variants: the genetic truth the synthetic hospital is built on.

The clinical generator draws causal genotypes for every synthetic person with
:func:`draw_causal_genotypes` and adds :func:`t2d_logit_shift` to the person's type 2
diabetes log-odds and :func:`ldl_shift_mmol` to their LDL cholesterol results; the
omics writer (:mod:`medlake.synth.omics`) writes the very same genotypes into the PLINK
file of the genotyped subset. A GWAS run in the lake on cohort-defined phenotypes must
then find these variants again, which is what makes the demo an end-to-end test.

Everything here is **synthetic**: the rsIDs (``rs9907…``) look like dbSNP identifiers
and the positions lie on GRCh38 chromosomes near loci known for the traits, but the
identifiers, alleles, frequencies and effects are invented and say nothing about real
biology.

Effect sizes are chosen so that ~1,000 genotyped people (the demo: 5,000 patients,
~20 % genotyped) find the LDL variants at genome-wide significance (p < 5e-8; the
weakest explains ~7 % of LDL variance when LDL's SD is ~0.9 mmol/L, p ~1e-13 in
simulation) and the T2D variants at least at suggestive significance (odds ratios
1.8–2.5 per allele; at ~10 % prevalence p ~1e-3 to 1e-12 on 1,000 people).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from medlake.errors import UsageError

Trait = Literal["t2d", "ldl"]

#: GRCh38 primary assembly lengths of chromosomes 1–22, in base pairs.
GRCH38_AUTOSOME_LENGTHS: tuple[int, ...] = (
    248_956_422, 242_193_529, 198_295_559, 190_214_555, 181_538_259, 170_805_979,
    159_345_973, 145_138_636, 138_394_717, 133_797_422, 135_086_622, 133_275_309,
    114_364_328, 107_043_718, 101_991_189, 90_338_345, 83_257_441, 80_373_285,
    58_617_616, 64_444_167, 46_709_983, 50_818_468,
)  # fmt: skip


@dataclass(frozen=True)
class PlantedVariant:
    """One causal biallelic SNP planted in the synthetic population.

    Attributes
    ----------
    variant_id : str
        Synthetic rsID (looks like dbSNP's, is not).
    chrom : str
        Chromosome, ``"1"`` … ``"22"``.
    pos : int
        1-based position on a GRCh38-like chromosome.
    ref, alt : str
        Reference and alternative allele; genotypes count ``alt``.
    alt_freq : float
        Population frequency of the alternative allele.
    trait : {"t2d", "ldl"}
        The trait the variant acts on.
    effect : float
        Per alternative allele: log odds ratio for ``"t2d"``, mmol/L for ``"ldl"``.
    """

    variant_id: str
    chrom: str
    pos: int
    ref: str
    alt: str
    alt_freq: float
    trait: Trait
    effect: float


#: The planted variants, in the column order of every causal genotype matrix.
PLANTED_VARIANTS: tuple[PlantedVariant, ...] = (
    PlantedVariant("rs990710001", "10", 114_210_455, "C", "T", 0.30, "t2d", math.log(2.5)),
    PlantedVariant("rs990710002", "6", 20_688_121, "A", "G", 0.25, "t2d", math.log(2.2)),
    PlantedVariant("rs990710003", "16", 53_786_615, "G", "A", 0.35, "t2d", math.log(1.8)),
    PlantedVariant("rs990720001", "19", 44_912_301, "T", "C", 0.30, "ldl", 0.50),
    PlantedVariant("rs990720002", "1", 55_039_974, "G", "T", 0.40, "ldl", 0.40),
    PlantedVariant("rs990720003", "2", 21_001_429, "C", "T", 0.35, "ldl", 0.35),
)


def draw_causal_genotypes(rng: np.random.Generator, n: int) -> np.ndarray:
    """Draw alternative-allele counts of the planted variants for ``n`` people.

    Genotypes are in Hardy–Weinberg equilibrium: each of the two alleles is ``alt``
    independently with probability ``alt_freq``.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness (the caller's stream, so the clinical side stays in control
        of reproducibility).
    n : int
        Number of people.

    Returns
    -------
    numpy.ndarray
        ``(n, len(PLANTED_VARIANTS))`` int8 array of 0, 1 or 2.
    """
    if n < 0:
        raise UsageError(f"number of people must be >= 0, got {n}")
    freqs = np.array([v.alt_freq for v in PLANTED_VARIANTS])
    return rng.binomial(2, freqs, size=(n, freqs.size)).astype(np.int8)


def _trait_shift(genotypes: np.ndarray, trait: Trait) -> np.ndarray:
    """Sum of per-allele effects of one trait's variants, centred at the mean dosage 2p."""
    g = np.asarray(genotypes)
    if g.ndim != 2 or g.shape[1] != len(PLANTED_VARIANTS):
        raise UsageError(
            f"causal genotypes must have shape (n, {len(PLANTED_VARIANTS)}), got {g.shape}"
        )
    mask = np.array([v.trait == trait for v in PLANTED_VARIANTS])
    effects = np.array([v.effect for v in PLANTED_VARIANTS])[mask]
    expected = 2.0 * np.array([v.alt_freq for v in PLANTED_VARIANTS])[mask]
    return (g[:, mask].astype(np.float64) - expected) @ effects


def t2d_logit_shift(genotypes: np.ndarray) -> np.ndarray:
    """Genetic shift of each person's type 2 diabetes log-odds.

    ``sum_j beta_j * (g_j - 2 p_j)`` over the T2D variants: centring at the expected
    dosage ``2p`` keeps the population's prevalence roughly where the clinical model
    puts it, while the odds ratio per allele stays ``exp(beta_j)``.

    Parameters
    ----------
    genotypes : numpy.ndarray
        ``(n, len(PLANTED_VARIANTS))`` alternative-allele counts.

    Returns
    -------
    numpy.ndarray
        ``(n,)`` float64 shift on the log-odds scale.
    """
    return _trait_shift(genotypes, "t2d")


def ldl_shift_mmol(genotypes: np.ndarray) -> np.ndarray:
    """Genetic shift of each person's LDL cholesterol, in mmol/L.

    ``sum_j beta_j * (g_j - 2 p_j)`` over the LDL variants, so the population mean LDL
    is unchanged and each alternative allele adds ``beta_j`` mmol/L.

    Parameters
    ----------
    genotypes : numpy.ndarray
        ``(n, len(PLANTED_VARIANTS))`` alternative-allele counts.

    Returns
    -------
    numpy.ndarray
        ``(n,)`` float64 shift in mmol/L.
    """
    return _trait_shift(genotypes, "ldl")
