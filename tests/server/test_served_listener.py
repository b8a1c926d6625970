"""The HL7 v2 listener inside ``medlake serve``, against real server processes and a real
MLLP client over loopback: messages are acknowledged only once landed, ingested by the
server into the lake it serves (seen through its API), bad ones answered ``AE`` with the
reason and quarantined; a SIGKILL after ``AA`` loses nothing, a stop ingests what is
pending; ``medlake listen`` beside a server is refused with one line."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.ingest.test_mllp_listener import Client
from tests.serve_process import Served, free_port, start_medlake_serve

from medlake.access.context import acting_as
from medlake.config import open_workspace, write_settings
from medlake.service import access
from medlake.service.ingest import ingest_paths
from medlake.service.workspace import init_workspace, lake_summary

MESSAGE = (
    "MSH|^~\\&|LIS|LAB|MEDLAKE|HOSP|20240101080000||ORU^R01^ORU_R01|{control}|P|2.5\r"
    "PID|1||{patient}^^^LIS^PI||WANG^FANG\r"
    "OBR|1|PL{control}|F{control}|XCG^CBC^99LIS|||20240101070000\r"
    "OBX|1|NM|718-7^Hb^LN||{value}|g/L^^UCUM|115-175|N|||F\r"
)
#: Tables a listener's ingest writes, compared with an ingest of the same messages.
WRITTEN = ("measurement", "source_record", "source_patient", "quarantine",
           "observation_period", "ingest_batch")  # fmt: skip


def message(n: int, *, value: str | None = None, patient: str | None = None) -> bytes:
    text = MESSAGE.format(control=f"C{n}", patient=patient or f"P{n % 7}",
                          value=value or str(100 + n))  # fmt: skip
    return text.encode()


def make_workspace(root: Path, ingest_every: float) -> tuple[Path, int, dict[str, str]]:
    """A fresh workspace whose server listens on a free MLLP port; the admin's headers."""
    init_workspace(root, demo_vocabulary=False)
    settings = open_workspace(root).settings
    settings.empi.link_after_ingest = False  # no model to link with in an empty lake
    settings.listen.ingest_every_seconds = ingest_every
    write_settings(root / "medlake.toml", settings)
    token = access.issue_token(root, access.login_name()).token
    return root, free_port(), {"Authorization": f"Bearer {token}"}


def serve_with_listener(root: Path, mllp_port: int, log: str) -> Served:
    return start_medlake_serve(root, args=["--mllp-port", str(mllp_port)],
                               log=root.parent / log)  # fmt: skip


def send_all(port: int, payloads: list[bytes]) -> list[tuple[str, str, str]]:
    """Send each payload on one connection, waiting for each ACK: (MSA-1, MSA-2, MSA-3)."""
    client = Client(port)
    answers = []
    for payload in payloads:
        client.send(payload)
        msa = client.ack().segment("MSA")
        answers.append((str(msa(1)), str(msa(2)), str(msa(3)) if len(msa) > 3 else ""))
    client.close()
    return answers


def tables(served: Served, headers: dict[str, str]) -> dict[str, int]:
    response = httpx.get(f"{served.api}/lake", headers=headers, timeout=30)
    response.raise_for_status()
    return dict(response.json()["tables"])


def status_of(served: Served, headers: dict[str, str]) -> dict[str, Any]:
    response = httpx.get(f"{served.api}/listener", headers=headers, timeout=30)
    response.raise_for_status()
    return dict(response.json())


NOT_LISTENING = {"host": None, "port": None, "source_system": None,
                 "ingest_every_seconds": None, "landed": 0, "pending": 0}  # fmt: skip


