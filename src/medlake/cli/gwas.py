"""``medlake gwas``: genome-wide association on PLINK files (PLINK 2 ``--glm`` compatible)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from medlake.cli.options import JsonOption, WorkspaceOption
from medlake.cli.render import console, print_json, print_table
from medlake.errors import UsageError

if TYPE_CHECKING:  # the analysis stack (SciPy, plots) loads only when the command runs
    from medlake.omics.gwas.qc import VariantFilter
    from medlake.service.gwas import GwasRun


def register(app: typer.Typer) -> None:
    app.command("gwas")(gwas)


def _names(values: list[str] | None) -> list[str]:
    """Names given repeatedly or comma-separated, as PLINK's ``--covar-name A,B``."""
    return [n for v in values or [] for n in v.split(",") if n]


def gwas(
    out: Annotated[Path, typer.Option("--out", help="Output prefix (PLINK 2 style).")],
    pheno: Annotated[
        Path | None, typer.Option("--pheno", help="Phenotype file (#FID IID ... or #IID ...).")
    ] = None,
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
    case_cohort: Annotated[
        Path | None, typer.Option("--case-cohort", help="Lake mode: cohort definition of cases.")
    ] = None,
    control_cohort: Annotated[
        Path | None,
        typer.Option("--control-cohort", help="Lake mode: controls (default: other genotyped)."),
    ] = None,
    measurement: Annotated[
        str | None,
        typer.Option("--measurement", help="Lake mode: measurement source value, e.g. 22748-8."),
    ] = None,
    start: Annotated[
        datetime | None, typer.Option("--from", help="Lake mode: measurements from this date.")
    ] = None,
    end: Annotated[
        datetime | None, typer.Option("--to", help="Lake mode: measurements up to this date.")
    ] = None,
    inverse_normal: Annotated[
        bool, typer.Option("--inverse-normal", help="Lake mode: rank-based inverse-normal.")
    ] = False,
    pcs: Annotated[int, typer.Option("--pcs", help="Lake mode: genotype PCs as covariates.")] = 4,
    covar_features: Annotated[
        Path | None,
        typer.Option("--covar-features", help="Lake mode: feature spec whose features are "
                     "covariates (at sample collection)."),
    ] = None,
    name: Annotated[str, typer.Option("--name", help="Lake mode: phenotype name.")] = "PHENO",
    workspace: WorkspaceOption = None,
    plots: Annotated[
        bool, typer.Option("--plots/--no-plots", help="Write Manhattan/QQ plots.")
    ] = True,
    json: JsonOption = False,
) -> None:
    """Associate every variant with each phenotype, as ``plink2 --glm hide-covar`` does.

    Standalone on --bfile/--pfile with --pheno; without them, on the lake's genotypes
    with a phenotype from --case-cohort/--control-cohort or --measurement.
    """
    lake = bfile is None and pfile is None
    if not lake and (bfile is not None) == (pfile is not None):
        raise UsageError("give exactly one of --bfile and --pfile")
    if not lake and pheno is None:
        raise UsageError("--bfile/--pfile need --pheno")
    if not lake and covar_features is not None:
        raise UsageError("--covar-features is for lake mode (standalone: --covar)")
    if lake and (case_cohort is None) == (measurement is None):
        raise UsageError("lake mode needs exactly one of --case-cohort and --measurement")
    if firth not in ("fallback", "always", "never"):
        raise UsageError(f"--firth must be fallback, always or never, got {firth!r}")
    if backend not in ("auto", "numpy", "torch"):
        raise UsageError(f"--backend must be auto, numpy or torch, got {backend!r}")
    from medlake.omics.gwas.qc import VariantFilter
    from medlake.service.gwas_lake import LakePhenotype, run_gwas_lake

    filters = VariantFilter(maf=maf, geno=geno, hwe=hwe)
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

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        if lake:
            phenotype = LakePhenotype(
                name,
                case_cohort=case_cohort,
                control_cohort=control_cohort,
                measurement=measurement,
                start=start.date() if start else None,
                end=end.date() if end else None,
                inverse_normal=inverse_normal,
            )
            runs = [
                run_gwas_lake(
                    workspace,
                    phenotype,
                    out,
                    n_pcs=pcs,
                    firth=firth,  # type: ignore[arg-type]
                    filters=filters if filters.active else None,
                    backend=backend,  # type: ignore[arg-type]
                    plots=plots,
                    progress=progress,
                    features=covar_features,
                )
            ]
        else:
            runs = _standalone(
                bfile,
                pfile,
                pheno,
                out,
                pheno_name,
                covar,
                covar_name,
                logistic,
                firth,
                filters,
                backend,
                plots,
                progress,
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


def _standalone(
    bfile: str | None,
    pfile: str | None,
    pheno: Path | None,
    out: Path,
    pheno_name: list[str] | None,
    covar: Path | None,
    covar_name: list[str] | None,
    logistic: bool,
    firth: str,
    filters: VariantFilter,
    backend: str,
    plots: bool,
    progress: Callable[[int, int], None],
) -> list[GwasRun]:
    prefix, kind = (Path(bfile), "bed") if bfile is not None else (Path(str(pfile)), "pgen")
    from medlake.service.gwas import run_gwas_files

    return run_gwas_files(
        prefix,
        kind,
        Path(str(pheno)),
        out,
        pheno_names=_names(pheno_name),
        covar=covar,
        covar_names=_names(covar_name),
        logistic=logistic,
        firth=firth,  # type: ignore[arg-type]
        filters=filters,
        backend=backend,  # type: ignore[arg-type]
        plots=plots,
        progress=progress,
    )
