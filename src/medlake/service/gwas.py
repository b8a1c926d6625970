"""GWAS use cases: on PLINK files given on the command line (standalone mode, drops
into existing pipelines) and on the lake's registered genotypes with phenotypes taken
from the clinical data (lake mode, :mod:`medlake.service.gwas_lake`).

Each run writes, per phenotype, PLINK 2's ``--glm`` report, the same results as
Parquet, Manhattan and QQ plots (PNG and self-contained HTML) and returns a
:class:`GwasRun` summary (λGC, hits at P < 5e-8, files, timings).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from medlake.errors import InputError, UsageError
from medlake.log import get_logger
from medlake.omics.gwas.association import (
    BackendName,
    FirthMode,
    GlmOptions,
    run_glm,
    select_backend,
)
from medlake.omics.gwas.plink_io import GenotypeFile, align, read_sample_table
from medlake.omics.gwas.plots import GENOME_WIDE, genomic_inflation, plot_paths, write_plots
from medlake.omics.gwas.qc import VariantFilter
from medlake.omics.gwas.report import write_reports

log = get_logger(__name__)

Progress = Callable[[int, int], None]


@dataclass
class GwasRun:
    """What one phenotype's association run produced."""

    phenotype: str
    model: str
    samples: int
    variants: int
    lambda_gc: float
    hits: list[dict[str, object]]  # variants at P < 5e-8, smallest P first
    files: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0
    backend: str = "numpy"

    def as_dict(self) -> dict[str, object]:
        """JSON-ready summary."""
        return {
            "phenotype": self.phenotype,
            "model": self.model,
            "samples": self.samples,
            "variants": self.variants,
            "lambda_gc": self.lambda_gc,
            "hits": self.hits,
            "files": {k: str(v) for k, v in self.files.items()},
            "seconds": round(self.seconds, 3),
            "backend": self.backend,
        }


def binary_phenotype(values: np.ndarray, *, force: bool) -> np.ndarray | None:
    """PLINK 2's case/control coding to 0/1 (NaN missing), or None if quantitative.

    PLINK 2 reads a phenotype as case/control when every value is 1, 2, 0 or missing
    (1 control, 2 case, 0 missing). With ``force`` (``--logistic``), 0/1 coding is
    accepted too (0 control, 1 case); anything else is an error.
    """
    present = values[~np.isnan(values)]
    if present.size and np.isin(present, (0.0, 1.0, 2.0)).all():
        if force and np.isin(present, (0.0, 1.0)).all():
            return values.copy()
        out = np.where(values == 2, 1.0, np.where(values == 1, 0.0, np.nan))
        return out
    if force:
        raise InputError("--logistic needs a case/control phenotype coded 1/2 or 0/1")
    return None


def run_gwas_files(
    genotypes: Path,
    genotype_format: str,
    pheno: Path,
    out: Path,
    *,
    pheno_names: Sequence[str] = (),
    covar: Path | None = None,
    covar_names: Sequence[str] = (),
    logistic: bool = False,
    firth: FirthMode = "fallback",
    filters: VariantFilter | None = None,
    backend: BackendName = "auto",
    plots: bool = True,
    progress: Progress | None = None,
) -> list[GwasRun]:
    """Standalone GWAS on ``PREFIX.bed/.bim/.fam`` or ``PREFIX.pgen/.pvar/.psam``.

    One run per phenotype column of ``pheno`` (or those in ``pheno_names``), with the
    covariates of ``covar`` (or those in ``covar_names``). Writes
    ``OUT.PHENO.glm.linear`` (or ``.glm.logistic.hybrid``), ``OUT.PHENO.glm.parquet``
    and, with ``plots``, ``OUT.PHENO.manhattan.png/.html`` and ``OUT.PHENO.qq.png/.html``.

    ``progress(done, total)`` is called after each block of variants (``total`` counts
    every phenotype's pass over the file). An exception it raises (a cancelled job's
    :class:`~medlake.errors.JobCancelledError`) propagates, and the run leaves no output:
    reports are renamed into place only when complete, and the files of phenotypes
    already done are removed.
    """
    with GenotypeFile(genotypes, genotype_format) as geno:
        pheno_iid, phenos = read_sample_table(pheno, list(pheno_names) or None)
        if covar is not None:
            covar_iid, covars = read_sample_table(covar, list(covar_names) or None)
            matrix = (
                np.column_stack([align(geno.samples.iid, covar_iid, v) for v in covars.values()])
                if covars
                else np.zeros((len(geno.samples), 0))
            )
        elif covar_names:
            raise UsageError("--covar-name needs --covar")
        else:
            matrix = np.zeros((len(geno.samples), 0))
        runs: list[GwasRun] = []
        total = len(geno.variants) * len(phenos)
        try:
            for i, (name, raw) in enumerate(phenos.items()):
                values = align(geno.samples.iid, pheno_iid, raw)
                coded = binary_phenotype(values, force=logistic)
                model = "logistic" if coded is not None else "linear"
                options = GlmOptions(model=model, firth=firth, filters=filters or VariantFilter())
                shifted = (None if progress is None
                           else shifted_progress(progress, i * len(geno.variants), total))
                runs.append(
                    run_association(
                        geno,
                        name,
                        coded if coded is not None else values,
                        matrix,
                        options,
                        out,
                        backend=backend,
                        plots=plots,
                        progress=shifted,
                    )
                )
        except BaseException:  # stopped (cancelled, or an error): no output of this run stays
            for run in runs:
                _remove(run.files.values())
            raise
    return runs


