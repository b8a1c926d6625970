"""``medlake de``: differential expression (DESeq2's method) on counts files or the lake."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medlake.cli.options import JsonOption, WorkspaceOption
from medlake.cli.render import console, print_json, print_table


def register(app: typer.Typer) -> None:
    app.command("de")(de)


def _names(values: list[str] | None) -> list[str]:
    """Names given repeatedly or comma-separated (``--covariate batch,age``)."""
    return [n for v in values or [] for n in v.split(",") if n]


def de(
    out: Annotated[Path, typer.Option("--out", help="Output prefix (PREFIX.de.tsv, ...).")],
    counts: Annotated[
        Path | None,
        typer.Option("--counts", help="Counts file (genes × samples); default: the lake's."),
    ] = None,
    samples: Annotated[
        Path | None,
        typer.Option("--samples", help="Sample table: sample_id, condition, covariates."),
    ] = None,
    condition: Annotated[
        str | None, typer.Option("--condition", help="Sample-table column to compare.")
    ] = None,
    case: Annotated[
        str | None, typer.Option("--case", help="Level of the condition tested (numerator).")
    ] = None,
    control: Annotated[
        str | None, typer.Option("--control", help="Reference level (denominator).")
    ] = None,
    covariate: Annotated[
        list[str] | None,
        typer.Option("--covariate", help="Sample-table column(s) adjusted for; repeatable."),
    ] = None,
    case_cohort: Annotated[
        Path | None,
        typer.Option("--case-cohort", help="Cohort definition (JSON) of the cases."),
    ] = None,
    control_cohort: Annotated[
        Path | None,
        typer.Option(
            "--control-cohort", help="Cohort definition of the controls (default: the rest)."
        ),
    ] = None,
    alpha: Annotated[
        float, typer.Option("--alpha", help="FDR for independent filtering and calls.")
    ] = 0.05,
    cpus: Annotated[int, typer.Option("--cpus", help="Worker processes for PyDESeq2.")] = 1,
    plots: Annotated[
        bool, typer.Option("--plots/--no-plots", help="Write volcano and MA plots.")
    ] = True,
    json: JsonOption = False,
    workspace: WorkspaceOption = None,
) -> None:
    """Test genes for differential expression between two groups (DESeq2's method).

    Standalone: --counts FILE --samples FILE --condition COL. On the lake (registered
    RNA-seq): --samples FILE --condition COL, or --case-cohort [--control-cohort].
    """
    # imported here: PyDESeq2 (and AnnData under it) would slow every medlake command
    from medlake.service.de import run_de

    with console.status("fitting DESeq2 ...", spinner="dots") if not json else _Null():
        report = run_de(
            out=out,
            counts=counts,
            samples=samples,
            condition=condition,
            case=case,
            control=control,
            covariates=_names(covariate),
            workspace_dir=workspace,
            case_cohort=case_cohort,
            control_cohort=control_cohort,
            alpha=alpha,
            n_cpus=cpus,
            plots=plots,
        )
    summary = report.as_dict()
    if json:
        print_json(summary)
        return
    result = report.result
    print_table(
        f"Differential expression {summary['design']}, {result.case} vs {result.control}",
        ("", "value"),
        [
            ("samples (case / control)", f"{result.n_case} / {result.n_control}"),
            ("genes", summary["genes"]),
            ("genes tested", summary["genes_tested"]),
            (f"padj < {alpha:g}", summary["significant"]),
            *((f"left out: {why}", n) for why, n in result.dropped.items()),
        ],
    )
    for path in report.files.values():
        console.print(f"wrote {path}", highlight=False)


class _Null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
