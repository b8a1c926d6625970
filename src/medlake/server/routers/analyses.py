"""GWAS and differential expression as background jobs, and their results as JSON: top
hits, and the points of the Manhattan, QQ and volcano plots (the same data the web UI's
analysis page draws, from the same functions)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from medlake.access import Permission
from medlake.errors import NotFoundError
from medlake.server.deps import CurrentUser, Jobs, WorkspaceDir, require
from medlake.server.routers.jobs import Job, present
from medlake.service import jobs as job_service

router = APIRouter(prefix="/analyses", tags=["analyses"])

Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
Definition = Annotated[dict[str, Any], Field(description="a medlake cohort definition (JSON)")]


class GwasRequest(BaseModel):
    """A case/control pair of cohorts, or a measurement (LOINC code or concept id)."""

    model_config = ConfigDict(extra="forbid")

    project_id: str = Field(max_length=64, description="the project the analysis is for")
    name: Name = "gwas"
    measurement: str | int | None = Field(None, description="e.g. LOINC 13457-7 (LDL)")
    case_cohort: Definition | None = None
    control_cohort: Definition | None = None
    inverse_normal: bool = False
    n_pcs: int = Field(4, ge=0, le=20, description="genotype principal components")


class DeRequest(BaseModel):
    """RNA-seq samples of a case cohort against a control cohort (else all others)."""

    model_config = ConfigDict(extra="forbid")

    project_id: str = Field(max_length=64)
    name: Name = "de"
    case_cohort: Definition
    control_cohort: Definition | None = None
    alpha: float = Field(0.05, gt=0, lt=1)


def _submit(jobs: Any, user: Any, kind: str, request: BaseModel) -> Job:
    params = request.model_dump(exclude={"project_id"}, exclude_none=True)
    project = getattr(request, "project_id")  # noqa: B009
    return present(jobs.submit(kind, params, principal=user, project_id=project))


@router.post("/gwas", status_code=202, response_model=Job)
def submit_gwas(user: CurrentUser, jobs: Jobs, request: GwasRequest) -> Job:
    """Queue a GWAS on the lake's genotypes (adjusted for age, sex and PCs)."""
    return _submit(jobs, user, "gwas", request)


@router.post("/de", status_code=202, response_model=Job)
def submit_de(user: CurrentUser, jobs: Jobs, request: DeRequest) -> Job:
    """Queue a differential-expression analysis (PyDESeq2) between two cohorts."""
    return _submit(jobs, user, "de", request)


@router.get("/{job_id}/plots")
def get_analysis_plots(
    root: WorkspaceDir,
    user: CurrentUser,
    job_id: str,
    top: Annotated[int, Query(ge=1, le=1000, description="How many top hits.")] = 25,
) -> dict[str, Any]:
    """A finished GWAS (Manhattan, QQ, lambda, top hits) or DE (volcano, top genes):
    plot points thinned to at most 20,000 (every P < 1e-3 kept)."""
    from medlake.server.ui.analyses import de_plots, gwas_plots

    job = job_service.get_job(root, job_id, principal=user)
    if job["kind"] not in ("gwas", "de"):
        raise NotFoundError(f"job {job_id!r} is a {job['kind']} job, not an analysis")
    require(root, user, Permission.ANALYZE, job["project_id"])
    if job["status"] != "succeeded":
        raise NotFoundError(f"job {job_id!r} has no result: it is {job['status']}")
    suffix = ".glm.parquet" if job["kind"] == "gwas" else ".de.parquet"
    files = [Path(f) for f in (job["result"].get("files") or {}).values()]
    parquet = next((f for f in files if f.name.endswith(suffix) and f.is_file()), None)
    if parquet is None:
        raise NotFoundError(f"job {job_id!r}: its result file is gone")
    plots = gwas_plots(parquet) if job["kind"] == "gwas" else de_plots(parquet)
    plots["top"] = _top(parquet, job["kind"], top) if top != 25 else plots["top"]
    return _finite({"job_id": job_id, "kind": job["kind"], "summary": job["result"]} | plots)


def _top(parquet: Path, kind: str, n: int) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    frame = pq.read_table(parquet).to_pandas()
    key = ["p"] if kind == "gwas" else ["padj", "pvalue"]
    return frame.sort_values(key).head(n).to_dict(orient="records")  # type: ignore[no-any-return]


def _finite(value: Any) -> Any:
    """NaN and infinities (a variant without a P) as null: JSON has no such numbers."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if hasattr(value, "item"):  # numpy scalars
        return _finite(value.item())
    return value
