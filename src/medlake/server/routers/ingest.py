"""Getting data in over HTTP: file uploads (ingested by a background job) and FHIR
transaction Bundles (ingested at once, answered with a transaction-response Bundle)."""

from __future__ import annotations

import os
import re
from typing import Annotated, Any

from fastapi import APIRouter, Body, File, Form, Query, UploadFile

from medlake.access import Permission
from medlake.config import open_workspace
from medlake.errors import UsageError
from medlake.server.deps import CurrentUser, Jobs, WorkspaceDir, require
from medlake.server.routers.jobs import Job, present
from medlake.service import jobs as job_service
from medlake.service.fhir_transaction import post_bundle

router = APIRouter(tags=["ingest"])

MAX_FILES = 1000
_CHUNK = 1 << 20
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _safe_name(name: str | None, n: int) -> str:
    base = _SAFE.sub("_", os.path.basename(name or "")).lstrip(".")
    return base[:200] or f"upload-{n}"


@router.post("/uploads", status_code=202, response_model=Job)
def upload_files(
    root: WorkspaceDir,
    user: CurrentUser,
    jobs: Jobs,
    files: Annotated[list[UploadFile], File(description="The files to ingest.")],
    format: Annotated[str | None, Form(description="Their format (else detected).")] = None,
    source_system: Annotated[
        str | None, Form(max_length=50, description="Their source system (e.g. his, lis).")
    ] = None,
) -> Job:
    """Store the uploaded files (fsync'd) and queue a job that lands and ingests them."""
    require(root, user, Permission.INGEST)
    if not files or len(files) > MAX_FILES:
        raise UsageError(f"files: send 1 to {MAX_FILES} files")
    workspace = open_workspace(root)
    job_id = job_service.new_job_id()
    folder = job_service.job_dir(workspace, job_id) / "upload"
    folder.mkdir(parents=True)
    paths = []
    for n, upload in enumerate(files, 1):
        target = folder / _safe_name(upload.filename, n)
        if target.exists():
            target = folder / f"{n}-{target.name}"
        with target.open("wb") as out:
            while chunk := upload.file.read(_CHUNK):
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        paths.append(str(target))
    params: dict[str, Any] = {"paths": paths, "format": format, "source_system": source_system}
    return present(jobs.submit("ingest", params, principal=user, job_id=job_id))


@router.post("/fhir")
def post_fhir_bundle(
    root: WorkspaceDir,
    user: CurrentUser,
    bundle: Annotated[dict[str, Any], Body(description="A FHIR R4 transaction or batch Bundle.")],
    source: Annotated[
        str,
        Query(
            min_length=1,
            max_length=50,
            pattern=r"^[a-z0-9_-]+$",
            description="The source system the resources come from.",
        ),
    ] = "fhir",
) -> dict[str, Any]:
    """Ingest a Bundle now; answer a transaction-response Bundle, one entry per entry
    (201 Created with its location, or 422 with an OperationOutcome: quarantined)."""
    require(root, user, Permission.INGEST)
    return post_bundle(root, bundle, source_system=source)
