"""HL7 v2 messages from bytes: splitting files, decoding, segments and fields, dates.

The reader's hot loop works on :class:`Hl7Message`, a message as lists of field
strings per segment, numbered as HL7 numbers them (``segment[n]`` is ``SEG-n``; for MSH,
``[1]`` is the field separator and ``[2]`` the encoding characters, as in ``hl7``).
Two parsers produce it:

- ``"hl7"``: the ``hl7`` package's :func:`hl7.parse`, the parser of record;
- ``"fast"`` (the default): the same split done with ``str.split`` on the separators
  the message declares in MSH-1/MSH-2. ``hl7.parse`` builds an object for every field,
  repetition and component of every segment and tops out near 2,500 messages/s on one
  core; the reader needs 10,000. Tests check that both parsers give the same
  segments on every message of the synthetic LIS and on fuzzed messages.

Both leave values escaped; :meth:`Hl7Message.text` unescapes with ``hl7``'s own
``unescape``, and dates are parsed by ``hl7.parse_datetime``. Segment ids are checked
(three upper-case letters or digits, then the field separator), so a broken segment
makes the whole message fail instead of silently losing its content.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

import hl7

from medlake.ingest.mllp import FrameDecoder

_SEGMENT_ID = re.compile(r"[A-Z][A-Z0-9]{2}\Z")
# A message starts with MSH at the start of the data, right after a line break, or right
# after an MLLP start block: a plain file may hold MLLP-framed messages too (day files of
# both kinds concatenated), and each must stay its own message. The frame's bytes left at
# a message's ends (0x0B, 0x1C) are blank space to ``normalize``.
_MESSAGE_START = re.compile(rb"(?:\A|(?<=[\r\n\x0b]))[ \t]*MSH")


class MessageError(ValueError):
    """A message that cannot be read; ``field`` names where (``MSH-9``, ``OBX[2]-5``)."""

    def __init__(self, reason: str, field: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field


@dataclass(frozen=True, slots=True)
class RawMessage:
    """One message as it lies in the file: 1-based number, byte offset, bytes."""

    number: int
    offset: int
    data: bytes
    error: str | None = None  # set for bytes that are not a message (framing junk)


def message_starts(data: bytes) -> list[int]:
    """Byte offsets where a plain file's messages start (as :func:`split_messages` splits)."""
    return [match.start() for match in _MESSAGE_START.finditer(data)]


def is_mllp(head: bytes) -> bool:
    return head.lstrip(b" \t\r\n").startswith(b"\x0b")


def split_messages(data: bytes) -> Iterator[RawMessage]:
    """The messages of a file, plain (``MSH`` after a line break) or MLLP-framed.

    Bytes that belong to no message (text before the first MSH, noise between MLLP
    frames, an unterminated last frame) come out as a ``RawMessage`` with ``error`` set,
    so the caller quarantines them instead of dropping them.
    """
    if is_mllp(data[:64]):
        yield from _split_mllp(data)
    else:
        yield from _split_plain(data)


_ENVELOPE = (b"FHS", b"BHS")
_CHUNK = 1 << 20


def _split_plain(data: bytes) -> Iterator[RawMessage]:
    number = 0
    previous: int | None = None
    for match in _MESSAGE_START.finditer(data):
        start = match.start()
        if previous is None:
            head = data[:start]
            if head.strip() and not all(
                line.strip().startswith(_ENVELOPE) for line in head.splitlines() if line.strip()
            ):
                number += 1
                yield RawMessage(number, 0, bytes(head), "text before the first MSH segment")
        else:
            number += 1
            yield RawMessage(number, previous, bytes(data[previous:start]))
        previous = start
    if previous is None:
        if bytes(data[:_CHUNK]).strip():
            yield RawMessage(1, 0, bytes(data[:_CHUNK]), "no MSH segment")
        return
    yield RawMessage(number + 1, previous, bytes(data[previous:]))


def _split_mllp(data: bytes) -> Iterator[RawMessage]:
    decoder = FrameDecoder(max_frame=len(data) + 1)
    number = 0
    for begin in range(0, len(data), _CHUNK):
        items: list[tuple[int, bytes, str | None]] = [
            (offset, payload, None)
            for offset, payload in decoder.feed(data[begin : begin + _CHUNK])
        ]
        items += [
            (offset, chunk, "bytes outside MLLP frames") for offset, chunk in decoder.discarded
        ]
        decoder.discarded.clear()
        items.sort(key=lambda item: item[0])
        for offset, payload, error in items:
            number += 1
            yield RawMessage(number, offset, payload, error)
    rest = decoder.close()
    if rest is not None:
        yield RawMessage(
            number + 1, rest[0], rest[1], "unterminated MLLP frame (no 0x1C end block)"
        )


# --- decoding ---------------------------------------------------------------------------


def _charset(data: bytes) -> str | None:
    """MSH-18 (character set) read from the raw bytes, or None."""
    end = data.find(b"\r")
    line = data[: end if end >= 0 else 2000].split(b"\n", 1)[0].lstrip()
    if len(line) < 4 or not line.startswith(b"MSH"):
        return None
    fields = line.split(line[3:4])
    return fields[17].decode("ascii", "replace").strip().upper() if len(fields) > 17 else None


def python_encoding(charset: str | None) -> str:
    """Python codec for an HL7 table 0211 character set (MSH-18); UTF-8 by default."""
    if not charset:
        return "utf-8"
    compact = charset.replace(" ", "").replace("-", "").replace("_", "")
    if "18030" in compact or compact.startswith(("GBK", "GB2312", "GB")):
        return "gb18030"
    if compact.startswith("8859/1") or compact == "ISO88591":
        return "latin-1"
    return "utf-8"


