"""MLLP framing, ACKs and the live listener on loopback with real client sockets."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import hl7
import pytest

from medlake.config import Workspace, open_workspace
from medlake.ingest.mllp import AckResult, FrameDecoder, MllpServer, frame, iter_frames
from medlake.service.listen import ListenerService, serve
from medlake.service.workspace import init_workspace

MESSAGE = (
    "MSH|^~\\&|LIS|LAB|MEDLAKE|HOSP|20240101080000||ORU^R01^ORU_R01|{control}|P|2.5\r"
    "PID|1||P1^^^LIS^PI||WANG^FANG\r"
    "OBX|1|NM|718-7^Hb^LN||120|g/L||||||F\r"
)


def message(control: str) -> bytes:
    return MESSAGE.format(control=control).encode()


def test_iter_frames_handles_frames_split_anywhere() -> None:
    stream = frame(message("A")) + frame(message("B"))
    pieces = [stream[i : i + 7] for i in range(0, len(stream), 7)]
    assert list(iter_frames(pieces)) == [message("A"), message("B")]
    assert list(iter_frames(stream[:-3])) == [message("A")]  # the cut-off frame waits


def test_decoder_reports_bytes_outside_frames() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(b"noise" + frame(b"MSH|x")) == [(6, b"MSH|x")]
    assert decoder.discarded == [(0, b"noise")]
    assert decoder.feed(b"\x0bMSH|partial") == []
    assert decoder.close() == (13, b"\x0bMSH|partial")


class Client:
    """A blocking MLLP client on a real socket."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.decoder = FrameDecoder()
        self.pending: list[bytes] = []

    def send(self, payload: bytes) -> None:
        self.sock.sendall(frame(payload))

    def ack(self) -> hl7.Message:
        while not self.pending:
            data = self.sock.recv(65536)
            assert data, "connection closed before the ACK"
            self.pending += [p for _, p in self.decoder.feed(data)]
        return hl7.parse(self.pending.pop(0).decode())

    def close(self) -> None:
        self.sock.close()


class RunningServer:
    """An MllpServer in a background event loop thread."""

    def __init__(self, on_message: object) -> None:
        self.loop = asyncio.new_event_loop()
        self.server = MllpServer("127.0.0.1", 0, on_message)  # type: ignore[arg-type]
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)
        self.port = self.server.bound_port

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def landing(tmp_path: Path) -> Path:
    """The landing folder of a real workspace (the listener's workspace is its parent)."""
    return init_workspace(tmp_path / "ws", demo_vocabulary=False).landing_dir


def _FakeWorkspace(landing: Path) -> Workspace:  # noqa: N802 - kept name: many call sites
    return open_workspace(landing.parent)


@pytest.fixture
def service(landing: Path) -> ListenerService:
    return ListenerService(_FakeWorkspace(landing), "lis", ingest=lambda path: None)  # type: ignore[arg-type]


@pytest.fixture
def server(service: ListenerService) -> Iterator[RunningServer]:
    running = RunningServer(service.on_message)
    yield running
    running.stop()


def _landed(landing: Path) -> list[Path]:
    return [p for p in landing.rglob("*") if p.is_file() and not p.name.endswith(".pending")]


def test_aa_only_after_the_message_has_landed(server: RunningServer, landing: Path) -> None:
    client = Client(server.port)
    client.send(message("CTRL1"))
    ack = client.ack()
    msh, msa = ack.segment("MSH"), ack.segment("MSA")
    assert str(msa(1)) == "AA"
    assert str(msa(2)) == "CTRL1"
    assert (str(msh(3)), str(msh(5))) == ("MEDLAKE", "LIS")  # sending/receiving swapped
    assert str(msh(9)).startswith("ACK^R01")
    (landed,) = _landed(landing)
    assert landed.read_bytes() == message("CTRL1")
    client.close()


def test_garbage_gets_ae_with_the_reason(server: RunningServer, landing: Path) -> None:
    client = Client(server.port)
    client.send(b"this is not HL7")
    ack = client.ack()
    assert str(ack.segment("MSA")(1)) == "AE"
    assert "MSH" in str(ack.segment("MSA")(3))
    assert str(ack.segment("ERR")(4)) == "E"
    assert _landed(landing) == []
    client.send(message("AFTER"))  # the connection stays usable
    assert str(client.ack().segment("MSA")(1)) == "AA"
    client.close()


def test_refused_message_gets_ar() -> None:
    def refuse(data: bytes) -> AckResult:
        raise OSError("disk full")

    running = RunningServer(refuse)
    try:
        client = Client(running.port)
        client.send(message("X"))
        msa = client.ack().segment("MSA")
        assert (str(msa(1)), str(msa(2))) == ("AR", "X")
        assert "disk full" in str(msa(3))
        client.close()
    finally:
        running.stop()


def test_many_messages_on_one_connection_and_pipelined(
    server: RunningServer, landing: Path
) -> None:
    client = Client(server.port)
    payloads = [message(f"M{i}") for i in range(50)]
    client.sock.sendall(b"".join(frame(p) for p in payloads))  # all at once, split anyhow
    controls = [str(client.ack().segment("MSA")(2)) for _ in payloads]
    assert controls == [f"M{i}" for i in range(50)]
    assert len(_landed(landing)) == 50
    client.close()


