"""The omics part of the synthetic hospital: a biobank's genotype and RNA-seq files.

The clinical generator decides who gave samples and hands them over, chunk by chunk, as
:class:`OmicsSubject` records to :class:`OmicsWriter`; on :meth:`OmicsWriter.finish` the
writer produces what a hospital biobank would deliver, under ``out_dir``:

``omics/genotypes.bed/.bim/.fam``
    PLINK 1 binary, SNP-major, ``.bim`` allele 1 = ALT (so PLINK's and bed-reader's
    default A1 count is the ALT dosage), FID = IID = genotype sample id, sex 1/2,
    phenotype -9 (phenotypes come from the clinical lake). Chromosomes 1–22 in order,
    increasing positions; variant ids ``chrom:pos:ref:alt``, the planted causal variants
    (:data:`~medlake.synth.genetics.PLANTED_VARIANTS`) under their rsIDs, carrying exactly
    the causal genotypes the clinical side drew (apart from missing calls).
``omics/rnaseq_counts.tsv.gz``
    Raw counts, one row per gene and one column per RNA sample (featureCounts / DESeq2
    orientation), first column ``gene_id``. Gzip without timestamp or file name. Only
    this one matrix format is written: a TSV is what sequencing cores deliver and what
    the lake's ingest must read; converting to Parquet/AnnData is the ingest's job.
``omics/genes.tsv``
    ``gene_id, symbol, chrom, start, biotype``. **Synthetic**: ids are Ensembl-style
    ``ENSG9…`` (a range Ensembl has not assigned) and symbols start with ``SYN``.
``omics/rnaseq_samples.tsv``
    ``sample_id, batch, collection_date``: sequencing batch of 96 in arrival order.
``omics/samples.csv``
    The biobank manifest linking samples to source patients: ``sample_id, assay,
    source_system, source_patient_id, collected_date, specimen_type, file_name``.
``truth/planted_variants.csv``, ``truth/de_genes.csv``, ``truth/omics_samples.csv``
    What was planted, for tests and demos only (never ingested).

Models. Genotypes: ancestral ALT frequency from a mixture of common (MAF 0.01–0.5,
Beta-shaped towards rare) and rare (MAF 0.001–0.01, log-uniform) variants, ALT minor in
80 % of variants; population frequencies by Balding–Nichols (Balding & Nichols 1995,
``Beta(p(1-F)/F, (1-p)(1-F)/F)``, default F = 0.015) so PCs separate the populations;
per-variant missing-call rate exponential with mean 0.4 % plus 2 % of variants at 2–10 %
(≈0.5 % of calls overall); 0.3 % of variants with excess homozygosity (inbreeding-like
F = 0.3–0.8, out of Hardy–Weinberg). Counts: negative binomial (gamma–Poisson) with gene
means log-normal, dispersion following DESeq2's parametric trend ``α = a1/μ + a0``
(Love et al. 2014) times log-normal scatter, per-sample size factors, small per-gene
batch effects, and 5 % of (expressed, base mean ≥ 5) genes differentially expressed
between T2D cases and controls with |log2 fold change| in 0.5–2.

Memory and speed. Genotypes are drawn and written in blocks of ``block_variants``
variants: at most ``n_samples × block_variants`` calls exist at once (plus per-variant
metadata of one chromosome), whatever ``n_variants`` is. Counts are drawn in tiles of
512 genes. Per subject only small metadata is kept between :meth:`OmicsWriter.add`
calls. Caps (``max_genotyped`` = 20,000, ``max_rnaseq`` = 2,000) keep the 1M-patient run
to a biobank-sized subset: samples beyond a cap are dropped first-come-first-kept (in
``add`` order, so deterministically) and counted in the summary.

Determinism. Every random quantity comes from its own stream seeded by ``(seed, stream,
chromosome or tile)`` and is drawn in variant order, so output bytes depend on the seed
and the subjects only — not on how subjects were chunked nor on ``block_variants``.

Why our own BED writer. bed-reader's ``to_bed(path, val)`` takes the whole
samples × variants matrix (verified in bed-reader 1.1.0: it converts ``val`` to one
ndarray before encoding). Its ``create_bed`` does stream, one variant per ``write``
call, but wants every variant's ``.bim`` properties at construction and is a dev-only
dependency of medlake. Packing 2-bit codes for a whole block is a few numpy lines, needs
no extra runtime dependency and writes ``.bim`` alongside; the tests read the files back
with bed-reader to check them.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medlake.errors import UsageError
from medlake.log import get_logger
from medlake.synth.genetics import GRCH38_AUTOSOME_LENGTHS, PLANTED_VARIANTS

log = get_logger(__name__)

MISSING_CALL = -127  # bed-reader's int8 missing value
GENOTYPE_SPECIMEN = "whole blood (EDTA)"
RNA_SPECIMEN = "whole blood (PAXgene)"
RNA_BATCH_SIZE = 96
CALLS_PER_BLOCK = 1 << 22  # default genotype block: ~4M calls, ~50 MB of temporaries
_GENE_TILE = 512
_BED_MAGIC = bytes((0x6C, 0x1B, 0x01))  # PLINK 1 .bed, SNP-major
# .bed 2-bit codes by ALT count (A1 = ALT): 2 -> 00, 1 -> 10, 0 -> 11, missing -> 01
_BED_CODE = np.zeros(256, dtype=np.uint8)
_BED_CODE[[0, 1, 2, MISSING_CALL & 0xFF]] = [0b11, 0b10, 0b00, 0b01]
_ALLELE_PAIRS = ("AG", "GA", "CT", "TC", "AC", "CA", "AT", "TA", "GC", "CG", "GT", "TG")
_ALLELE_PROBS = np.array([1 / 6] * 4 + [1 / 24] * 8)  # transitions twice transversions
_GENE_FAMILIES = ("KRT", "SLC", "ZNF", "TMEM", "CCDC", "KIF", "ABC", "RPL", "FAM", "CD")
_STREAMS = {"layout": 1, "variants": 2, "calls": 3, "genes": 4, "counts": 5, "dates": 6}


def genotype_sample_id(index: int) -> str:
    """Genotyping sample id, e.g. ``GS-000123`` (not a patient id)."""
    return f"GS-{index:06d}"


def rna_sample_id(year: int, index: int) -> str:
    """RNA-seq sample id, e.g. ``RNA-2023-000456``; the year sets the collection year."""
    return f"RNA-{year:04d}-{index:06d}"


def _rng(seed: int, stream: str, index: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, _STREAMS[stream], index])


@dataclass
class OmicsSubject:
    """One person who gave a genotyping and/or an RNA-seq sample.

    ``population`` is the ancestry group (0..K-1) and ``causal_genotypes`` the person's
    ALT counts of :data:`~medlake.synth.genetics.PLANTED_VARIANTS`. ``collected_date``
    (optional) fixes the collection date of both samples; otherwise one is drawn.
    """

    person_key: str
    genotype_sample_id: str | None
    rna_sample_id: str | None
    sex: str
    birth_year: int
    population: int
    has_t2d: bool
    causal_genotypes: np.ndarray
    source_system: str
    source_patient_id: str
    collected_date: dt.date | None = None


@dataclass(frozen=True)
class OmicsSummary:
    """What :meth:`OmicsWriter.finish` wrote."""

    n_genotyped: int
    n_rnaseq: int
    n_variants: int
    n_genes: int
    n_de_genes: int
    dropped_genotyped: int
    dropped_rnaseq: int
    seconds: float
    paths: dict[str, Path] = field(default_factory=dict)


@dataclass(frozen=True)
class GenotypeBlock:
    """Consecutive variants of one chromosome; ``calls`` is variant-major ``(B, n)`` int8
    ALT counts with ``MISSING_CALL`` for missing, ``planted`` the index into
    ``PLANTED_VARIANTS`` or -1, ``pop_alt_freq`` ``(K, B)`` the populations' frequencies."""

    chrom: str
    variant_ids: list[str]
    pos: np.ndarray
    ref: list[str]
    alt: list[str]
    pop_alt_freq: np.ndarray
    missing_rate: np.ndarray
    hwe_f: np.ndarray
    planted: np.ndarray
    calls: np.ndarray


