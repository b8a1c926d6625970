"""The demo's steps after ingest, one function each, every one through the same service
functions as the CLI: link persons, check quality, count and extract a cohort, run the
analyses, de-identify notes, verify the audit trail, back up and drill a restore.

Each step returns a :class:`DemoSection` (a titled table) that ``medlake demo`` prints,
so the demo shows what each capability did and measured, not only that it ran.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class DemoSection:
    title: str
    columns: list[str]
    rows: list[list[object]]
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class DemoContext:
    hospital_dir: Path
    workspace_dir: Path
    out_dir: Path


DemoStep = Callable[[DemoContext], DemoSection]


def link_persons(ctx: DemoContext) -> DemoSection:
    from medlake.service.empi import link_workspace, score_against_truth

    # Ingest linked each system's patients as it came ([empi] link_after_ingest); this
    # links whatever is left (nothing, unless that setting is off) and scores the lake.
    outcome = link_workspace(ctx.workspace_dir)
    score = score_against_truth(ctx.workspace_dir, ctx.hospital_dir)
    how = (
        "linked after each ingest run ([empi] link_after_ingest)"
        if outcome.mode == "nothing"
        else f"linked by this step ({outcome.mode} run, {outcome.records:,} records)"
    )
    return DemoSection(
        "EMPI: source patients linked into persons (scored against truth/)",
        ["source patients", "persons before", "persons after", "pairwise precision",
         "pairwise recall", "review queue"],
        [[score.records, score.records, score.persons, f"{score.precision:.4f}",
          f"{score.recall:.4f}", score.review_queue]],
        [how],
    )  # fmt: skip


def check_quality(ctx: DemoContext) -> DemoSection:
    from medlake.service.quality import qc_summary, run_qc

    run_qc(ctx.workspace_dir)
    summary = qc_summary(ctx.workspace_dir)
    counts: dict[str, dict[str, int]] = summary["counts"]
    statuses = sorted({status for by_status in counts.values() for status in by_status})
    rows = [[category, *[by_status.get(status, 0) for status in statuses]]
            for category, by_status in counts.items()]  # fmt: skip
    notes = [f"worst failed: {f['check_id']} ({f['pct_violating']:.2f} % of rows)"
             for f in summary["failed"][:5]]  # fmt: skip
    return DemoSection("Data quality: checks per category and status", ["category", *statuses],
                       rows, notes)  # fmt: skip


def count_demo_cohort(ctx: DemoContext) -> DemoSection:
    from medlake.service.cohort import count_cohort, load_definition

    count = count_cohort(ctx.workspace_dir, load_definition(_example_cohort()))
    return DemoSection(f"Cohort: {count.name} (attrition, small cells suppressed)",
                       list(_ATTRITION_COLUMNS), count.as_rows())  # fmt: skip


_ATTRITION_COLUMNS = ("step", "remaining", "excluded", "excluded by the rule alone")


def extract_demo_dataset(ctx: DemoContext) -> DemoSection:
    from medlake.service.extract import extract_demo_cohort

    result = extract_demo_cohort(ctx.workspace_dir, ctx.out_dir / "extract")
    return DemoSection(
        "Extraction: de-identified analysis dataset of the cohort",
        ["persons", "rows", "k required", "k achieved", "suppressed rows", "folder"],
        [[result.persons, result.rows, result.k, result.k_achieved, result.suppressed_rows,
          str(result.out_dir)]],
    )  # fmt: skip


def genome_wide_association(ctx: DemoContext) -> DemoSection:
    """LDL (LOINC 22748-8, the latest value) on the genotypes of the linked persons."""
    import csv

    from medlake.service.gwas_lake import LakePhenotype, run_gwas_lake

    run = run_gwas_lake(ctx.workspace_dir, LakePhenotype("LDL", measurement="22748-8"),
                        ctx.out_dir / "analyses" / "ldl")  # fmt: skip
    with (ctx.hospital_dir / "truth" / "planted_variants.csv").open(encoding="ascii") as handle:
        planted = {row["variant_id"] for row in csv.DictReader(handle) if row["trait"] == "ldl"}
    hits = {str(hit.get("id")) for hit in run.hits}
    return DemoSection(
        "GWAS: latest LDL on genotypes of linked persons (linear, PLINK 2 --glm columns)",
        ["samples", "variants", "lambda GC", "hits P < 5e-8", "planted LDL variants found",
         "other hits", "Manhattan plot"],
        [[run.samples, run.variants, f"{run.lambda_gc:.3f}", len(hits),
          f"{len(hits & planted)} of {len(planted)}", len(hits - planted),
          str(run.files.get("manhattan_html", run.files.get("manhattan.html", "")))]],
    )  # fmt: skip


def differential_expression(ctx: DemoContext) -> DemoSection:
    import csv

    from medlake.service.de import run_demo_de

    report = run_demo_de(ctx.workspace_dir, ctx.out_dir / "analyses" / "t2d")
    table = report.table
    called = set(table.index[table["padj"] < report.result.design.alpha])
    with (ctx.hospital_dir / "truth" / "de_genes.csv").open(encoding="ascii") as handle:
        planted = {row["gene_id"] for row in csv.DictReader(handle)}
    recall = len(called & planted) / len(planted) if planted else float("nan")
    false_calls = len(called - planted)
    summary = report.as_dict()
    return DemoSection(
        "Differential expression: type 2 diabetes vs other RNA-seq samples (DESeq2 method)",
        ["cases", "controls", "genes tested", f"padj < {report.result.design.alpha}",
         "planted genes recovered", "calls not planted", "volcano plot"],
        [[report.result.n_case, report.result.n_control, summary["genes_tested"],
          len(called), f"{recall:.3f}", false_calls, str(report.files.get("volcano.html", ""))]],
    )  # fmt: skip


def score_note_deidentification(ctx: DemoContext) -> DemoSection:
    from medlake.service.deid import score_hospital_notes

    result = score_hospital_notes(ctx.hospital_dir)
    rows = [[s.entity, s.labelled, f"{s.recall:.4f}", f"{s.precision:.4f}"]
            for s in result.scores.values()]  # fmt: skip
    return DemoSection(f"De-identification of {result.documents:,} clinical notes",
                       ["PHI type", "labelled", "recall", "precision"], rows)  # fmt: skip


def verify_audit_trail(ctx: DemoContext) -> DemoSection:
    from medlake.service.audit import verify_trail

    result = verify_trail(ctx.workspace_dir)
    return DemoSection("Audit trail (hash chain and anchors)",
                       ["events", "anchors checked", "intact"],
                       [[result.events, result.anchors_checked, "yes" if result.ok else "NO"]],
                       [f"{f.kind} at event {f.event_id}" for f in result.findings])  # fmt: skip


def backup_and_drill(ctx: DemoContext) -> DemoSection:
    from medlake.service.backup import backup_and_drill as run

    _, drill = run(ctx.workspace_dir)
    return DemoSection(
        "Backup (BorgBackup) and restore drill",
        ["archive", "RPO seconds", "RTO seconds", "tables checked", "landed files", "ok"],
        [[drill.archive, f"{drill.rpo_seconds:.1f}", f"{drill.rto_seconds:.1f}", drill.tables,
          drill.landed_files, "yes" if drill.ok else "NO"]],
    )  # fmt: skip


def _example_cohort() -> Path:
    from medlake.cohort import examples

    return Path(examples.__file__).parent / "t2d_hba1c_metformin.json"


#: In order: linking first (cohorts count persons), protection last (it backs up all).
STEPS: tuple[tuple[str, DemoStep], ...] = (
    ("link persons", link_persons),
    ("quality checks", check_quality),
    ("count cohort", count_demo_cohort),
    ("extract dataset", extract_demo_dataset),
    ("GWAS", genome_wide_association),
    ("differential expression", differential_expression),
    ("de-identify notes", score_note_deidentification),
    ("verify audit trail", verify_audit_trail),
    ("backup and drill", backup_and_drill),
)
