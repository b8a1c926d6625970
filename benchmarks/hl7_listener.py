"""MLLP listener throughput: acknowledged messages/s with durable landing, on loopback.

Starts the listener service (``medlake.service.listen``) on 127.0.0.1 in this process,
landing into a temporary folder with fsync, and sends N ORU^R01 messages from a
separate client process over C connections, each waiting for its ACK before sending
the next (HL7 original mode). Prints acknowledged messages/s (target: >= 1,000).

    .venv/bin/python benchmarks/hl7_listener.py --messages 5000 --connections 4
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import socket
import tempfile
import time
from pathlib import Path

from medlake.ingest.mllp import FrameDecoder, frame
from medlake.service.listen import ListenerService, serve

MESSAGE = (
    "MSH|^~\\&|LIS|LAB|MEDLAKE|HOSP|20240101080000||ORU^R01^ORU_R01|{control}|P|2.5\r"
    "PID|1||{patient}^^^LIS^PI||WANG^FANG\r"
    "PV1|1|O|||||||||||||||||ZY{patient}\r"
    "OBR|1|PL{control}|F{control}|XCG^血常规^99LIS|||20240101070000\r"
    "OBX|1|NM|718-7^Hb^LN||{value}|g/L^^UCUM|115-175|N|||F\r"
)


class _Workspace:
    def __init__(self, landing: Path) -> None:
        self.landing_dir = landing


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--connections", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        landing = Path(tmp) / "landing"
        landing.mkdir()
        service = ListenerService(_Workspace(landing), "lis", ingest=lambda path: None)  # type: ignore[arg-type]

        async def run() -> float:
            stop = asyncio.Event()
            ports: list[int] = []
            task = asyncio.create_task(serve(service, "127.0.0.1", 0, ingest_every=3600,
                                             ready=ports.append, stop=stop))  # fmt: skip
            while not ports:
                await asyncio.sleep(0.01)
            results: mp.Queue = mp.Queue()
            client_args = (ports[0], args.messages, args.connections, results)
            client = mp.Process(target=_clients, args=client_args)
            began = time.perf_counter()
            client.start()
            while client.is_alive():
                await asyncio.sleep(0.05)
            elapsed = time.perf_counter() - began
            accepted = sum(results.get() for _ in range(args.connections))
            stop.set()
            await task
            print(f"{accepted:,} messages acknowledged (AA) in {elapsed:.2f} s over "
                  f"{args.connections} connections: {accepted / elapsed:,.0f} messages/s; "
                  f"{service.landed:,} landed with fsync")  # fmt: skip
            return elapsed

        asyncio.run(run())


if __name__ == "__main__":
    main()
