"""Getting data in over HTTP: file uploads (ingested by a background job) and FHIR
transaction Bundles (ingested at once, answered with a transaction-response Bundle)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Body, File, Form, Query, UploadFile

from medlake.access import Permission, Principal
from medlake.config import open_workspace
from medlake.errors import UsageError
from medlake.server.deps import CurrentUser, Jobs, LiveLinksDep, WorkspaceDir, require
from medlake.server.routers.jobs import Job, present
from medlake.service import jobs as job_service
from medlake.service.fhir_transaction import post_bundle
from medlake.service.jobs import JobRunner

router = APIRouter(tags=["ingest"])

MAX_FILES = 1000
_CHUNK = 1 << 20
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _safe_name(name: str | None, n: int) -> str:
    base = _SAFE.sub("_", os.path.basename(name or "")).lstrip(".")
    return base[:200] or f"upload-{n}"


def _safe_relative(name: str | None, n: int) -> Path:
    """The client's file name as a relative path of safe parts (a folder upload sends
    ``emr/Patient.ndjson``: the folder names the source system, as in ``medlake ingest``);
    never absolute, never ``..``, at most four parts deep."""
    parts = [_SAFE.sub("_", p).lstrip(".")[:100] for p in re.split(r"[/\\]+", name or "")]
    parts = [p for p in parts if p][-4:]
    return Path(*parts) if parts else Path(f"upload-{n}")


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
    mapping: Annotated[
        UploadFile | None,
        File(description="A mapping file (TOML) for CSV or Excel files (docs/ingest.md)."),
    ] = None,
) -> Job:
    """Store the uploaded files (fsync'd) and queue a job that lands and ingests them."""
    return present(store_upload(root, user, jobs, files, format=format,
                                source_system=source_system, mapping=mapping))  # fmt: skip


def _store(upload: UploadFile, target: Path) -> None:
    with target.open("wb") as out:
        while chunk := upload.file.read(_CHUNK):
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())


def store_upload(
    root: Path,
    user: Principal,
    jobs: JobRunner,
    files: list[UploadFile],
    *,
    format: str | None = None,
    source_system: str | None = None,
    mapping: UploadFile | None = None,
) -> dict[str, Any]:
    """Check ``ingest``, store ``files`` (and the mapping file, apart from them) under the
    new job's ``upload/`` folder and queue its ingest job; the API's and the web UI's
    upload share this."""
    require(root, user, Permission.INGEST)
    files = [f for f in files if f.filename]  # a browser sends an empty part for no file
    if not files or len(files) > MAX_FILES:
        raise UsageError(f"files: send 1 to {MAX_FILES} files")
    if mapping is not None and not mapping.filename:
        mapping = None
    workspace = open_workspace(root)
    job_id = job_service.new_job_id()
    folder = job_service.job_dir(workspace, job_id) / "upload"
    folder.mkdir(parents=True)
    paths = []
    for n, upload in enumerate(files, 1):
        target = folder / _safe_relative(upload.filename, n)
        if target.exists():
            target = target.with_name(f"{n}-{target.name}")
        target.parent.mkdir(parents=True, exist_ok=True)
        _store(upload, target)
        paths.append(str(target))
    params: dict[str, Any] = {"paths": paths, "format": format or None,
                              "source_system": source_system or None}  # fmt: skip
    if mapping is not None:  # beside the folder, so it is not ingested as data
        target = folder.parent / f"mapping-{_safe_name(mapping.filename, 0)}"
        _store(mapping, target)
        params["mapping"] = str(target)
    return jobs.submit("ingest", params, principal=user, job_id=job_id)


@router.post("/fhir")
def post_fhir_bundle(
    root: WorkspaceDir,
    user: CurrentUser,
    links: LiveLinksDep,
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
    # The EMPI link after ingest runs as one background job once Bundles stop coming for
    # [empi] live_link_delay_seconds, not inline on every Bundle (27 s at 1M records).
    return post_bundle(root, bundle, source_system=source,
                       link_later=lambda: links.request(user))  # fmt: skip
