"""A real ``medlake serve`` process on a free loopback port, for tests and benchmarks.

One helper for everything that talks HTTP to a served workspace from outside the server's
process (the API and job-restart tests, the browser tests, the watch-in-serve test, the
load benchmark): start the command, wait until ``/api/v1/health`` answers (failing with
the server's own output if it exits or never comes up), and stop it at the end.
Importable from benchmarks too (``sys.path`` holding the repository root).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

__all__ = ["Served", "free_port", "medlake_serve", "start_medlake_serve"]


def free_port() -> int:
    """A TCP port free on the loopback now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Served:
    """A running ``medlake serve``: its process, port and output file."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` (the web UI is under ``/ui``)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def api(self) -> str:
        """The API's base URL, ``.../api/v1``."""
        return f"{self.url}/api/v1"

    def output(self) -> str:
        """What the server has printed so far (stdout and stderr)."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self, *, kill: bool = False) -> None:
        """Terminate (or SIGKILL) the server and wait for it; idempotent."""
        if self.process.poll() is None:
            self.process.kill() if kill else self.process.terminate()
        self.process.wait(timeout=30)


def start_medlake_serve(
    root: Path,
    *,
    log: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 90.0,
    args: Sequence[str] = (),
) -> Served:
    """Start ``medlake serve --workspace root`` on a free port and wait until it answers.

    ``log`` receives the server's output (``medlake-serve-<port>.log`` beside the
    workspace when None); ``env`` is added
    to this process's environment; ``args`` are more options (``--mllp-port P``).
    Raises AssertionError with the server's output if it exits or does not answer
    within ``timeout`` seconds (a loaded machine starts slowly).
    """
    port = free_port()
    if log is None:
        log = Path(root).parent / f"medlake-serve-{port}.log"
    command = [sys.executable, "-m", "medlake.cli.main", "serve", "--port", str(port),
               "--workspace", str(root), *args]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )  # fmt: skip
    served = Served(process, port, log)
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{served.api}/health", timeout=10).status_code == 200:
                return served
        except httpx.TransportError:
            pass
        if process.poll() is not None:
            raise AssertionError(f"medlake serve exited ({process.returncode}):\n{served.output()}")
        if time.monotonic() > deadline:
            served.stop()
            raise AssertionError(f"medlake serve did not start in {timeout:.0f} s:\n"
                                 f"{served.output()}")  # fmt: skip
        time.sleep(0.2)


@contextmanager
def medlake_serve(
    root: Path,
    *,
    log: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 90.0,
) -> Iterator[Served]:
    """:func:`start_medlake_serve` for a block; the server is stopped when it ends."""
    served = start_medlake_serve(root, log=log, env=env, timeout=timeout)
    try:
        yield served
    finally:
        served.stop()
