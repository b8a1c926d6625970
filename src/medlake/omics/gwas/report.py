"""Write association results as PLINK 2 writes ``--glm`` reports, and as Parquet.

The text report has PLINK 2's header, column order, file suffix
(``PREFIX.PHENO.glm.linear``, ``.glm.logistic.hybrid`` with firth-fallback,
``.glm.firth`` with Firth always, ``.glm.logistic`` without Firth), tab separation,
numbers with 6 significant digits (``%g``), ``NA`` for results an error code replaced.
Parquet keeps full float64 precision with lower-case column names.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from medlake.omics.gwas.association import RESULT_SCHEMA, GlmOptions

SUFFIX = {
    ("linear", "fallback"): "glm.linear",
    ("linear", "always"): "glm.linear",
    ("linear", "never"): "glm.linear",
    ("logistic", "fallback"): "glm.logistic.hybrid",
    ("logistic", "always"): "glm.firth",
    ("logistic", "never"): "glm.logistic",
}


def report_columns(options: GlmOptions) -> list[str]:
    """PLINK 2's header for this model (``hide-covar``, ``cols=+a1freq``)."""
    head = ["#CHROM", "POS", "ID", "REF", "ALT", "A1", "A1_FREQ"]
    if options.model == "linear":
        return [*head, "TEST", "OBS_CT", "BETA", "SE", "T_STAT", "P", "ERRCODE"]
    firth = ["FIRTH?"] if options.firth == "fallback" else []
    return [*head, *firth, "TEST", "OBS_CT", "OR", "LOG(OR)_SE", "Z_STAT", "P", "ERRCODE"]


def format_g(values: np.ndarray) -> list[str]:
    """Numbers as PLINK 2 prints them: 6 significant digits, ``NA`` for NaN."""
    return ["NA" if v != v else f"{v:.6g}" for v in values.tolist()]


def _lines(batch: pa.RecordBatch, options: GlmOptions) -> Iterator[str]:
    col = {name: batch.column(name).to_numpy(zero_copy_only=False) for name in batch.schema.names}
    beta = col["beta"]
    effect = beta if options.model == "linear" else np.exp(beta)
    fields = [
        col["chrom"],
        col["pos"].astype(str),
        col["id"],
        col["ref"],
        col["alt"],
        col["a1"],
        format_g(col["a1_freq"]),
    ]
    if options.model == "logistic" and options.firth == "fallback":
        fields.append(np.where(col["firth"], "Y", "N"))
    fields += [
        col["test"],
        col["obs_ct"].astype(str),
        format_g(effect),
        format_g(col["se"]),
        format_g(col["stat"]),
        format_g(col["p"]),
        col["errcode"],
    ]
    for row in zip(*fields, strict=True):
        yield "\t".join(row) + "\n"


def write_reports(
    batches: Iterable[pa.RecordBatch], prefix: Path, phenotype: str, options: GlmOptions
) -> dict[str, Path]:
    """Stream ``batches`` into the PLINK 2 text report and a Parquet file.

    Both are written under temporary names (``*.part``) and renamed once every batch is
    in, so a run stopped part way (an error, or a cancelled job whose progress callback
    raised inside ``batches``) leaves no partial report, and an earlier complete one of
    the same name stays until the new one replaces it. Returns ``{"plink": path,
    "parquet": path}``.
    """
    stem = f"{prefix}.{phenotype}"
    text_path = Path(f"{stem}.{SUFFIX[(options.model, options.firth)]}")
    parquet_path = Path(f"{stem}.glm.parquet")
    text_path.parent.mkdir(parents=True, exist_ok=True)
    text_part = text_path.with_name(text_path.name + ".part")
    parquet_part = parquet_path.with_name(parquet_path.name + ".part")
    try:
        with (
            text_part.open("w", encoding="ascii", newline="\n") as text,
            pq.ParquetWriter(parquet_part, RESULT_SCHEMA) as parquet,
        ):
            text.write("\t".join(report_columns(options)) + "\n")
            for batch in batches:
                text.writelines(_lines(batch, options))
                parquet.write_batch(batch)
    except BaseException:
        text_part.unlink(missing_ok=True)
        parquet_part.unlink(missing_ok=True)
        raise
    text_part.replace(text_path)
    parquet_part.replace(parquet_path)
    return {"plink": text_path, "parquet": parquet_path}
