"""MLLP listener throughput: acknowledged messages/s with durable landing, on loopback.

N ORU^R01 messages are sent from client processes over C connections, each waiting for
its ACK before sending the next (HL7 original mode), to one of:

- ``--mode standalone``: the listener service (``medlake.service.listen``) in this
  process on a fresh workspace, landing with fsync; its periodic ingest is left out
  (``--ingest-every`` long), as ``medlake listen`` between flushes;
- ``--mode serve``: a real ``medlake serve --mllp-port`` process on a fresh workspace,
  landing with fsync before each AA and ingesting every ``--ingest-every`` seconds into
  the lake it serves, while the messages come; after the last AA the script waits until
  the server's ``/lake`` counts every message's measurement.

Prints acknowledged messages/s (target: >= 1,000) with the wall and the CPU seconds
(user + system) of the listening process over the sending window, and of the clients.

    .venv/bin/python benchmarks/hl7_listener.py --mode serve --messages 5000 --connections 4
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import resource
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.serve_process

from medlake.ingest.mllp import FrameDecoder, frame
from medlake.service.listen import ListenerService, serve

MESSAGE = (
    "MSH|^~\\&|LIS|LAB|MEDLAKE|HOSP|20240101080000||ORU^R01^ORU_R01|{control}|P|2.5\r"
    "PID|1||{patient}^^^LIS^PI||WANG^FANG\r"
    "PV1|1|O|||||||||||||||||ZY{patient}\r"
    "OBR|1|PL{control}|F{control}|XCG^血常规^99LIS|||20240101070000\r"
    "OBX|1|NM|718-7^Hb^LN||{value}|g/L^^UCUM|115-175|N|||F\r"
)
_TICK = os.sysconf("SC_CLK_TCK")


def _client(port: int, start: int, count: int, results: mp.Queue) -> None:
    sock = socket.create_connection(("127.0.0.1", port))
    decoder = FrameDecoder()
    accepted = 0
    for i in range(start, start + count):
        sock.sendall(frame(MESSAGE.format(control=f"C{i}", patient=i % 997, value=100 + i % 50)))
        frames: list[tuple[int, bytes]] = []
        while not frames:
            frames = decoder.feed(sock.recv(4096))
        accepted += b"MSA|AA|" in frames[0][1]
    sock.close()
    results.put(accepted)


def _clients(port: int, messages: int, connections: int, results: mp.Queue) -> None:
    per = messages // connections
    procs = [mp.Process(target=_client, args=(port, c * per, per, results))
             for c in range(connections)]  # fmt: skip
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    # the clients' CPU, for the caller (this process's children)
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    results.put(("cpu", used.ru_utime + used.ru_stime))


def _process_cpu(pid: int) -> float:
    """User + system CPU seconds of ``pid``, its threads and its waited-for children."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / _TICK


def _send(port: int, messages: int, connections: int) -> tuple[int, float, float]:
    """Run the clients to the end: (acknowledged AA, wall seconds, clients' CPU seconds)."""
    results: mp.Queue = mp.Queue()
    client = mp.Process(target=_clients, args=(port, messages, connections, results))
    began = time.perf_counter()
    client.start()
    client.join()
    elapsed = time.perf_counter() - began
    got = [results.get() for _ in range(connections + 1)]
    clients_cpu = next(v for v in got if isinstance(v, tuple))[1]
    accepted = sum(v for v in got if isinstance(v, int))
    return accepted, elapsed, clients_cpu


def _workspace(root: Path, ingest_every: float, port: int | None) -> Path:
    from medlake.config import open_workspace, write_settings
    from medlake.service.workspace import init_workspace

    init_workspace(root, demo_vocabulary=False)
    settings = open_workspace(root).settings
    settings.empi.link_after_ingest = False  # an empty lake has no model to link with
    if hasattr(settings, "listen"):
        settings.listen.ingest_every_seconds = ingest_every
        settings.listen.port = port
    write_settings(root / "medlake.toml", settings)
    return root


def _report(mode: str, accepted: int, elapsed: float, cpu: float, clients_cpu: float,
            connections: int) -> None:  # fmt: skip
    print(f"{mode}: {accepted:,} messages acknowledged (AA) in {elapsed:.2f} s over "
          f"{connections} connections: {accepted / elapsed:,.0f} messages/s; listening "
          f"process CPU {cpu:.2f} s ({cpu / accepted * 1e6:,.0f} us/message), clients CPU "
          f"{clients_cpu:.2f} s")  # fmt: skip


def run_standalone(args: argparse.Namespace, tmp: Path) -> None:
    from medlake.config import open_workspace

    workspace = open_workspace(_workspace(tmp / "ws", args.ingest_every, None))
    service = ListenerService(workspace, "lis", ingest=lambda path: None)

    async def run() -> None:
        stop = asyncio.Event()
        ports: list[int] = []
        task = asyncio.create_task(serve(service, "127.0.0.1", 0, ingest_every=3600,
                                         ready=ports.append, stop=stop))  # fmt: skip
        while not ports:
            await asyncio.sleep(0.01)
        cpu = time.process_time()
        accepted, elapsed, clients_cpu = await asyncio.to_thread(
            _send, ports[0], args.messages, args.connections
        )
        cpu = time.process_time() - cpu
        stop.set()
        await task
        _report("standalone", accepted, elapsed, cpu, clients_cpu, args.connections)
        print(f"  {service.landed:,} landed with fsync")

    asyncio.run(run())


def run_serve(args: argparse.Namespace, tmp: Path) -> None:
    import httpx
    from tests.serve_process import free_port, start_medlake_serve

    from medlake.service import access

    mllp_port = free_port()
    root = _workspace(tmp / "ws", args.ingest_every, mllp_port)
    headers = {"Authorization": f"Bearer {access.issue_token(root, access.login_name()).token}"}
    served = start_medlake_serve(root, log=tmp / "serve.log")

    def measurements() -> int:
        lake = httpx.get(f"{served.api}/lake", headers=headers, timeout=60).json()
        return int(lake["tables"]["measurement"])

    try:
        cpu = _process_cpu(served.process.pid)
        accepted, elapsed, clients_cpu = _send(mllp_port, args.messages, args.connections)
        cpu = _process_cpu(served.process.pid) - cpu
        _report("serve", accepted, elapsed, cpu, clients_cpu, args.connections)
        if args.ingest_every > 300:
            return  # nothing ingested yet: the stop ingests it
        waited = time.perf_counter()
        while (loaded := measurements()) < accepted:
            if time.perf_counter() - waited > 600:
                raise SystemExit(f"only {loaded:,} of {accepted:,} ingested after 10 min")
            time.sleep(0.1)
        print(f"  all {loaded:,} measurements served by /lake {time.perf_counter() - waited:.2f}"
              f" s after the last AA (ingest every {args.ingest_every:g} s)")  # fmt: skip
    finally:
        served.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("standalone", "serve"), default="standalone")
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--ingest-every", type=float, default=5.0,
                        help="seconds between the server's ingests (--mode serve)")  # fmt: skip
    parser.add_argument("--workdir", type=Path, default=None,
                        help="make the workspace in a new folder here and leave it (remove "
                        "them all after the last run: files deleted just before a run "
                        "cost every landing system time in ext4's inode allocator)")  # fmt: skip
    args = parser.parse_args()
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        run = run_serve if args.mode == "serve" else run_standalone
        run(args, Path(tempfile.mkdtemp(dir=args.workdir)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        if args.mode == "serve":
            run_serve(args, Path(tmp))
        else:
            run_standalone(args, Path(tmp))


if __name__ == "__main__":
    main()
