"""``medlake gwas``: genome-wide association on PLINK files (PLINK 2 ``--glm`` compatible)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from medlake.cli.options import JsonOption
from medlake.cli.render import console, print_json, print_table
from medlake.errors import UsageError
from medlake.omics.gwas.qc import VariantFilter
from medlake.service.gwas import run_gwas_files


def register(app: typer.Typer) -> None:
    app.command("gwas")(gwas)


def _names(values: list[str] | None) -> list[str]:
    """Names given repeatedly or comma-separated, as PLINK's ``--covar-name A,B``."""
    return [n for v in values or [] for n in v.split(",") if n]


def gwas(
    out: Annotated[Path, typer.Option("--out", help="Output prefix (PLINK 2 style).")],
    pheno: Annotated[
        Path, typer.Option("--pheno", help="Phenotype file (#FID IID ... or #IID ...).")
    ],
    bfile: Annotated[
        str | None, typer.Option("--bfile", help="PLINK 1 fileset prefix (.bed/.bim/.fam).")
    ] = None,
    pfile: Annotated[
        str | None, typer.Option("--pfile", help="PLINK 2 fileset prefix (.pgen/.pvar/.psam).")
    ] = None,
    pheno_name: Annotated[
        list[str] | None, typer.Option("--pheno-name", help="Phenotype column(s); default all.")
    ] = None,
    covar: Annotated[Path | None, typer.Option("--covar", help="Covariate file.")] = None,
    covar_name: Annotated[
        list[str] | None,
        typer.Option("--covar-name", help="Covariate column(s), repeated or comma-separated."),
    ] = None,
    logistic: Annotated[
        bool, typer.Option("--logistic", help="Case/control phenotype (1/2 or 0/1 coding).")
    ] = False,
    firth: Annotated[
        str, typer.Option("--firth", help="Firth regression: fallback (default), always, never.")
    ] = "fallback",
    maf: Annotated[
        float | None, typer.Option("--maf", help="Minimum minor allele frequency.")
    ] = None,
    geno: Annotated[float | None, typer.Option("--geno", help="Maximum missing-call rate.")] = None,
    hwe: Annotated[float | None, typer.Option("--hwe", help="Minimum HWE exact-test P.")] = None,
    backend: Annotated[
        str, typer.Option("--backend", help="auto (GPU when present), numpy or torch.")
    ] = "auto",
    plots: Annotated[
        bool, typer.Option("--plots/--no-plots", help="Write Manhattan/QQ plots.")
    ] = True,
    json: JsonOption = False,
) -> None:
    """Associate every variant with each phenotype, as ``plink2 --glm hide-covar`` does."""
    if (bfile is None) == (pfile is None):
        raise UsageError("give exactly one of --bfile and --pfile")
    if firth not in ("fallback", "always", "never"):
        raise UsageError(f"--firth must be fallback, always or never, got {firth!r}")
    if backend not in ("auto", "numpy", "torch"):
        raise UsageError(f"--backend must be auto, numpy or torch, got {backend!r}")
    prefix, kind = (Path(bfile), "bed") if bfile is not None else (Path(str(pfile)), "pgen")
    with Progress(
        TextColumn("gwas"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=json,
        transient=True,
    ) as bar:
        task = bar.add_task("variants", total=None)
        runs = run_gwas_files(
            prefix,
            kind,
            pheno,
            out,
            pheno_names=_names(pheno_name),
            covar=covar,
            covar_names=_names(covar_name),
            logistic=logistic,
            firth=firth,  # type: ignore[arg-type]
            filters=VariantFilter(maf=maf, geno=geno, hwe=hwe),
            backend=backend,  # type: ignore[arg-type]
            plots=plots,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    if json:
        print_json([r.as_dict() for r in runs])
        return
    print_table(
        "GWAS",
        ["phenotype", "model", "samples", "variants", "λGC", "P<5e-8", "seconds", "report"],
        [
            [
                r.phenotype,
                r.model,
                r.samples,
                r.variants,
                f"{r.lambda_gc:.3f}",
                len(r.hits),
                f"{r.seconds:.1f}",
                str(r.files["plink"]),
            ]
            for r in runs
        ],
    )
