"""The ransomware watch inside a real ``medlake serve``: an attacker encrypting landed
files gets the workspace frozen, and the API then refuses writes with a problem document
(423) while it still answers reads; ``medlake watch clear`` cannot open the lake the
server holds and says to clear it through the server, where an admin's
``POST /protect/watch/clear`` lifts it (audited) and writes work again."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from tests.serve_process import start_medlake_serve

from medlake.audit.query import EventFilter
from medlake.config import open_workspace, write_settings
from medlake.ingest.landing_mirror import landed_names
from medlake.service import access, audit, watch


def _bundle(patient: str) -> dict[str, object]:
    name = [{"family": "Test", "given": ["Watch"]}]
    resource = {"resourceType": "Patient", "id": patient, "gender": "female",
                "birthDate": "1970-03-04", "name": name}  # fmt: skip
    entry = {"fullUrl": f"urn:uuid:{patient}", "request": {"method": "POST", "url": "Patient"},
             "resource": resource}  # fmt: skip
    return {"resourceType": "Bundle", "type": "transaction", "entry": [entry]}


def _encrypt(path: Path) -> None:
    """What ransomware does to a file: random-looking bytes under a ransom extension."""
    data = path.read_bytes()
    path.with_name(path.name + ".locked").write_bytes(os.urandom(len(data)))
    path.unlink()


def _wait(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.mark.slow
def test_watch_in_serve_freezes_the_workspace_and_the_api_refuses_writes(
    hospital_lake,
    tmp_path: Path,
) -> None:
    root = hospital_lake.copy(tmp_path / "ws")
    workspace = open_workspace(root)
    settings = workspace.settings.model_copy(deep=True)
    settings.watch.interval_seconds = 0.5
    write_settings(workspace.settings_file, settings)
    token = access.issue_token(root, access.login_name()).token
    headers = {"Authorization": f"Bearer {token}"}
    http = httpx.Client(timeout=120)  # a loaded machine answers slowly; not what is tested
    server = start_medlake_serve(root)
    base = server.api
    try:
        written = http.post(f"{base}/fhir?source=watchtest", json=_bundle("w1"), headers=headers)
        assert written.status_code == 200, written.text
        time.sleep(2)  # the watch's baseline scan is done

        landing = workspace.landing_dir
        victims = sorted(landed_names(landing))[:5]
        for name in victims:  # the attacker, as fast as it can
            _encrypt(landing / name[:2] / name)
        _wait(lambda: watch.freeze_status(root) is not None, 60, "the freeze")
        record = watch.freeze_status(root)
        assert record is not None
        assert record["reason"]  # e.g. "1 immutable rewrites within 60 s"
        # It names the attacked files (each removed original and its .locked copy), no other.
        named = {Path(str(f["path"])).name.removesuffix(".locked") for f in record["files"]}
        assert named <= set(victims)
        assert named

        refused = http.post(f"{base}/fhir?source=watchtest", json=_bundle("w2"), headers=headers)
        assert refused.status_code == 423, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        problem = refused.json()
        assert problem["status"] == 423
        assert "frozen read-only" in problem["detail"]
        assert "medlake watch clear" in problem["detail"]
        assert http.get(f"{base}/lake", headers=headers).status_code == 200  # reads go on
        assert "/api/v1/protect/watch/clear" in problem["detail"]

        # The server holds the lake (DuckDB: one process): the CLI says to clear it there.
        refused_cli = subprocess.run(
            [sys.executable, "-m", "medlake.cli.main", "watch", "clear", "--note",
             "test: reviewed", "--workspace", str(root)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        said = " ".join((refused_cli.stdout + refused_cli.stderr).split())
        assert refused_cli.returncode != 0
        assert "/api/v1/protect/watch/clear" in said, said
        assert "dashboard" in said, said
        assert workspace.freeze_file.exists()  # nothing cleared

        # The admin clears it through the running server (audited); writes work again.
        seen = http.get(f"{base}/protect/watch", headers=headers).json()
        assert seen["frozen"]
        assert seen["reason"] == record["reason"]
        note = "test: reviewed, landing restored from the mirror"
        cleared = http.post(f"{base}/protect/watch/clear", json={"note": note}, headers=headers)
        assert cleared.status_code == 200, cleared.text
        assert cleared.json()["since"] == record["since"]
        assert not workspace.freeze_file.exists()
        again = http.post(f"{base}/fhir?source=watchtest", json=_bundle("w3"), headers=headers)
        assert again.status_code == 200, again.text
        assert not http.get(f"{base}/protect/watch", headers=headers).json()["frozen"]
    finally:
        http.close()
        server.stop()
    events = audit.show_events(root, EventFilter(action="watch.clear"))
    assert [(e["actor"], e["detail"]["note"]) for e in events] == [(access.login_name(), note)]


def test_the_watch_is_off_in_serve_when_the_setting_says_so(tmp_path: Path) -> None:
    from medlake.service.watch import with_background_watch
    from medlake.service.workspace import init_workspace

    workspace = init_workspace(tmp_path / "ws")
    settings = workspace.settings.model_copy(deep=True)
    settings.watch.in_serve = False
    write_settings(workspace.settings_file, settings)

    def lifespan(app: object) -> object:
        return app

    assert with_background_watch(lifespan, open_workspace(workspace.root)) is lifespan
    assert with_background_watch(lifespan, workspace) is not lifespan  # on by default