def test_concurrent_clients(server: RunningServer, landing: Path) -> None:
    errors: list[BaseException] = []

    def run(worker: int) -> None:
        try:
            client = Client(server.port)
            for i in range(20):
                client.send(message(f"W{worker}-{i}"))
                assert str(client.ack().segment("MSA")(2)) == f"W{worker}-{i}"
            client.close()
        except BaseException as error:  # collected for the main thread
            errors.append(error)

    threads = [threading.Thread(target=run, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert len(_landed(landing)) == 160


def test_async_callback_is_awaited() -> None:
    seen: list[bytes] = []

    async def on_message(data: bytes) -> AckResult:
        await asyncio.sleep(0)
        seen.append(data)
        return AckResult.accept()

    running = RunningServer(on_message)
    try:
        client = Client(running.port)
        client.send(message("ASYNC"))
        assert str(client.ack().segment("MSA")(1)) == "AA"
        assert seen == [message("ASYNC")]
        client.close()
    finally:
        running.stop()


def test_listener_service_bundles_landed_messages_for_ingest(landing: Path) -> None:
    bundles: list[Path] = []
    svc = ListenerService(_FakeWorkspace(landing), "lis", ingest=bundles.append)  # type: ignore[arg-type]
    for i in range(3):
        assert svc.on_message(message(f"B{i}")).code == "AA"
    bundle = svc.flush()
    assert bundle is not None
    assert bundles == [bundle]
    assert bundle.read_bytes().count(b"MSH|") == 3
    assert svc.flush() is None  # journal emptied


def test_message_is_refused_when_it_cannot_be_journaled(landing: Path) -> None:
    svc = ListenerService(_FakeWorkspace(landing), "lis", ingest=lambda path: None)  # type: ignore[arg-type]
    svc.journal.mkdir()  # the journal cannot be opened for appending
    result = svc.on_message(message("J1"))
    assert result.code == "AR"
    assert svc.landed == 0


def test_a_frozen_workspace_answers_ar_with_the_reason(landing: Path) -> None:
    import time

    from medlake.protect.watch import Alert, Finding
    from medlake.service.watch import freeze

    workspace = _FakeWorkspace(landing)
    svc = ListenerService(workspace, "lis", ingest=lambda path: None)
    now = time.time()
    renamed = Finding("rename", "landing/x.locked", now)
    freeze(workspace, Alert(["ransom extension"], [renamed], now))
    result = svc.on_message(message("F1"))
    assert result.code == "AR"
    assert "frozen read-only" in result.text
    assert svc.landed == 0


def test_serve_stops_cleanly_and_flushes(landing: Path) -> None:
    bundles: list[Path] = []
    svc = ListenerService(_FakeWorkspace(landing), "lis", ingest=bundles.append)  # type: ignore[arg-type]

    async def scenario() -> None:
        stop = asyncio.Event()
        ports: list[int] = []
        task = asyncio.create_task(
            serve(svc, "127.0.0.1", 0, ingest_every=60, ready=ports.append, stop=stop)
        )
        while not ports:
            await asyncio.sleep(0.01)
        reader, writer = await asyncio.open_connection("127.0.0.1", ports[0])
        writer.write(frame(message("S1")))
        await writer.drain()
        decoder = FrameDecoder()
        while not (frames := decoder.feed(await reader.read(4096))):
            pass
        assert b"MSA|AA|S1" in frames[0][1]
        writer.close()
        stop.set()
        await asyncio.wait_for(task, 10)

    asyncio.run(scenario())
    assert len(bundles) == 1


def test_a_message_during_an_ingest_is_acknowledged_without_waiting_for_it(
    landing: Path,
) -> None:
    ingesting, release = threading.Event(), threading.Event()
    bundles: list[bytes] = []

    def slow_ingest(path: Path) -> None:
        bundles.append(path.read_bytes())
        ingesting.set()
        assert release.wait(30)

    svc = ListenerService(_FakeWorkspace(landing), "lis", ingest=slow_ingest)
    assert svc.on_message(message("D1")).code == "AA"
    flushing = threading.Thread(target=svc.flush)
    flushing.start()
    assert ingesting.wait(30)
    assert svc.on_message(message("D2")).code == "AA"  # the ingest still holds on
    assert svc.pending() == 2
    release.set()
    flushing.join(30)
    assert svc.flush() is not None  # D2, in the next bundle
    assert [b.count(b"MSH|") for b in bundles] == [1, 1]
    assert b"|D1|" in bundles[0]
    assert b"|D2|" in bundles[1]
    assert svc.pending() == 0


def test_a_flush_cut_short_is_ingested_first_at_the_next(landing: Path) -> None:
    bundles: list[bytes] = []

    def failing_once(path: Path) -> None:
        if not bundles:
            bundles.append(b"")
            raise RuntimeError("the lake went away")  # as a crash between rename and ingest
        bundles.append(path.read_bytes())

    svc = ListenerService(_FakeWorkspace(landing), "lis", ingest=failing_once)
    svc.on_message(message("E1"))
    with pytest.raises(RuntimeError):
        svc.flush()
    assert svc.in_flush.exists()  # E1 stays listed
    svc.on_message(message("E2"))
    svc.close()
    again = ListenerService(_FakeWorkspace(landing), "lis", ingest=failing_once)  # a restart
    assert again.pending() == 2
    again.flush()
    assert [b.count(b"MSH|") for b in bundles[1:]] == [1, 1]
    assert b"|E1|" in bundles[1]  # what was being flushed goes first
    assert b"|E2|" in bundles[2]
    assert again.pending() == 0


def test_a_message_the_ingest_would_quarantine_is_landed_and_answered_ae(
    server: RunningServer, landing: Path, service: ListenerService
) -> None:
    client = Client(server.port)
    client.send(message("Q1").replace(b"||120|", b"||lots|"))
    msa = client.ack().segment("MSA")
    assert (str(msa(1)), str(msa(2))) == ("AE", "Q1")
    assert "'lots' is not a number" in str(msa(3))
    (landed,) = _landed(landing)  # landed and journaled all the same
    assert b"||lots|" in landed.read_bytes()
    assert service.pending() == 1
    client.close()