def until(check: Callable[[], bool], served: Served, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert served.process.poll() is None, served.output()
        assert time.monotonic() < deadline, served.output()
        time.sleep(0.2)


def pending_lines(root: Path) -> int:
    return sum(len([line for line in f.read_text().split("\n") if line])
               for f in (root / "spool").glob("listen-lis.*"))  # fmt: skip


def reference_counts(root: Path, payloads: list[bytes]) -> dict[str, int]:
    """The same messages ingested as one HL7 file by a plain ingest run."""
    init_workspace(root, demo_vocabulary=False)
    settings = open_workspace(root).settings
    settings.empi.link_after_ingest = False
    write_settings(root / "medlake.toml", settings)
    bundle = root.parent / f"{root.name}.hl7"
    bundle.write_bytes(b"".join(p + b"\r\n" for p in payloads))
    with acting_as(access.login_name()):
        ingest_paths(root, [bundle], source_system="lis", format="hl7v2", person_order=False)
    return written(root)


def written(root: Path) -> dict[str, int]:
    """Rows of the :data:`WRITTEN` tables, read from the lake (no server running)."""
    counts = lake_summary(root).as_dict()["tables"]
    return {name: counts[name] for name in WRITTEN}


def test_messages_sent_to_the_server_are_acknowledged_then_served(tmp_path: Path) -> None:
    root, mllp_port, headers = make_workspace(tmp_path / "ws", ingest_every=0.3)
    good = [message(n) for n in range(40)]
    not_a_number = message(40, value="high")
    no_patient = message(41).replace(b"PID|1||P6^^^LIS^PI||WANG^FANG\r", b"")
    served = serve_with_listener(root, mllp_port, "serve.log")
    try:
        answers: dict[int, list[tuple[str, str, str]]] = {}
        workers = [threading.Thread(target=lambda k=k: answers.__setitem__(
            k, send_all(mllp_port, good[k::2]))) for k in range(2)]  # fmt: skip
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
        for k in range(2):  # every message acknowledged, in order, on its connection
            assert answers[k] == [("AA", f"C{n}", "") for n in range(k, 40, 2)]
        bad = send_all(mllp_port, [not_a_number, no_patient, b"not HL7 at all"])
        assert [code for code, _, _ in bad] == ["AE", "AE", "AE"]
        assert "'high' is not a number" in bad[0][2]
        assert "PID-3 has no patient identifier" in bad[1][2]
        assert "MSH" in bad[2][2]
        until(lambda: tables(served, headers)["quarantine"] == 2, served)
        seen = tables(served, headers)
        entries = httpx.get(f"{served.api}/quarantine", headers=headers, timeout=30).json()
        reasons = " | ".join(str(entry["reason"]) for entry in entries)
        assert "'high' is not a number" in reasons
        assert "PID-3 has no patient identifier" in reasons
        status = status_of(served, headers)
        assert status["listening"]
        assert (status["port"], status["source_system"]) == (mllp_port, "lis")
        assert (status["landed"], status["pending"]) == (42, 0)  # the garbage never landed
        assert f"HL7 v2 (MLLP) listener on 127.0.0.1:{mllp_port} for lis" in served.output()
    finally:
        served.stop()
    # What the server ingested equals a plain ingest of the messages it accepted (the
    # unparseable one is not landed, as before); one batch or several, the rows agree.
    expected = reference_counts(tmp_path / "reference", [*good, not_a_number, no_patient])
    for name in ("measurement", "source_record", "source_patient", "quarantine"):
        assert seen[name] == expected[name], (name, seen[name], expected[name])
    assert expected["measurement"] == 40
    assert pending_lines(root) == 0


def test_a_killed_server_ingests_what_it_acknowledged_at_its_next_start(
    tmp_path: Path,
) -> None:
    root, mllp_port, headers = make_workspace(tmp_path / "ws", ingest_every=3600)
    served = serve_with_listener(root, mllp_port, "first.log")
    try:
        answers = send_all(mllp_port, [message(n) for n in range(12)])
        assert [code for code, _, _ in answers] == ["AA"] * 12
        assert tables(served, headers)["measurement"] == 0  # no flush due for an hour
        assert status_of(served, headers)["pending"] == 12
    finally:
        served.stop(kill=True)  # SIGKILL right after the AAs: no shutdown runs
    assert pending_lines(root) == 12
    served = serve_with_listener(root, mllp_port, "second.log")
    try:
        until(lambda: tables(served, headers)["measurement"] == 12, served)
        assert pending_lines(root) == 0
    finally:
        served.stop()
    expected = reference_counts(tmp_path / "reference", [message(n) for n in range(12)])
    assert written(root) == expected


def test_stopping_the_server_ingests_the_pending_messages(tmp_path: Path) -> None:
    root, mllp_port, _ = make_workspace(tmp_path / "ws", ingest_every=3600)
    settings = open_workspace(root).settings
    settings.listen.port = mllp_port  # from medlake.toml this time, not --mllp-port
    write_settings(root / "medlake.toml", settings)
    served = start_medlake_serve(root, log=tmp_path / "serve.log")
    try:
        answers = send_all(mllp_port, [message(n) for n in range(9)])
        assert [code for code, _, _ in answers] == ["AA"] * 9
        assert pending_lines(root) == 9
    finally:
        served.stop()  # SIGTERM: the listener stops with the server
    assert "Application shutdown complete" in served.output()
    assert pending_lines(root) == 0
    expected = reference_counts(tmp_path / "reference", [message(n) for n in range(9)])
    assert written(root) == expected


def _medlake(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "medlake.cli.main", *args],
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


def test_listen_beside_a_server_is_refused_pointing_to_its_listener(tmp_path: Path) -> None:
    root, _, headers = make_workspace(tmp_path / "ws", ingest_every=5)
    served = start_medlake_serve(root)
    try:
        assert status_of(served, headers) == {"listening": False, **NOT_LISTENING}
        result = _medlake("listen", "--port", "0", "--workspace", str(root))
    finally:
        served.stop()
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "medlake serve --mllp-port" in lines[0]


def test_a_taken_mllp_port_stops_serve_with_one_line(tmp_path: Path) -> None:
    root, _, _ = make_workspace(tmp_path / "ws", ingest_every=5)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _medlake("serve", "--port", str(free_port()), "--mllp-port", str(port),
                          "--workspace", str(root))  # fmt: skip
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"MLLP port {port}" in lines[0]
    assert "in use" in lines[0]


@pytest.mark.slow
def test_patient_360_shows_a_result_sent_to_the_listener(
    hospital_lake: Any, tmp_path: Path
) -> None:
    """A new result for a patient the lake knows, sent over MLLP to the serving
    process, is in that person's patient 360 (the serving copy rebuilt after the write)
    and the EMPI link after the flush runs as one job of the server's runner."""
    from tests.server.conftest import make_users

    root = hospital_lake.copy(tmp_path / "ws")
    tokens = make_users(root)
    settings = open_workspace(root).settings
    settings.empi.link_after_ingest = True
    settings.empi.live_link_delay_seconds = 0.5
    settings.listen.ingest_every_seconds = 0.3
    write_settings(root / "medlake.toml", settings)
    from medlake.service.workspace import open_lake

    with open_lake(open_workspace(root)) as engine:
        rows = engine.execute(engine.table("source_patient")).to_pylist()
    known = sorted((row["source_patient_id"], row["person_id"]) for row in rows
                   if row["source_system"] == "lis" and row["person_id"] is not None)  # fmt: skip
    source_id, person_id = known[0]
    headers = {"Authorization": f"Bearer {tokens['steward']}"}
    mllp_port = free_port()
    served = serve_with_listener(root, mllp_port, "serve.log")
    try:
        timeline = f"{served.api}/persons/{person_id}/timeline"

        def values() -> list[object]:
            items = httpx.get(timeline, headers=headers, timeout=60).json()["items"]
            return [(item.get("values") or {}).get("value_as_number") for item in items]

        assert 987.6 not in values()  # read once: the serving copy is in use
        sent = message(1, value="987.6", patient=str(source_id))
        assert send_all(mllp_port, [sent])[0][0] == "AA"
        until(lambda: 987.6 in values(), served)
        jobs_url = f"{served.api}/jobs?kind=empi_link"

        def links() -> list[str]:
            jobs = httpx.get(jobs_url, headers=headers, timeout=30).json()
            return [job["status"] for job in jobs]

        until(lambda: links() == ["succeeded"], served)
    finally:
        served.stop()


def test_serve_with_a_listener_needs_a_user_who_may_ingest(tmp_path: Path) -> None:
    root, mllp_port, _ = make_workspace(tmp_path / "ws", ingest_every=5)
    access.add_user(root, "reader1", "researcher")
    result = subprocess.run(
        [sys.executable, "-m", "medlake.cli.main", "--as", "reader1", "serve", "--port",
         str(free_port()), "--mllp-port", str(mllp_port), "--workspace", str(root)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "ingest" in lines[0]


def test_medlake_listen_takes_what_it_is_not_given_from_the_listen_section(
    tmp_path: Path,
) -> None:
    """``medlake listen`` with no options listens where ``[listen]`` says, for its source,
    lands what it acknowledges and ingests it at stop; with no port anywhere it stops
    with one line."""
    import os
    import signal

    root, port, _ = make_workspace(tmp_path / "ws", ingest_every=60)
    settings = open_workspace(root).settings
    settings.listen.port = port
    settings.listen.source_system = "lab2"
    write_settings(root / "medlake.toml", settings)
    process = subprocess.Popen(
        [sys.executable, "-m", "medlake.cli.main", "listen", "--workspace", str(root)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        first = process.stdout.readline()  # once bound
        assert f"listening on 127.0.0.1:{port} for lab2" in first, first
        answers = send_all(port, [message(1), message(2)])
        assert [code for code, _, _ in answers] == ["AA", "AA"]
    finally:
        os.kill(process.pid, signal.SIGINT)
        out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "2 messages landed" in out
    counts = lake_summary(root).as_dict()["tables"]
    assert counts["measurement"] == 2  # type: ignore[index]  # ingested at stop, not at 60 s
    assert (root / "spool" / "listen-lab2.pending").exists() is False

    bare = tmp_path / "bare"
    init_workspace(bare, demo_vocabulary=False)
    result = _medlake("listen", "--workspace", str(bare))
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "--port" in lines[0]
    assert "listen.port" in lines[0]