def run_association(
    geno: GenotypeFile,
    name: str,
    phenotype: np.ndarray,
    covariates: np.ndarray,
    options: GlmOptions,
    out: Path,
    *,
    backend: BackendName = "auto",
    plots: bool = True,
    progress: Progress | None = None,
) -> GwasRun:
    """Run one phenotype through :func:`run_glm`, write its reports and plots."""
    start = time.perf_counter()
    chosen = select_backend(backend)
    kept: list[pa.RecordBatch] = []

    def batches() -> Iterator[pa.RecordBatch]:
        for batch in run_glm(geno, phenotype, covariates, options, chosen, progress):
            kept.append(batch.select(["chrom", "pos", "id", "p"]))
            yield batch

    files = write_reports(batches(), out, name, options)  # removes its own partial files
    summary = (
        pa.Table.from_batches(kept)
        if kept
        else pa.table(
            {
                "chrom": pa.array([], pa.string()),
                "pos": pa.array([], pa.int64()),
                "id": pa.array([], pa.string()),
                "p": pa.array([], pa.float64()),
            }
        )
    )
    if plots and summary.num_rows:
        plot_prefix = Path(f"{out}.{name}")
        try:
            files.update(write_plots(summary, plot_prefix, name))
        except BaseException:
            _remove([*files.values(), *plot_paths(plot_prefix)])
            raise
    p = summary.column("p").to_numpy(zero_copy_only=False)
    n_samples = int((~np.isnan(phenotype) & ~np.isnan(covariates).any(axis=1)).sum())
    run = GwasRun(
        phenotype=name,
        model=options.model,
        samples=n_samples,
        variants=summary.num_rows,
        lambda_gc=genomic_inflation(p),
        hits=_hits(files["parquet"]),
        files=files,
        seconds=time.perf_counter() - start,
        backend=f"{chosen.name}:{chosen.device}",
    )
    log.info(
        "gwas %s: %d variants, λGC %.3f, %d hits", name, run.variants, run.lambda_gc, len(run.hits)
    )
    return run


def shifted_progress(progress: Progress, offset: int, total: int) -> Progress:
    """One phenotype's ``progress(done, variants)`` as the whole run's ``(done, total)``."""

    def report(done: int, _variants: int) -> None:
        progress(offset + done, total)

    return report


def _remove(paths: Iterable[Path]) -> None:
    for path in paths:
        Path(path).unlink(missing_ok=True)


def _hits(parquet: Path) -> list[dict[str, object]]:
    """Variants at genome-wide significance from the written Parquet, smallest P first."""
    table = pq.read_table(parquet, columns=["chrom", "pos", "id", "a1", "beta", "se", "p"])
    p = table.column("p").to_numpy(zero_copy_only=False)
    order = [i for i in np.argsort(p) if p[i] < GENOME_WIDE]
    return [{k: table.column(k)[int(i)].as_py() for k in table.column_names} for i in order]
