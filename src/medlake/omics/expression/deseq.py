"""Differential expression with PyDESeq2: the design, the fit, and the results table.

:func:`run_deseq` runs DESeq2's pipeline as ``DESeq()`` then ``results(dds, contrast,
alpha)`` do in R: median-of-ratios size factors, gene-wise dispersions, parametric
trend, MAP shrinkage, negative binomial GLM per gene with the covariates in the design
(``~ cov1 + cov2 + condition``), Wald test of the condition's contrast, Cook's distance
filtering and refits of outliers (7 or more replicates), then independent filtering on
the mean of normalised counts and Benjamini–Hochberg adjustment at ``alpha``. PyDESeq2
does the work; :mod:`.r_matched` swaps in R's dispersion search and Wald standard
error so the numbers agree with R's (tests/omics/fixtures/deseq2).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from pydeseq2.ds import DeseqStats

from medlake.errors import InputError, UsageError
from medlake.omics.expression.matrix import CountData
from medlake.omics.expression.r_matched import RMatchedDeseqDataSet, RMatchedInference

RESULT_COLUMNS = ("baseMean", "log2FoldChange", "lfcSE", "stat", "pvalue", "padj")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")


@dataclass(frozen=True)
class DEDesign:
    """What to compare: ``case`` vs ``control`` levels of ``condition``, adjusted for
    ``covariates``; ``alpha`` is the FDR target of independent filtering."""

    condition: str
    case: str | None = None
    control: str | None = None
    covariates: tuple[str, ...] = ()
    alpha: float = 0.05

    def formula(self) -> str:
        return "~" + " + ".join([*self.covariates, self.condition])


@dataclass
class DEResult:
    """The results table (one row per gene, :data:`RESULT_COLUMNS`) and what was fitted."""

    table: pd.DataFrame
    design: DEDesign
    case: str
    control: str
    n_case: int
    n_control: int
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def n_significant(self) -> int:
        return int((self.table["padj"] < self.design.alpha).sum())


def _fit_steps(dds: RMatchedDeseqDataSet) -> list[Callable[[], object]]:
    """The steps of ``DeseqDataSet.deseq2()`` in its order (with ``refit_cooks``)."""

    def size_factors() -> None:
        dds.fit_size_factors(fit_type=dds.size_factors_fit_type, control_genes=dds.control_genes)

    def refit() -> None:
        dds.refit()
        dds.cooks_outlier()

    return [
        size_factors,
        dds.fit_genewise_dispersions,
        dds.fit_dispersion_trend,
        dds.fit_dispersion_prior,
        dds.fit_MAP_dispersions,
        dds.fit_LFC,
        dds.calculate_cooks,
        refit,
    ]


def _levels(data: CountData, design: DEDesign) -> tuple[str, str]:
    levels = sorted(data.samples[design.condition].unique())
    case, control = design.case, design.control
    if case is None and control is None:
        if len(levels) != 2:
            raise UsageError(
                f"condition {design.condition!r} has {len(levels)} levels "
                f"({', '.join(levels[:6])}): name --case and --control"
            )
        control, case = levels  # alphabetical, as R's factor() orders them
    elif case is None:
        others = [lv for lv in levels if lv != control]
        case = others[0] if len(others) == 1 else None
    elif control is None:
        others = [lv for lv in levels if lv != case]
        control = others[0] if len(others) == 1 else None
    if case is None or control is None:
        raise UsageError(f"condition {design.condition!r}: name both --case and --control")
    for level in (case, control):
        if level not in levels:
            raise UsageError(f"condition {design.condition!r} has no level {level!r}")
    return case, control


DESEQ_STEPS = 9  # progress steps of run_deseq: the 8 of DESeq2's fit, then the Wald tests


def run_deseq(
    data: CountData,
    design: DEDesign,
    *,
    n_cpus: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> DEResult:
    """Fit DESeq2 (PyDESeq2, R-matched numerics) and return the results table.

    ``progress(done, DESEQ_STEPS)`` is called after each step of the fit (size factors,
    gene-wise dispersions, trend, prior, MAP dispersions, fold changes, Cook's
    distances, outlier refit) and after the Wald tests; an exception it raises
    propagates and stops the fit.
    """
    for name in (design.condition, *design.covariates):
        if not _NAME.match(name):
            raise UsageError(f"column name {name!r}: use letters, digits, '_' and '.' only")
    case, control = _levels(data, design)
    keep = data.samples[design.condition].isin([case, control])
    samples = data.samples[keep]
    counts = data.counts.loc[samples.index]
    n_case = int((samples[design.condition] == case).sum())
    n_control = int((samples[design.condition] == control).sum())
    if n_case < 1 or n_control < 1 or n_case + n_control < 3:
        raise InputError(f"too few samples: {n_case} {case!r}, {n_control} {control!r}")
    if counts.shape[1] == 0:
        raise InputError("the count matrix has no genes")
    inference = RMatchedInference(n_cpus=n_cpus)

    def report(done: int) -> None:
        if progress is not None:
            progress(done, DESEQ_STEPS)

    with warnings.catch_warnings():
        # PyDESeq2 warns on overflow in its own optimiser fallbacks and on numeric
        # covariates; the results carry the outcome (NaN where DESeq2 gives NA).
        warnings.simplefilter("ignore")
        with np.errstate(all="ignore"):
            dds = RMatchedDeseqDataSet(
                counts=counts,
                metadata=samples,
                design=design.formula(),
                refit_cooks=True,
                inference=inference,
                quiet=True,
            )
            # DeseqDataSet.deseq2()'s steps (PyDESeq2 0.5), one by one for progress
            for done, step in enumerate(_fit_steps(dds), start=1):
                step()
                report(done)
            stats = DeseqStats(
                dds,
                contrast=[design.condition, case, control],
                alpha=design.alpha,
                cooks_filter=True,
                independent_filter=True,
                inference=inference,
                quiet=True,
            )
            stats.summary()
            report(DESEQ_STEPS)
    table = stats.results_df.loc[:, list(RESULT_COLUMNS)].copy()
    table.index.name = "gene_id"
    return DEResult(table, design, case, control, n_case, n_control, dict(data.dropped))
