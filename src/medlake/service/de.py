"""Differential expression use cases: on a counts file (standalone) or on the lake.

- **Standalone**: a counts file and a sample table, as from any RNA-seq pipeline
  (:func:`run_de` with ``counts``).
- **Lake**: the RNA-seq matrices registered in ``omics_sample`` (assay ``rnaseq``), with
  groups from a sample table (``samples`` + ``condition``) or from cohorts
  (``case_cohort`` and optionally ``control_cohort``: definitions, see
  :func:`medlake.service.cohort.load_definition`). With a case cohort only, the controls
  are every other linked RNA-seq sample. Samples are taken per person (the latest
  collected, so no person counts twice); a person in both cohorts is left out.

Each run writes ``PREFIX.de.tsv`` (gene_id + baseMean, log2FoldChange, lfcSE, stat,
pvalue, padj; ``NA`` where DESeq2 gives NA), ``PREFIX.de.parquet`` and the volcano and
MA plots (``PREFIX.volcano.png/.html``, ``PREFIX.ma.png/.html``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from medlake.access import Permission
from medlake.cohort.model import CohortDefinition
from medlake.config import open_workspace
from medlake.errors import InputError, UsageError
from medlake.log import get_logger
from medlake.omics.expression import (
    DESEQ_STEPS,
    RESULT_COLUMNS,
    CountData,
    DEDesign,
    DEResult,
    align,
    read_counts_file,
    read_counts_parquet,
    read_sample_table,
    run_deseq,
    write_plots,
)
from medlake.service.cohort import load_definition, members_for_service, parse_definition
from medlake.service.policy import authorized, record_read, require
from medlake.service.workspace import open_lake

RNASEQ_ASSAY = "rnaseq"
# The demo's comparison: persons with type 2 diabetes diagnosed (ICD-10-CM E11 and below)
# against every other RNA-sequenced person, the contrast the synthetic hospital plants.
T2D_DIAGNOSED: dict[str, object] = {
    "name": "type 2 diabetes diagnosed",
    "concept_sets": [
        {
            "id": 1,
            "name": "type 2 diabetes",
            "items": [
                {"vocabulary_id": "ICD10CM", "concept_code": "E11", "include_descendants": True}
            ],
        }
    ],
    "primary_criteria": {
        "criteria": [{"domain": "condition_occurrence", "codeset_id": 1, "first": True}],
        "limit": "first",
    },
}
COHORT_CONDITION = "cohort"  # the condition column made from case/control cohorts
CASE, CONTROL = "case", "control"

log = get_logger(__name__)


@dataclass
class DEReport:
    """What a run did: the results, the files written and how long each step took."""

    result: DEResult
    files: dict[str, Path] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def table(self) -> pd.DataFrame:
        return self.result.table

    def as_dict(self) -> dict[str, object]:
        r = self.result
        return {
            "design": r.design.formula(),
            "contrast": [r.design.condition, r.case, r.control],
            "samples": {"case": r.n_case, "control": r.n_control},
            "dropped": r.dropped,
            "genes": len(r.table),
            "genes_tested": int(r.table["pvalue"].notna().sum()),
            "significant": r.n_significant,
            "alpha": r.design.alpha,
            "files": {k: str(v) for k, v in self.files.items()},
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
        }


def run_de(
    *,
    out: Path | None,
    counts: Path | None = None,
    samples: Path | None = None,
    condition: str | None = None,
    case: str | None = None,
    control: str | None = None,
    covariates: tuple[str, ...] | list[str] = (),
    workspace_dir: Path | None = None,
    case_cohort: Path | CohortDefinition | None = None,
    control_cohort: Path | CohortDefinition | None = None,
    alpha: float = 0.05,
    n_cpus: int = 1,
    plots: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> DEReport:
    """Run DE in the mode the arguments name (see the module docstring); write outputs
    under ``out`` (a path prefix) unless it is ``None``.

    ``progress(done, total)`` is called after reading, after each step of the fit and
    after writing; an exception it raises (a cancelled job's
    :class:`~medlake.errors.JobCancelledError`) propagates and leaves no output file.
    """
    if case_cohort is not None or counts is None:  # reads the lake: an analysis in a project
        require(workspace_dir, Permission.ANALYZE)
    if not 0 < alpha < 1:
        raise UsageError(f"alpha must be between 0 and 1, got {alpha}")
    if workspace_dir is not None or counts is None:
        from medlake.service.mirror import refuse_if_frozen

        refuse_if_frozen(workspace_dir)  # a workspace's analysis: its outputs are writes
    timings: dict[str, float] = {}
    started = time.perf_counter()
    covariates = tuple(covariates)
    if case_cohort is not None:
        if counts is not None:
            raise UsageError("cohorts pick samples registered in the lake: drop --counts")
        data = _cohort_data(workspace_dir, case_cohort, control_cohort, samples, covariates)
        design = DEDesign(COHORT_CONDITION, CASE, CONTROL, covariates, alpha)
    else:
        if samples is None or condition is None:
            raise UsageError("give --samples and --condition (or --case-cohort)")
        table = read_sample_table(samples)
        if counts is not None:
            matrix = read_counts_file(counts)
            source = str(counts)
        else:
            matrix = _registered_counts(workspace_dir, list(table.index))
            source = "registered RNA-seq"
        data = align(matrix, table, condition, list(covariates), source=str(samples))
        if not len(data.counts):
            raise InputError(f"no sample of {samples} is in {source}")
        design = DEDesign(condition, case, control, covariates, alpha)
    timings["read"] = time.perf_counter() - started
    total = 1 + DESEQ_STEPS + (out is not None)  # read, fit and tests, write

    def report_progress(done: int) -> None:
        if progress is not None:
            progress(done, total)

    report_progress(1)
    started = time.perf_counter()
    result = run_deseq(data, design, n_cpus=n_cpus,
                       progress=lambda done, _steps: report_progress(1 + done))  # fmt: skip
    timings["deseq2"] = time.perf_counter() - started
    report = DEReport(result, timings=timings)
    if out is not None:
        started = time.perf_counter()
        report.files = write_outputs(result, out, plots=plots)
        timings["write"] = time.perf_counter() - started
        try:
            report_progress(total)
        except BaseException:  # cancelled at the last moment: no output stays
            for path in report.files.values():
                path.unlink(missing_ok=True)
            raise
    log.info("DE: %d genes, %d significant", len(result.table), result.n_significant)
    return report


@authorized(Permission.ANALYZE)
def run_demo_de(workspace_dir: Path, out: Path, *, n_cpus: int = 1) -> DEReport:
    """The demo's DE: type 2 diabetes diagnosed vs every other RNA-seq sample, on the lake.

    Writes ``out`` + ``.de.tsv``/``.de.parquet``/``.volcano.*``/``.ma.*``.
    """
    definition = parse_definition(T2D_DIAGNOSED, source="T2D_DIAGNOSED")
    return run_de(out=out, workspace_dir=workspace_dir, case_cohort=definition, n_cpus=n_cpus)


def write_outputs(result: DEResult, out: Path, *, plots: bool = True) -> dict[str, Path]:
    """The results table as TSV and Parquet, and (with ``plots``) the four plot files."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    files = {
        "tsv": out.with_name(f"{out.name}.de.tsv"),
        "parquet": out.with_name(f"{out.name}.de.parquet"),
    }
    table = result.table.reset_index()
    try:
        table.to_csv(files["tsv"], sep="\t", index=False, na_rep="NA", float_format="%.10g")
        pq.write_table(pa.Table.from_pandas(table, preserve_index=False), files["parquet"])
        if plots:
            design = result.design
            title = f"{design.condition}: {result.case} vs {result.control}"
            for path in write_plots(result.table, out, alpha=design.alpha, title=title):
                files[path.name.removeprefix(out.name + ".")] = path
    except BaseException:  # no half-written set of outputs
        plot_files = [out.with_name(f"{out.name}.{k}")
                      for k in ("volcano.png", "volcano.html", "ma.png", "ma.html")]  # fmt: skip
        for path in [*files.values(), *plot_files]:
            path.unlink(missing_ok=True)
        raise
    return files