def variants_per_chromosome(n_background: int) -> np.ndarray:
    """Split ``n_background`` variants over chromosomes 1–22 by length (largest remainder)."""
    lengths = np.array(GRCH38_AUTOSOME_LENGTHS, dtype=np.float64)
    quota = n_background * lengths / lengths.sum()
    counts = np.floor(quota).astype(np.int64)
    order = np.argsort(-(quota - counts), kind="stable")
    counts[order[: n_background - counts.sum()]] += 1
    return counts


class GenotypeSimulator:
    """Draws the genotype matrix of the genotyped subjects, block by block.

    Parameters
    ----------
    seed : int
        Seed of every genotype stream.
    populations : numpy.ndarray
        ``(n,)`` population of each sample, in ``0..n_populations-1``.
    causal_genotypes : numpy.ndarray
        ``(n, len(PLANTED_VARIANTS))`` ALT counts planted at the causal variants.
    n_variants : int
        Total variants, planted ones included.
    n_populations : int
        Number of populations K.
    fst : float
        Balding–Nichols F of each population against the ancestral frequencies.
    block_variants : int or None
        Variants per block: bounds memory to ``n × block_variants`` calls. ``None``
        picks the largest power of two with at most ``CALLS_PER_BLOCK`` calls (8–4096).
    """

    def __init__(
        self,
        seed: int,
        populations: np.ndarray,
        causal_genotypes: np.ndarray,
        *,
        n_variants: int,
        n_populations: int = 3,
        fst: float = 0.015,
        block_variants: int | None = None,
    ) -> None:
        if block_variants is None:
            fit = CALLS_PER_BLOCK // max(np.asarray(populations).size, 1)
            block_variants = int(min(4096, max(8, 2 ** int(np.log2(max(fit, 1))))))
        if n_variants < len(PLANTED_VARIANTS):
            raise UsageError(f"n_variants must be >= {len(PLANTED_VARIANTS)}, got {n_variants}")
        if block_variants < 1 or not 0.0 < fst < 1.0:
            raise UsageError("block_variants must be >= 1 and fst in (0, 1)")
        self.seed = seed
        self.populations = np.asarray(populations, dtype=np.int64)
        self.causal = np.asarray(causal_genotypes, dtype=np.int8)
        self.n_variants = n_variants
        self.n_populations = n_populations
        self.fst = fst
        self.block_variants = block_variants
        self.per_chrom = variants_per_chromosome(n_variants - len(PLANTED_VARIANTS))
        # calls are drawn with samples grouped by population, then put back in file order
        by_pop = np.argsort(self.populations, kind="stable")
        self._unsort = np.argsort(by_pop, kind="stable")
        edges = np.searchsorted(self.populations[by_pop], np.arange(n_populations + 1))
        self._pop_bounds = list(zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True))

    def _chromosome_plan(self, chrom: int) -> dict[str, np.ndarray]:
        """Per-variant metadata of one chromosome (background and planted), sorted by pos."""
        m = int(self.per_chrom[chrom - 1])
        planted = [i for i, v in enumerate(PLANTED_VARIANTS) if v.chrom == str(chrom)]
        planted_pos = {PLANTED_VARIANTS[i].pos for i in planted}
        layout = _rng(self.seed, "layout", chrom)
        length = GRCH38_AUTOSOME_LENGTHS[chrom - 1]
        candidates = layout.choice(length, m + len(planted), replace=False) + 1
        bg_pos = candidates[~np.isin(candidates, list(planted_pos))][:m]

        rng = _rng(self.seed, "variants", chrom)
        rare = rng.random(m) < 0.2
        maf = np.where(
            rare, 10 ** rng.uniform(-3, -2, m), 0.01 + 0.49 * rng.beta(0.9, 1.6, m)
        )
        p = np.where(rng.random(m) < 0.8, maf, 1.0 - maf)
        a = p * (1 - self.fst) / self.fst
        b = (1 - p) * (1 - self.fst) / self.fst
        pop_freq = rng.beta(a, b, size=(self.n_populations, m))
        missing = np.minimum(rng.exponential(0.004, m), 0.2)
        high = rng.random(m) < 0.02
        missing = np.where(high, rng.uniform(0.02, 0.10, m), missing)
        hwe_f = np.where(rng.random(m) < 0.003, rng.uniform(0.3, 0.8, m), 0.0)
        pair = np.searchsorted(np.cumsum(_ALLELE_PROBS), rng.random(m) * _ALLELE_PROBS.sum())
        pairs = np.array(_ALLELE_PAIRS)[np.minimum(pair, len(_ALLELE_PAIRS) - 1)]

        pv = [PLANTED_VARIANTS[i] for i in planted]
        pos = np.concatenate([bg_pos, np.array([v.pos for v in pv], dtype=np.int64)])
        order = np.argsort(pos, kind="stable")
        planted_freq = np.array([[v.alt_freq for v in pv]] * self.n_populations)
        return {
            "pos": pos[order].astype(np.int64),
            "ref": np.array([s[0] for s in pairs] + [v.ref for v in pv], dtype="U1")[order],
            "alt": np.array([s[1] for s in pairs] + [v.alt for v in pv], dtype="U1")[order],
            "pop_freq": np.hstack([pop_freq, planted_freq.reshape(self.n_populations, -1)])[
                :, order
            ],
            "missing": np.concatenate([missing, np.full(len(pv), 0.004)])[order],
            "hwe_f": np.concatenate([hwe_f, np.zeros(len(pv))])[order],
            "planted": np.array([-1] * m + planted, dtype=np.int64)[order],
        }

    def blocks(self) -> Iterator[GenotypeBlock]:
        """Yield the genotype blocks in file order (chromosome, then position)."""
        n = self.populations.size
        for chrom in range(1, len(GRCH38_AUTOSOME_LENGTHS) + 1):
            plan = self._chromosome_plan(chrom)
            calls_rng = _rng(self.seed, "calls", chrom)
            for start in range(0, plan["pos"].size, self.block_variants):
                sl = slice(start, start + self.block_variants)
                block = {key: value[..., sl] for key, value in plan.items()}
                calls = self._draw_calls(calls_rng, block, n)
                ref, alt, pos = block["ref"].tolist(), block["alt"].tolist(), block["pos"]
                ids = [
                    PLANTED_VARIANTS[k].variant_id if k >= 0 else f"{chrom}:{q}:{r}:{a}"
                    for k, q, r, a in zip(block["planted"], pos.tolist(), ref, alt, strict=True)
                ]
                yield GenotypeBlock(
                    str(chrom), ids, pos, ref, alt, block["pop_freq"], block["missing"],
                    block["hwe_f"], block["planted"], calls,
                )  # fmt: skip

    def _draw_calls(
        self, rng: np.random.Generator, block: dict[str, np.ndarray], n: int
    ) -> np.ndarray:
        """One uniform per call: below the missing rate it is missing, above it the
        genotype by inverse CDF of (HWE-deviating) genotype probabilities."""
        b = block["pos"].size
        u = rng.random((b, n), dtype=np.float32)  # columns in population-sorted order
        p, f, r = block["pop_freq"], block["hwe_f"][None, :], block["missing"][None, :]
        het = 2 * p * (1 - p)
        p0 = (1 - p) ** 2 + f * het / 2
        p1 = het * (1 - f)
        t0 = (r + (1 - r) * p0).astype(np.float32).T  # (B, K)
        t1 = (r + (1 - r) * (p0 + p1)).astype(np.float32).T
        by_pop = np.empty((b, n), dtype=np.int8)
        for k, (lo, hi) in enumerate(self._pop_bounds):
            part = u[:, lo:hi]
            np.greater_equal(part, t0[:, k : k + 1], out=by_pop[:, lo:hi].view(bool))
            by_pop[:, lo:hi] += part >= t1[:, k : k + 1]
        by_pop[u < r.T.astype(np.float32)] = MISSING_CALL
        calls = by_pop[:, self._unsort]
        planted = np.flatnonzero(block["planted"] >= 0)
        if planted.size:
            observed = calls[planted] != MISSING_CALL
            causal = self.causal[:, block["planted"][planted]].T
            calls[planted] = np.where(observed, causal, MISSING_CALL)
        return calls


