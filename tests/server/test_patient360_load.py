"""Patient 360 over HTTP on a real ``medlake serve``: many concurrent readers, one audit
chain with each read in it exactly once; a refused read audited once; the JSON the same
as FastAPI's own encoding of the service's timeline (which the route no longer runs)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb
import httpx
import pytest
from fastapi.encoders import jsonable_encoder
from tests.serve_process import medlake_serve
from tests.server.conftest import make_users

from medlake.access import Principal, Role
from medlake.access.context import acting_as
from medlake.service.audit import verify_trail
from medlake.service.patient360 import person_timeline


def _events(root: Path) -> list[tuple[str, str, str | None, str | None]]:
    con = duckdb.connect(str(root / "lake.duckdb"), read_only=True)
    try:
        return con.execute(
            "select actor, outcome, object_id, detail from audit_event order by event_id"
        ).fetchall()
    finally:
        con.close()


@pytest.mark.slow
def test_concurrent_timelines_are_each_audited_once_and_a_refusal_once(
    hospital_lake, tmp_path: Path
) -> None:
    root = hospital_lake.copy(tmp_path / "ws")
    tokens = make_users(root)
    con = duckdb.connect(str(root / "lake.duckdb"), read_only=True)
    persons = [p for (p,) in con.execute(
        "select person_id from measurement group by 1 order by count(*) desc, 1 limit 6"
    ).fetchall()]  # fmt: skip
    con.close()
    before = len(_events(root))
    steward = {"Authorization": f"Bearer {tokens['steward']}"}
    researcher = {"Authorization": f"Bearer {tokens['researcher']}"}
    requests = [persons[n % len(persons)] for n in range(48)]
    with medlake_serve(root) as server, httpx.Client(base_url=server.api, timeout=120) as http:
        refused = http.get(f"/persons/{persons[0]}/timeline?notes=true", headers=researcher)
        assert refused.status_code == 403, refused.text

        def read(person: int) -> dict:
            response = http.get(f"/persons/{person}/timeline", headers=steward)
            assert response.status_code == 200, response.text
            assert response.headers["content-type"] == "application/json"
            return response.json()

        with ThreadPoolExecutor(max_workers=12) as pool:
            bodies = list(pool.map(read, requests))
    result = verify_trail(root)
    assert result.ok, result.findings
    events = _events(root)[before:]
    assert [e[1] for e in events if e[0] == "researcher1"] == ["denied"]  # audited once
    reads = [int(e[2]) for e in events if e[0] == "steward1" and e[1] == "ok"]
    assert sorted(reads) == sorted(requests)  # every read in the trail, exactly once

    # same person, same timeline, whichever request served it
    first = {body["person_id"]: body for body in reversed(bodies)}
    assert all(body == first[body["person_id"]] for body in bodies)
    # the body is what FastAPI's encoder made of the service's timeline before
    with acting_as(Principal("steward1", Role.STEWARD)):
        for person in persons:
            timeline = person_timeline(root, person).as_dict()
            assert first[person] == json.loads(json.dumps(jsonable_encoder(timeline)))