def decode_message(data: bytes) -> tuple[str, str]:
    """The message as text and the codec used: MSH-18's, else UTF-8, else GB18030."""
    encoding = python_encoding(_charset(data))
    try:
        return data.decode(encoding), encoding
    except UnicodeDecodeError as error:
        if encoding != "gb18030":
            try:
                return data.decode("gb18030"), "gb18030"
            except UnicodeDecodeError:
                pass
        raise MessageError(f"not decodable as {encoding} or GB18030: {error}", "MSH-18") from None


# --- segments and fields ----------------------------------------------------------------


@dataclass(slots=True)
class Hl7Message:
    """A message as lists of (escaped) field strings, ``segment[n]`` = ``SEG-n``."""

    text: str  # normalized: segments separated by \r
    segments: list[list[str]]
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"

    def first(self, segment_id: str) -> list[str] | None:
        for fields in self.segments:
            if fields[0] == segment_id:
                return fields
        return None

    def unescape(self, value: str) -> str:
        """``value`` with HL7 escape sequences (``\\F\\``, ``\\X..\\``...) resolved by ``hl7``."""
        if not self.escape or self.escape not in value:
            return value
        separators = "\r|" + self.repetition + self.component + self.subcomponent
        return _unescaper(separators, self.escape).unescape(value)


@lru_cache(maxsize=16)
def _unescaper(separators: str, escape: str) -> hl7.Message:
    return hl7.Message(separators[0], [], esc=escape, separators=separators)


def field(fields: list[str] | None, n: int) -> str:
    """``SEG-n`` as written, or ``""`` when absent."""
    if fields is None or n >= len(fields):
        return ""
    return fields[n]


def normalize(text: str) -> str:
    """Segments separated by ``\\r`` only, surrounding blank space removed (as ``hl7``)."""
    if "\n" in text:
        text = text.replace("\r\n", "\r").replace("\n", "\r")
    return text.strip()


def parse_message(text: str, parser: str = "fast") -> Hl7Message:
    """Split ``text`` into segments and fields; ``MessageError`` when it is not a message."""
    text = normalize(text)
    if not text.startswith("MSH") or len(text) < 8:
        raise MessageError("message does not start with an MSH segment", "MSH")
    separator = text[3]
    if separator.isalnum() or separator in " \r":
        raise MessageError(f"bad field separator {separator!r} in MSH-1", "MSH-1")
    end = text.find(separator, 4)
    if end < 0 or "\r" in text[4:end]:
        raise MessageError("MSH has no fields after the encoding characters", "MSH-9")
    encoding_chars = text[4:end]
    if (
        not 2 <= len(encoding_chars) <= 5
        or separator in encoding_chars
        or any(char.isalnum() or char in " \r" for char in encoding_chars)
    ):
        raise MessageError(f"bad encoding characters {encoding_chars!r} in MSH-2", "MSH-2")
    message = Hl7Message(text, [], *_encoding(encoding_chars))
    if parser == "hl7":
        parsed = hl7.parse(text)
        lines = text.split("\r")
        segments = [[str(f) for f in segment] for segment in parsed]
        message.segments = [s for s, line in zip(segments, lines, strict=True) if line.strip()]
        if message.segments and len(message.segments[0]) == 2:
            message.segments[0].append(encoding_chars)  # MSH with no field after MSH-2
    elif parser == "fast":
        message.segments = _fast_segments(text, separator, encoding_chars)
    else:
        raise ValueError(f"unknown HL7 parser {parser!r}: fast or hl7")
    _check_segments(message.segments)
    return message


def _encoding(chars: str) -> tuple[str, str, str, str]:
    padded = chars + "\0" * (4 - min(len(chars), 4))
    return padded[0], padded[1], padded[2] if padded[2] != "\0" else "", padded[3]


def _fast_segments(text: str, separator: str, encoding_chars: str) -> list[list[str]]:
    lines = text.split("\r")
    segments = [line.split(separator) for line in lines if line and not line.isspace()]
    msh = segments[0]
    msh[1:1] = [separator]  # MSH-1 is the separator itself; MSH-2 follows
    if len(msh) == 4 and not msh[3]:
        del msh[3]  # "MSH|^~\\&|" and nothing more: no MSH-3, as hl7 reads it
    return segments


_VALID_IDS: set[str] = set()


def _check_segments(segments: list[list[str]]) -> None:
    valid = _VALID_IDS
    for number, fields in enumerate(segments, start=1):
        name = fields[0]
        if name in valid:
            continue
        if not _SEGMENT_ID.match(name):
            raise MessageError(
                f"broken segment {number}: {name[:20]!r} is no segment id", f"segment {number}"
            )
        if len(valid) < 1000:
            valid.add(name)


# --- dates ------------------------------------------------------------------------------


@lru_cache(maxsize=65536)
def parse_dtm(value: str) -> dt.datetime | None:
    """HL7 DTM/DT (``YYYY[MM[DD[HHMM[SS[.S]]]]][+/-ZZZZ]``) as a naive local datetime.

    Parsed by ``hl7.parse_datetime``; a time-zone offset, when given, is dropped after
    reading (values stay in the sender's wall-clock time, as the rest of the lake).
    ``ValueError`` for a value that is no date (``20230230``, ``2023-02-03``).
    """
    value = value.strip()
    if not value:
        return None
    parsed = hl7.parse_datetime(value)
    if parsed is None:
        return None
    return parsed.replace(tzinfo=None)


def epoch_ms_of(value: dt.datetime) -> int:
    """Epoch milliseconds of a naive value taken as UTC (only order matters for versions)."""
    return int(value.replace(tzinfo=dt.UTC).timestamp() * 1000)