def pack_bed_block(calls: np.ndarray) -> bytes:
    """Encode variant-major ``(B, n)`` ALT counts as PLINK 1 SNP-major bytes.

    Four samples per byte, first sample in the lowest two bits, rows padded with zero
    bits to whole bytes (PLINK 1.9 file format, ``.bed``).
    """
    b, n = calls.shape
    n_bytes = -(-n // 4)
    codes = np.zeros((b, n_bytes * 4), dtype=np.uint8)
    codes[:, :n] = _BED_CODE[calls.view(np.uint8)]
    c = codes.reshape(b, n_bytes, 4)
    return (c[..., 0] | (c[..., 1] << 2) | (c[..., 2] << 4) | (c[..., 3] << 6)).tobytes()


@dataclass
class _Kept:
    """The small per-subject record kept between ``add`` calls."""

    sample_id: str
    person_key: str
    sex: str
    population: int
    has_t2d: bool
    causal: np.ndarray
    source_system: str
    source_patient_id: str
    collected: dt.date


class OmicsWriter:
    """Collects omics subjects chunk by chunk and writes the biobank files on ``finish``.

    Parameters
    ----------
    out_dir : pathlib.Path
        Root of the synthetic hospital's output; ``omics/`` and ``truth/`` go below it.
    seed : int
        Seed of every omics stream (non-negative).
    n_variants, n_genes : int
        Size of the genotype panel (planted variants included) and of the gene set.
    n_populations, fst : int, float
        Populations the subjects' ``population`` refers to and their differentiation.
    max_genotyped, max_rnaseq : int
        Caps on written samples; later samples beyond a cap are dropped.
    block_variants : int or None
        Variants per genotype block (memory: ``n_genotyped × block_variants`` calls);
        ``None`` sizes blocks to about ``CALLS_PER_BLOCK`` calls. Output does not depend
        on it.
    de_fraction : float
        Fraction of genes planted as differentially expressed in T2D.
    """

    def __init__(
        self,
        out_dir: Path,
        seed: int,
        *,
        n_variants: int = 20_000,
        n_genes: int = 5_000,
        n_populations: int = 3,
        fst: float = 0.015,
        max_genotyped: int = 20_000,
        max_rnaseq: int = 2_000,
        block_variants: int | None = None,
        de_fraction: float = 0.05,
    ) -> None:
        if seed < 0 or n_genes < 1:
            raise UsageError("seed must be >= 0 and n_genes >= 1")
        self.out_dir = Path(out_dir)
        self.seed = seed
        self.n_variants = n_variants
        self.n_genes = n_genes
        self.n_populations = n_populations
        self.fst = fst
        self.max_genotyped = max_genotyped
        self.max_rnaseq = max_rnaseq
        self.block_variants = block_variants
        self.de_fraction = de_fraction
        self._genotyped: list[_Kept] = []
        self._rnaseq: list[_Kept] = []
        self._seen: set[str] = set()
        self._dropped = {"genotype": 0, "rnaseq": 0}
        self._dates = _rng(seed, "dates")

    def add(self, subjects: Sequence[OmicsSubject]) -> None:
        """Take one chunk of subjects (in order); keeps only small metadata."""
        for s in subjects:
            if not 0 <= s.population < self.n_populations:
                raise UsageError(f"{s.person_key}: population {s.population} out of range")
            if s.sex not in ("M", "F"):
                raise UsageError(f"{s.person_key}: sex must be 'M' or 'F', got {s.sex!r}")
            causal = np.asarray(s.causal_genotypes, dtype=np.int8)
            if causal.shape != (len(PLANTED_VARIANTS),):
                raise UsageError(f"{s.person_key}: causal genotypes of shape {causal.shape}")
            drawn = self._draw_date(s.birth_year, None)  # one draw per subject, always
            for assay, sample_id, kept, cap in (
                ("genotype", s.genotype_sample_id, self._genotyped, self.max_genotyped),
                ("rnaseq", s.rna_sample_id, self._rnaseq, self.max_rnaseq),
            ):
                if sample_id is None:
                    continue
                if sample_id in self._seen:
                    raise UsageError(f"duplicate omics sample id {sample_id}")
                self._seen.add(sample_id)
                if len(kept) >= cap:
                    self._dropped[assay] += 1
                    continue
                year = re.match(r"RNA-(\d{4})-", sample_id)
                collected = s.collected_date or (
                    self._draw_date(s.birth_year, int(year.group(1))) if year else drawn
                )
                kept.append(_Kept(sample_id, s.person_key, s.sex, s.population, s.has_t2d,
                                  causal, s.source_system, s.source_patient_id, collected))

    def _draw_date(self, birth_year: int, year: int | None) -> dt.date:
        """A collection date in 2018–2024 (or in ``year``), not before the first birthday."""
        first = dt.date(year or 2018, 1, 1)
        last = dt.date(year or 2024, 12, 31)
        first = min(max(first, dt.date(min(birth_year + 1, 9999), 1, 1)), last)
        days = (last - first).days + 1
        return first + dt.timedelta(days=int(self._dates.random() * days))

    def finish(self) -> OmicsSummary:
        """Write every omics and truth file and return what was written."""
        started = time.perf_counter()
        omics, truth = self.out_dir / "omics", self.out_dir / "truth"
        omics.mkdir(parents=True, exist_ok=True)
        truth.mkdir(parents=True, exist_ok=True)
        paths = {
            "bed": omics / "genotypes.bed",
            "bim": omics / "genotypes.bim",
            "fam": omics / "genotypes.fam",
            "counts": omics / "rnaseq_counts.tsv.gz",
            "genes": omics / "genes.tsv",
            "rnaseq_samples": omics / "rnaseq_samples.tsv",
            "manifest": omics / "samples.csv",
            "truth_variants": truth / "planted_variants.csv",
            "truth_de_genes": truth / "de_genes.csv",
            "truth_samples": truth / "omics_samples.csv",
        }
        self._write_genotypes(paths)
        n_de = self._write_rnaseq(paths)
        self._write_manifests(paths)
        seconds = time.perf_counter() - started
        log.info("omics: %d genotyped x %d variants, %d RNA-seq x %d genes in %.1f s",
                 len(self._genotyped), self.n_variants, len(self._rnaseq), self.n_genes,
                 seconds)
        return OmicsSummary(len(self._genotyped), len(self._rnaseq), self.n_variants,
                            self.n_genes, n_de, self._dropped["genotype"],
                            self._dropped["rnaseq"], seconds, paths)

    def genotype_simulator(self) -> GenotypeSimulator:
        """The simulator of the genotype matrix of the subjects kept so far."""
        k = len(PLANTED_VARIANTS)
        causal = np.array([g.causal for g in self._genotyped], dtype=np.int8).reshape(-1, k)
        return GenotypeSimulator(
            self.seed, np.array([g.population for g in self._genotyped], dtype=np.int64),
            causal, n_variants=self.n_variants, n_populations=self.n_populations,
            fst=self.fst, block_variants=self.block_variants,
        )  # fmt: skip

    def _write_genotypes(self, paths: dict[str, Path]) -> None:
        with paths["fam"].open("w", encoding="ascii", newline="\n") as fam:
            for g in self._genotyped:
                sex = 1 if g.sex == "M" else 2
                fam.write(f"{g.sample_id}\t{g.sample_id}\t0\t0\t{sex}\t-9\n")
        with paths["bed"].open("wb") as bed, paths["bim"].open("w", encoding="ascii") as bim:
            bed.write(_BED_MAGIC)
            for block in self.genotype_simulator().blocks():
                bed.write(pack_bed_block(block.calls))
                bim.writelines(
                    f"{block.chrom}\t{vid}\t0\t{pos}\t{alt}\t{ref}\n"
                    for vid, pos, alt, ref in zip(
                        block.variant_ids, block.pos.tolist(), block.alt, block.ref,
                        strict=True,
                    )
                )

    def _gene_model(self) -> dict[str, np.ndarray]:
        """Per-gene base mean, dispersion, planted log2 fold change and annotation."""
        g = self.n_genes
        rng = _rng(self.seed, "genes")
        base_mean = rng.lognormal(np.log(60.0), 1.8, g)
        dispersion = (1.5 / base_mean + 0.05) * rng.lognormal(0.0, 0.5, g)
        lfc = np.zeros(g)
        eligible = np.flatnonzero(base_mean >= 5.0)
        n_de = min(round(self.de_fraction * g), eligible.size)
        de = np.sort(rng.permutation(eligible)[:n_de])
        lfc[de] = rng.choice([-1.0, 1.0], n_de) * rng.uniform(0.5, 2.0, n_de)
        lengths = np.array(GRCH38_AUTOSOME_LENGTHS, dtype=np.float64)
        chrom = rng.choice(len(lengths), g, p=lengths / lengths.sum()) + 1
        start = (rng.random(g) * lengths[chrom - 1]).astype(np.int64) + 1
        family = rng.integers(0, len(_GENE_FAMILIES), g)
        return {"base_mean": base_mean, "dispersion": dispersion, "lfc": lfc, "de": de,
                "chrom": chrom, "start": start, "family": family}

    def _write_rnaseq(self, paths: dict[str, Path]) -> int:
        model = self._gene_model()
        gene_ids = [f"ENSG9{i + 1:010d}" for i in range(self.n_genes)]
        with paths["genes"].open("w", encoding="ascii", newline="\n") as out:
            out.write("gene_id\tsymbol\tchrom\tstart\tbiotype\n")
            for i, gid in enumerate(gene_ids):
                sym = f"SYN{_GENE_FAMILIES[model['family'][i]]}{i + 1}"
                out.write(f"{gid}\t{sym}\t{model['chrom'][i]}\t{model['start'][i]}"
                          "\tprotein_coding\n")
        with paths["truth_de_genes"].open("w", encoding="ascii", newline="\n") as out:
            out.write("gene_id,log2_fold_change,base_mean\n")
            for i in model["de"]:
                out.write(f"{gene_ids[i]},{model['lfc'][i]:.4f},{model['base_mean'][i]:.4f}\n")

        n = len(self._rnaseq)
        batch = np.arange(n) // RNA_BATCH_SIZE
        with paths["rnaseq_samples"].open("w", encoding="ascii", newline="\n") as out:
            out.write("sample_id\tbatch\tcollection_date\n")
            for s, b in zip(self._rnaseq, batch.tolist(), strict=True):
                out.write(f"{s.sample_id}\tRB{b + 1:03d}\t{s.collected.isoformat()}\n")
        sample_rng = _rng(self.seed, "counts", 0)
        size_factor = sample_rng.lognormal(0.0, 0.3, n)
        case = np.array([s.has_t2d for s in self._rnaseq], dtype=np.float64)
        n_batches = int(batch.max()) + 1 if n else 0
        with paths["counts"].open("wb") as raw, gzip.GzipFile(
            filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=1
        ) as gz:
            gz.write(("\t".join(["gene_id", *(s.sample_id for s in self._rnaseq)]) + "\n")
                     .encode("ascii"))
            for tile, start in enumerate(range(0, self.n_genes, _GENE_TILE)):
                rng = _rng(self.seed, "counts", tile + 1)
                sl = slice(start, start + _GENE_TILE)
                batch_lfc = rng.normal(0.0, 0.15, (model["lfc"][sl].size, n_batches))
                log2_mu = (np.log2(model["base_mean"][sl])[:, None]
                           + model["lfc"][sl][:, None] * case[None, :]
                           + batch_lfc[:, batch])
                mu = np.exp2(log2_mu) * size_factor[None, :]
                inv_alpha = 1.0 / model["dispersion"][sl][:, None]
                counts = rng.negative_binomial(inv_alpha, inv_alpha / (inv_alpha + mu))
                gz.write("".join(
                    gid + "\t" + "\t".join(map(str, row)) + "\n"
                    for gid, row in zip(gene_ids[sl], counts.tolist(), strict=True)
                ).encode("ascii"))
        return int(model["de"].size)

    def _write_manifests(self, paths: dict[str, Path]) -> None:
        with paths["truth_variants"].open("w", encoding="ascii", newline="") as out:
            w = csv.writer(out, lineterminator="\n")
            w.writerow(["variant_id", "chrom", "pos", "ref", "alt", "trait", "effect",
                        "alt_freq"])
            for v in PLANTED_VARIANTS:
                w.writerow([v.variant_id, v.chrom, v.pos, v.ref, v.alt, v.trait,
                            f"{v.effect:.6f}", v.alt_freq])
        rows = [("genotype", s) for s in self._genotyped] + [("rnaseq", s) for s in self._rnaseq]
        with (
            paths["manifest"].open("w", encoding="utf-8", newline="") as manifest,
            paths["truth_samples"].open("w", encoding="utf-8", newline="") as truth,
        ):
            m = csv.writer(manifest, lineterminator="\n")
            t = csv.writer(truth, lineterminator="\n")
            m.writerow(["sample_id", "assay", "source_system", "source_patient_id",
                        "collected_date", "specimen_type", "file_name"])
            t.writerow(["sample_id", "assay", "person_key", "population"])
            for assay, s in rows:
                specimen, file_name = (
                    (GENOTYPE_SPECIMEN, paths["bed"].name) if assay == "genotype"
                    else (RNA_SPECIMEN, paths["counts"].name)
                )  # fmt: skip
                m.writerow([s.sample_id, assay, s.source_system, s.source_patient_id,
                            s.collected.isoformat(), specimen, file_name])
                t.writerow([s.sample_id, assay, s.person_key, s.population])
