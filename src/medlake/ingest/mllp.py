"""MLLP framing and a live HL7 v2 listener that acknowledges only what has landed.

HL7 v2 travels over TCP in the Minimal Lower Layer Protocol: each message is wrapped as
``0x0B <message> 0x1C 0x0D`` (HL7 v2.5.1 Appendix C). The same framing appears in files
where an interface engine logged raw traffic, so the file reader shares
:class:`FrameDecoder` with the server.

:class:`MllpServer` answers every message with an HL7 ACK in original acknowledgement
mode: ``AA`` only after ``on_message`` returned (the service lands the message durably,
with fsync, before it returns), ``AE`` when the message cannot be understood (no MSH,
no control id), ``AR`` when it was refused (landing failed, the callback raised). A
sender that gets no ``AA`` keeps the message and resends it, so nothing is lost between
the sender and landing. ACKs are built with the ``hl7`` package's ``create_ack`` (MSH
with sending and receiving application swapped, MSA-2 = the message's MSH-10).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import inspect
import socket
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field

import hl7

from medlake.log import get_logger

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c"
END_FRAME = b"\x1c\r"
#: A frame bigger than this is refused (and the connection closed): 64 MiB.
MAX_FRAME_BYTES = 64 * 1024 * 1024

log = get_logger(__name__)


def frame(message: bytes | str, encoding: str = "utf-8") -> bytes:
    """``message`` wrapped for MLLP (segments must already end with ``\\r``)."""
    data = message.encode(encoding) if isinstance(message, str) else message
    return START_BLOCK + data + END_FRAME


@dataclass
class FrameDecoder:
    """Incremental MLLP decoder: feed it bytes as they arrive, get whole messages back.

    Bytes outside a frame (noise between frames, a sender that forgot the start block)
    are not silently dropped: they are kept in :attr:`discarded` as ``(offset, bytes)``
    for the caller to report. A frame longer than ``max_frame`` raises ``ValueError``.
    """

    max_frame: int = MAX_FRAME_BYTES
    discarded: list[tuple[int, bytes]] = field(default_factory=list)
    _buffer: bytearray = field(default_factory=bytearray)
    _offset: int = 0  # stream offset of _buffer[0]

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """Add ``data``; return the complete frames as ``(payload offset, payload)``."""
        self._buffer += data
        frames: list[tuple[int, bytes]] = []
        buffer = self._buffer
        position = 0
        while True:
            start = buffer.find(START_BLOCK, position)
            if start < 0:
                self._discard(position, len(buffer))
                position = len(buffer)
                break
            self._discard(position, start)
            end = buffer.find(END_BLOCK, start + 1)
            if end < 0:
                if len(buffer) - start > self.max_frame:
                    raise ValueError(f"MLLP frame over {self.max_frame} bytes")
                position = start
                break
            frames.append((self._offset + start + 1, bytes(buffer[start + 1 : end])))
            position = end + 1
            if position < len(buffer) and buffer[position] == 0x0D:
                position += 1
        del buffer[:position]
        self._offset += position
        return frames

    def _discard(self, begin: int, end: int) -> None:
        chunk = bytes(self._buffer[begin:end])
        if chunk.strip():
            self.discarded.append((self._offset + begin, chunk))

    def close(self) -> tuple[int, bytes] | None:
        """End of stream: the unterminated frame left over, if any, as ``(offset, bytes)``."""
        rest = bytes(self._buffer)
        self._buffer.clear()
        if rest.strip():
            return (self._offset, rest)
        return None

    @property
    def pending(self) -> int:
        """Bytes held for a frame that has not ended yet."""
        return len(self._buffer)


def iter_frames(stream: bytes | Iterable[bytes]) -> Iterator[bytes]:
    """Payloads of the complete MLLP frames in ``stream`` (bytes, or chunks as they came).

    Chunks may split a frame anywhere; an unterminated last frame is not yielded.
    """
    decoder = FrameDecoder()
    chunks = [stream] if isinstance(stream, bytes | bytearray) else stream
    for chunk in chunks:
        for _, payload in decoder.feed(bytes(chunk)):
            yield payload


# --- acknowledgements -------------------------------------------------------------------


@dataclass(frozen=True)
class AckResult:
    """What the receiver says about one message: ``AA``, ``AE`` or ``AR`` and why."""

    code: str = "AA"
    text: str = ""

    @classmethod
    def accept(cls) -> AckResult:
        return cls("AA")

    @classmethod
    def error(cls, text: str) -> AckResult:
        return cls("AE", text)

    @classmethod
    def reject(cls, text: str) -> AckResult:
        return cls("AR", text)


_ERR_CODES = {"AE": "207", "AR": "207"}  # HL7 table 0357: 207 application internal error
_BAD_MESSAGE_CODE = "100"  # 0357: segment sequence error (no usable MSH)


def _clean(text: str, separators: str = "|^~\\&") -> str:
    """``text`` made safe for one HL7 field: separators and line breaks become spaces."""
    for char in separators + "\r\n\x0b\x1c":
        text = text.replace(char, " ")
    return text[:200]


def parse_header(payload: bytes) -> hl7.Message:
    """The message's MSH parsed by ``hl7`` (for ACKs); ``ValueError`` when it has none."""
    text = payload.decode("utf-8", errors="replace").lstrip()
    if not text.startswith("MSH") or len(text) < 8:
        raise ValueError("message does not start with an MSH segment")
    end = text.find("\r")
    msh_text = text if end < 0 else text[:end]
    message = hl7.parse(msh_text)
    if not str(message.segment("MSH")(10)).strip():
        raise ValueError("MSH-10 (message control id) is empty")
    return message