# ---------------------------------------------------------------------- the lake


def _rnaseq_registry(workspace_dir: Path | None) -> tuple[Path, pd.DataFrame]:
    """(omics dir, registered RNA-seq samples: sample_id, file_uri, person_id, date)."""
    workspace = open_workspace(workspace_dir)
    with open_lake(workspace) as engine:
        registry = engine.table("omics_sample")
        rows = engine.execute(
            registry.filter(registry.assay == RNASEQ_ASSAY).select(
                "sample_id", "file_uri", "person_id", "collected_date"
            )
        ).to_pandas()
    if rows.empty:
        raise InputError(f"{workspace.root}: no RNA-seq samples are registered (ingest counts)")
    return workspace.omics_dir, rows


def _read_registered(omics_dir: Path, rows: pd.DataFrame) -> pd.DataFrame:
    """Counts of the registered samples in ``rows`` (samples × genes, common genes)."""
    frames = [
        read_counts_parquet(omics_dir / uri, list(group["sample_id"]))
        for uri, group in rows.groupby("file_uri", sort=True)
    ]
    if len(frames) == 1:
        return frames[0]
    genes = frames[0].columns
    for frame in frames[1:]:
        genes = genes.intersection(frame.columns, sort=False)
    if not len(genes):
        raise InputError("the registered RNA-seq matrices share no gene")
    return pd.concat([f.loc[:, genes] for f in frames])


