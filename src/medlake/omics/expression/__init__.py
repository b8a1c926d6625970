"""Differential expression of RNA-seq counts (DESeq2's method, through PyDESeq2).

:mod:`.matrix` reads counts (a counts file or a registered Parquet matrix) and sample
tables; :mod:`.deseq` fits the model and builds the results table; :mod:`.r_matched`
holds the R-matched numerical steps; :mod:`.plots` draws volcano and MA plots.
"""

from medlake.omics.expression.deseq import (
    DESEQ_STEPS,
    RESULT_COLUMNS,
    DEDesign,
    DEResult,
    run_deseq,
)
from medlake.omics.expression.matrix import (
    CountData,
    align,
    read_counts_file,
    read_counts_parquet,
    read_sample_table,
)
from medlake.omics.expression.plots import write_plots

__all__ = [
    "DESEQ_STEPS",
    "RESULT_COLUMNS",
    "CountData",
    "DEDesign",
    "DEResult",
    "align",
    "read_counts_file",
    "read_counts_parquet",
    "read_sample_table",
    "run_deseq",
    "write_plots",
]