def build_ack(
    payload: bytes,
    result: AckResult,
    *,
    control_id: str | None = None,
    header: hl7.Message | None = None,
) -> bytes:
    """HL7 ACK for ``payload`` (UTF-8), built with ``hl7``'s ``create_ack``.

    When the payload has no usable MSH the ACK is written from scratch, with MSA-2 empty
    (there is no control id to echo) and the reason in MSA-3 and ERR. ``header``: the
    payload's :func:`parse_header`, when the caller has it already.
    """
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S")
    ack_id = control_id or hl7.generate_message_control_id()
    try:
        message = header if header is not None else parse_header(payload)
    except Exception as error:  # anything unparseable gets an AE from scratch
        code = "AE" if result.code == "AA" else result.code
        reason = _clean(result.text or f"cannot parse MSH: {error}")
        return (
            f"MSH|^~\\&|||||{stamp}||ACK|{ack_id}|P|2.5\r"
            f"MSA|{code}||{reason}\r"
            f"ERR||||E|{_BAD_MESSAGE_CODE}^Segment sequence error^HL70357|||{reason}\r"
        ).encode()
    ack = message.create_ack(result.code, message_id=ack_id)
    msh = ack.segment("MSH")
    msh.assign_field(stamp, 7)
    text = str(ack).rstrip("\r")
    if result.code != "AA":
        reason = _clean(result.text, message.separators[1:] + message.esc)
        fs = message.separators[1]
        text += f"{fs}{reason}\r"  # MSA-3 text message
        text += f"ERR{fs}{fs}{fs}{fs}E{fs}{_ERR_CODES[result.code]}{fs}{fs}{fs}{reason}"
    return (text + "\r").encode("utf-8")


# --- the server -------------------------------------------------------------------------

OnMessage = Callable[[bytes], Awaitable[AckResult]] | Callable[[bytes], AckResult]


class MllpServer:
    """An asyncio MLLP listener: one ACK per message, ``AA`` only after ``on_message``.

    ``on_message`` gets each message's bytes as received (without framing); a coroutine
    function is awaited, a plain function runs in a worker thread so a blocking fsync
    never stalls other connections. Messages on one connection are handled in order
    (HL7 original mode: a sender waits for each ACK); connections run concurrently.
    """

    def __init__(
        self, host: str, port: int, on_message: OnMessage, *, sock: socket.socket | None = None
    ) -> None:
        self.host = host
        self.port = port
        self.sock = sock  # bound already (``host``/``port`` are then for the log)
        self.on_message = on_message
        self._is_async = inspect.iscoroutinefunction(on_message)
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.messages = 0  # acknowledged with AA
        self.errors = 0  # answered AE or AR

    @property
    def bound_port(self) -> int:
        """The port actually bound (useful when started with port 0)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("server is not started")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        if self.sock is not None:
            self._server = await asyncio.start_server(self._handle, sock=self.sock)
        else:
            self._server = await asyncio.start_server(self._handle, self.host, self.port)
        log.info("MLLP listener on %s:%d", self.host, self.bound_port)

    async def serve_forever(self) -> None:
        if self._server is None:
            await self.start()
        assert self._server is not None
        async with self._server:
            await self._server.serve_forever()

    async def close(self) -> None:
        """Stop accepting, let messages in flight finish and be acknowledged, close."""
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> MllpServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        peer = writer.get_extra_info("peername")
        decoder = FrameDecoder()
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                for _, payload in decoder.feed(data):
                    # A message being handled is finished and acknowledged even when
                    # the server is closing: shield it from cancellation.
                    ack = await asyncio.shield(self._answer(payload))
                    writer.write(frame(ack))
                    await writer.drain()
                if decoder.discarded:
                    log.warning(
                        "%s: %d bytes outside MLLP frames ignored",
                        peer,
                        sum(len(chunk) for _, chunk in decoder.discarded),
                    )
                    decoder.discarded.clear()
        except (asyncio.CancelledError, ConnectionError, ValueError) as error:
            if isinstance(error, ValueError):
                log.warning("%s: %s; closing connection", peer, error)
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(self, payload: bytes) -> bytes:
        try:
            header = parse_header(payload)
        except Exception as error:  # the reason goes back to the sender
            self.errors += 1
            return build_ack(payload, AckResult.error(f"cannot parse MSH: {error}"))
        try:
            if self._is_async:
                result = await self.on_message(payload)  # type: ignore[misc]
            else:
                result = await asyncio.to_thread(self.on_message, payload)
        except Exception as error:  # refused, the sender keeps the message
            log.exception("message refused")
            result = AckResult.reject(f"{type(error).__name__}: {error}")
        if not isinstance(result, AckResult):
            result = AckResult.accept()
        if result.code == "AA":
            self.messages += 1
        else:
            self.errors += 1
        return build_ack(payload, result, header=header)
