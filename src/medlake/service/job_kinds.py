"""The kinds of background job the server runs, each a thin adapter over one service:
ingest of uploaded files, lake GWAS, cohort DE, cohort extraction, a QC run, and the
EMPI link that live ingests queue (:mod:`medlake.service.live_link`).

Each kind checks its parameters when submitted (so a bad request is refused at once,
not found failed later), names the permission its submitter needs, and turns the
service's result into JSON with the files it wrote (under the job's folder).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from medlake.access import Permission
from medlake.errors import UsageError
from medlake.service.jobs import JobContext, JobKind, register_kind

MAX_NAME = 64


def _name(params: dict[str, Any], default: str) -> str:
    name = str(params.get("name") or default)
    if not name.replace("_", "").replace("-", "").isalnum() or len(name) > MAX_NAME:
        raise UsageError(f"name: {name!r} must be letters, digits, '-' or '_' (at most 64)")
    return name


def _definition(params: dict[str, Any], key: str) -> Any:
    from medlake.service.cohort import parse_definition

    value = params.get(key)
    return None if value is None else parse_definition(value, source=key)


def _files(files: dict[str, Any]) -> dict[str, str]:
    return {str(k): str(v) for k, v in files.items()}


# ---------------------------------------------------------------------- ingest


def _validate_ingest(params: dict[str, Any]) -> None:
    paths = params.get("paths")
    if not isinstance(paths, list) or not paths or not all(isinstance(p, str) for p in paths):
        raise UsageError("paths: a non-empty list of files")


def _ingest(job: JobContext) -> dict[str, Any]:
    from medlake.service.ingest import ingest_paths

    def progress(event: Any) -> None:
        job.progress(event.index + (1 if event.done else 0), event.total)

    options = {}
    if params_mapping := job.params.get("mapping"):
        options["mapping"] = Path(params_mapping)
    report = ingest_paths(
        job.workspace,
        [Path(p) for p in job.params["paths"]],
        format=job.params.get("format"),
        source_system=job.params.get("source_system"),
        options=options,
        progress=progress,
    )
    return report.as_dict()


# ---------------------------------------------------------------------- GWAS


def _validate_gwas(params: dict[str, Any]) -> None:
    from medlake.service.gwas_lake import LakePhenotype

    _name(params, "gwas")
    LakePhenotype(
        name=_name(params, "gwas"),
        case_cohort=_definition(params, "case_cohort"),
        control_cohort=_definition(params, "control_cohort"),
        measurement=params.get("measurement"),
    )
    n_pcs = params.get("n_pcs", 4)
    if not isinstance(n_pcs, int) or not 0 <= n_pcs <= 20:
        raise UsageError("n_pcs: an integer from 0 to 20")


def _gwas(job: JobContext) -> dict[str, Any]:
    from medlake.service.gwas_lake import LakePhenotype, run_gwas_lake

    p = job.params
    phenotype = LakePhenotype(
        name=_name(p, "gwas"),
        case_cohort=_definition(p, "case_cohort"),
        control_cohort=_definition(p, "control_cohort"),
        measurement=p.get("measurement"),
        start=dt.date.fromisoformat(p["start"]) if p.get("start") else None,
        end=dt.date.fromisoformat(p["end"]) if p.get("end") else None,
        inverse_normal=bool(p.get("inverse_normal", False)),
    )
    run = run_gwas_lake(job.workspace.root, phenotype, job.out_dir / phenotype.name,
                        n_pcs=int(p.get("n_pcs", 4)), progress=job.progress)  # fmt: skip
    summary = run.as_dict()
    summary["files"] = _files(run.files)
    return summary


# ---------------------------------------------------------------------- DE


def _validate_de(params: dict[str, Any]) -> None:
    _name(params, "de")
    if params.get("case_cohort") is None:
        raise UsageError("case_cohort: a cohort definition is required")
    _definition(params, "case_cohort")
    _definition(params, "control_cohort")
    alpha = params.get("alpha", 0.05)
    if not isinstance(alpha, int | float) or not 0 < alpha < 1:
        raise UsageError("alpha: a number between 0 and 1")


def _de(job: JobContext) -> dict[str, Any]:
    from medlake.service.de import run_de

    p = job.params
    job.progress(0, 2)
    report = run_de(out=job.out_dir / _name(p, "de"), workspace_dir=job.workspace.root,
                    case_cohort=_definition(p, "case_cohort"),
                    control_cohort=_definition(p, "control_cohort"),
                    alpha=float(p.get("alpha", 0.05)))  # fmt: skip
    job.progress(2, 2)
    summary = report.as_dict()
    summary["files"] = _files(report.files)
    return summary


# ---------------------------------------------------------------------- extraction


def _validate_extract(params: dict[str, Any]) -> None:
    from medlake.service.extract_spec import parse_feature_spec

    if params.get("definition") is None:
        raise UsageError("definition: a cohort definition is required")
    _definition(params, "definition")
    parse_feature_spec(params.get("features"), source="features")


def _extract(job: JobContext) -> dict[str, Any]:
    from medlake.service.extract import extract_cohort
    from medlake.service.extract_spec import parse_feature_spec

    job.progress(0, 1)
    result = extract_cohort(job.workspace.root, _definition(job.params, "definition"),
                            parse_feature_spec(job.params["features"], source="features"),
                            job.out_dir / "extract", actor=job.user)  # fmt: skip
    job.progress(1, 1)
    summary = result.as_dict()
    summary["files"] = {name: str(result.out_dir / name) for name in result.files}
    return summary


# ---------------------------------------------------------------------- QC


def _validate_qc(params: dict[str, Any]) -> None:
    tables = params.get("tables")
    if tables is not None and not (
        isinstance(tables, list) and all(isinstance(t, str) for t in tables)
    ):
        raise UsageError("tables: a list of table names")


def _qc(job: JobContext) -> dict[str, Any]:
    from medlake.service.quality import qc_summary, run_qc

    run = run_qc(job.workspace, trigger="api", tables=job.params.get("tables"),
                 progress=job.progress)  # fmt: skip
    return qc_summary(job.workspace, run.run_id)


# ---------------------------------------------------------------------- EMPI link


def _empi_link(job: JobContext) -> dict[str, Any]:
    # Queued by live ingests (a Bundle POSTed, a listener flush): medlake.service.live_link.
    from medlake.service.live_link import run_link_job

    return run_link_job(job)


KINDS = (
    JobKind("ingest", Permission.INGEST, _ingest, _validate_ingest),
    JobKind("empi_link", Permission.INGEST, _empi_link),
    JobKind("gwas", Permission.ANALYZE, _gwas, _validate_gwas),
    JobKind("de", Permission.ANALYZE, _de, _validate_de),
    JobKind("extract", Permission.EXPORT, _extract, _validate_extract),
    JobKind("qc", Permission.RUN_QC, _qc, _validate_qc),
)
for _kind in KINDS:
    register_kind(_kind)
