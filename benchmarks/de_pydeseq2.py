"""Differential expression speed: medlake de (PyDESeq2, R-matched steps) vs R DESeq2.

Simulates a count matrix as the synthetic hospital does (negative binomial, DESeq2's
dispersion trend, 5 % of genes differentially expressed between two equal groups, a
two-level batch), writes it as a counts TSV and a sample table, then times on the same
files and design (``~ batch + condition``):

- ``medlake``: :func:`medlake.service.de.run_de` (reading, fitting, results table);
- ``pydeseq2``: stock PyDESeq2 0.5 (``DefaultInference``), unless ``--no-stock``;
- ``R``: ``Rscript`` running DESeq2's ``DESeq()`` + ``results()`` (Debian
  ``r-bioc-deseq2``; skipped with ``--no-r`` or when Rscript is missing). R's own
  fitting time (``system.time`` around ``DESeq`` + ``results``) and its whole run are
  both printed.

Prints seconds, ratios against R, peak RSS and how far the results are from R's.

    .venv/bin/python benchmarks/de_pydeseq2.py --genes 20000 --samples 500 [--cpus 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

R_SCRIPT = """
suppressPackageStartupMessages(library(DESeq2))
args <- commandArgs(trailingOnly = TRUE)
counts <- as.matrix(read.delim(args[1], row.names = 1, check.names = FALSE))
samples <- read.delim(args[2], row.names = 1, stringsAsFactors = FALSE)
samples$condition <- factor(samples$condition, levels = c("control", "case"))
samples$batch <- factor(samples$batch)
took <- system.time({
  dds <- DESeqDataSetFromMatrix(countData = counts, colData = samples,
                                design = ~ batch + condition)
  dds <- DESeq(dds, quiet = TRUE)
  res <- results(dds, contrast = c("condition", "case", "control"), alpha = 0.05)
})
out <- data.frame(gene_id = rownames(res), as.data.frame(res), check.names = FALSE)
out$betaIter <- mcols(dds)$betaIter
write.csv(out, args[3], row.names = FALSE, quote = FALSE, na = "NA")
cpu <- took[["user.self"]] + took[["sys.self"]]
cat(sprintf("R_FIT_SECONDS %.3f %.3f\\n", took[["elapsed"]], cpu))
"""


def simulate(genes: int, samples: int, seed: int, out: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    base_mean = rng.lognormal(np.log(60.0), 1.8, genes)
    dispersion = (1.5 / base_mean + 0.05) * rng.lognormal(0.0, 0.5, genes)
    lfc = np.zeros(genes)
    de = rng.choice(genes, genes // 20, replace=False)
    lfc[de] = rng.choice([-1.0, 1.0], de.size) * rng.uniform(0.5, 2.0, de.size)
    case = np.arange(samples) % 2 == 1
    batch = np.arange(samples) >= samples // 2
    size_factor = rng.lognormal(0.0, 0.3, samples)
    batch_lfc = rng.normal(0.0, 0.15, genes)
    mu = (
        np.exp2(np.log2(base_mean)[:, None] + lfc[:, None] * case + batch_lfc[:, None] * batch)
        * size_factor
    )
    inv_alpha = 1.0 / dispersion[:, None]
    counts = rng.negative_binomial(inv_alpha, inv_alpha / (inv_alpha + mu))
    names = [f"S{i + 1:04d}" for i in range(samples)]
    frame = pd.DataFrame(counts, index=[f"G{g + 1:05d}" for g in range(genes)], columns=names)
    frame.index.name = "gene_id"
    counts_path, samples_path = out / "counts.tsv", out / "samples.tsv"
    frame.to_csv(counts_path, sep="\t")
    pd.DataFrame(
        {
            "sample_id": names,
            "condition": np.where(case, "case", "control"),
            "batch": np.where(batch, "b2", "b1"),
        }
    ).to_csv(samples_path, sep="\t", index=False)
    return counts_path, samples_path


def run_medlake(counts: Path, samples: Path, cpus: int) -> tuple[float, float, pd.DataFrame]:
    from medlake.service.de import run_de

    cpu = time.process_time()
    started = time.perf_counter()
    report = run_de(
        out=None, counts=counts, samples=samples, condition="condition",
        case="case", control="control", covariates=["batch"], n_cpus=cpus,
    )  # fmt: skip
    return time.perf_counter() - started, time.process_time() - cpu, report.table


def run_stock(counts: Path, samples: Path, cpus: int) -> tuple[float, float]:
    import warnings

    from pydeseq2.dds import DeseqDataSet
    from pydeseq2.default_inference import DefaultInference
    from pydeseq2.ds import DeseqStats

    cpu = time.process_time()
    started = time.perf_counter()
    matrix = pd.read_csv(counts, sep="\t", index_col=0).T
    table = pd.read_csv(samples, sep="\t", index_col=0)
    inference = DefaultInference(n_cpus=cpus)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dds = DeseqDataSet(
            counts=matrix, metadata=table, design="~batch + condition",
            inference=inference, quiet=True,
        )  # fmt: skip
        dds.deseq2()
        stats = DeseqStats(
            dds, contrast=["condition", "case", "control"], alpha=0.05,
            inference=inference, quiet=True,
        )  # fmt: skip
        stats.summary()
    return time.perf_counter() - started, time.process_time() - cpu


def run_r(counts: Path, samples: Path, work: Path) -> tuple[float, float, float, pd.DataFrame, int]:
    script = work / "deseq2.R"
    script.write_text(R_SCRIPT, encoding="utf-8")
    out = work / "r_results.csv"
    started = time.perf_counter()
    done = subprocess.run(
        ["Rscript", str(script), str(counts), str(samples), str(out)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    wall = time.perf_counter() - started
    fit, fit_cpu = (float(v) for v in done.stdout.split("R_FIT_SECONDS")[1].split()[:2])
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return wall, fit, fit_cpu, pd.read_csv(out, index_col="gene_id"), peak_kib


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--genes", type=int, default=20000)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--cpus", type=int, default=1, help="PyDESeq2 worker processes")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-r", action="store_true")
    parser.add_argument("--no-stock", action="store_true")
    args = parser.parse_args()

    print(
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"{args.genes:,} genes x {args.samples:,} samples, design ~ batch + condition"
    )
    with tempfile.TemporaryDirectory(prefix="de-bench-") as tmp:
        work = Path(tmp)
        counts, samples = simulate(args.genes, args.samples, args.seed, work)
        ours, ours_cpu, table = run_medlake(counts, samples, args.cpus)
        own_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"medlake de (PyDESeq2, R-matched): {ours:8.1f} s wall, {ours_cpu:8.1f} s CPU "
            f"(peak RSS {own_peak:,.0f} MiB)"
        )
        print(f"  padj < 0.05: {(table['padj'] < 0.05).sum():,} genes")
        if not args.no_stock:
            stock, stock_cpu = run_stock(counts, samples, args.cpus)
            print(f"stock PyDESeq2 0.5:               {stock:8.1f} s wall, {stock_cpu:8.1f} s CPU")
        if not args.no_r and shutil.which("Rscript"):
            wall, fit, fit_cpu, r, r_peak = run_r(counts, samples, work)
            r_mib = r_peak / 1024
            print(f"R DESeq2 (whole Rscript run):     {wall:8.1f} s  (peak RSS {r_mib:,.0f} MiB)")
            print(f"R DESeq2 (DESeq + results only):  {fit:8.1f} s wall, {fit_cpu:8.1f} s CPU")
            print(f"ratio R / medlake: {fit / ours:.2f}x wall, {fit_cpu / ours_cpu:.2f}x CPU")
            converged = r["betaIter"] < 100
            diff = (table["log2FoldChange"] - r["log2FoldChange"]).abs()[converged]
            calls = (table["padj"] < 0.05) != (r["padj"] < 0.05)
            print(
                f"vs R: max |dlog2FC| {diff.max():.2e} over {converged.sum():,} genes "
                f"(R's optim fallback: {(~converged).sum():,}); padj<0.05 calls differing: "
                f"{calls.sum():,}"
            )


if __name__ == "__main__":
    main()