def _registered_counts(workspace_dir: Path | None, wanted: list[str]) -> pd.DataFrame:
    omics_dir, rows = _rnaseq_registry(workspace_dir)
    rows = rows[rows["sample_id"].isin(wanted)]
    if rows.empty:
        raise InputError("no sample of the sample table is a registered RNA-seq sample")
    return _read_registered(omics_dir, rows)


def _persons(workspace_dir: Path | None, cohort: Path | CohortDefinition) -> set[int]:
    definition = load_definition(cohort) if isinstance(cohort, Path) else cohort
    members = members_for_service(workspace_dir, definition)
    return set(members.column("person_id").to_pylist())


def cohort_groups(
    registry: pd.DataFrame, cases: set[int], controls: set[int] | None
) -> tuple[pd.DataFrame, dict[str, int]]:
    """One sample per person (latest collected) labelled case/control; and what was left out.

    ``controls`` ``None``: every linked person not a case is a control.
    """
    dropped: dict[str, int] = {}
    linked = registry[registry["person_id"].notna()].copy()
    if len(linked) < len(registry):
        dropped["sample not linked to a person"] = len(registry) - len(linked)
    linked["person_id"] = linked["person_id"].astype(np.int64)
    linked = linked.sort_values(["person_id", "collected_date", "sample_id"], na_position="first")
    latest = linked.drop_duplicates("person_id", keep="last")
    if len(latest) < len(linked):
        dropped["earlier sample of the same person"] = len(linked) - len(latest)
    in_case = latest["person_id"].isin(list(cases))
    in_control = ~in_case if controls is None else latest["person_id"].isin(list(controls))
    both = in_case & in_control
    if both.any():
        dropped["person in both cohorts"] = int(both.sum())
    neither = ~in_case & ~in_control
    if neither.any():
        dropped["person in neither cohort"] = int(neither.sum())
    chosen = latest[in_case ^ in_control]
    label = np.where(chosen["person_id"].isin(list(cases)), CASE, CONTROL)
    groups = pd.DataFrame(
        {COHORT_CONDITION: label, "file_uri": chosen["file_uri"].to_numpy()},
        index=pd.Index(chosen["sample_id"].astype(str), name="sample_id"),
    )
    return groups, dropped


def _cohort_data(
    workspace_dir: Path | None,
    case_cohort: Path | CohortDefinition,
    control_cohort: Path | CohortDefinition | None,
    samples: Path | None,
    covariates: tuple[str, ...],
) -> CountData:
    omics_dir, registry = _rnaseq_registry(workspace_dir)
    cases = _persons(workspace_dir, case_cohort)
    controls = _persons(workspace_dir, control_cohort) if control_cohort is not None else None
    groups, dropped = cohort_groups(registry, cases, controls)
    if groups.empty:
        raise InputError("no registered RNA-seq sample belongs to the cohorts")
    chosen = registry[registry["sample_id"].astype(str).isin(groups.index)]
    with open_lake(open_workspace(workspace_dir)) as engine:  # the persons whose data it reads
        record_read(engine, "de", "cohorts", person_ids=chosen["person_id"].astype(int).tolist())
    table = groups[[COHORT_CONDITION]]
    if covariates:
        if samples is None:
            raise UsageError("covariates come from a sample table: give --samples")
        extra = read_sample_table(samples)
        table = table.join(extra.drop(columns=[COHORT_CONDITION], errors="ignore"), how="left")
    rows = groups.reset_index()[["sample_id", "file_uri"]]
    matrix = _read_registered(omics_dir, rows)
    data = align(matrix, table, COHORT_CONDITION, list(covariates), source="sample table")
    data.dropped = {**dropped, **data.dropped}
    return data


__all__ = [
    "RESULT_COLUMNS",
    "T2D_DIAGNOSED",
    "DEReport",
    "cohort_groups",
    "run_de",
    "run_demo_de",
    "write_outputs",
]
