"""A landing root behind fsspec: the landing mirror on an S3-compatible store, SFTP, ...

``paths.landing_mirror`` may be a URL (``s3://bucket/prefix``, ``sftp://host/path``,
``gs://``, ``az://``, ...) instead of a local folder; fsspec (and its driver: s3fs,
sshfs, ...) reaches it, so medlake does not talk any store's protocol itself. The layout
is the one of a local root: ``<root>/<ab>/<sha256>``.

Durability differs by backend, and this module keeps each one's strongest promise:

- **object stores** (``s3``, ``gs``, ``az``/``abfs``): an object exists only once its
  PUT (or the completion of its multipart upload) has succeeded, and the store answers
  only after it has stored the object durably; a failed or abandoned upload leaves no
  object. So the content's final key is written directly, and "landed" means that
  request succeeded. There is no ``fsync`` to call.
- **file systems reached over the network** (``sftp``, ...): written to a temporary
  name, closed, checked for its size, then renamed to the content name, so a broken
  connection never leaves a half file under a landed name. Whether the server syncs on
  close is the server's business (OpenSSH's ``sftp-server`` does not fsync); use such a
  mirror for a second site, with the primary's fsync as the local guarantee.

Every driver error (a refused connection, a timeout, an HTTP 5xx) becomes an
:class:`OSError`, so the mirrored writer treats a store that is down like a disk that
failed: the side is marked degraded and the write goes on to the other side.
"""

from __future__ import annotations

import contextlib
import errno
import re
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

_NAME = re.compile(r"^[0-9a-f]{64}$")
_READ_SIZE = 1 << 20
# Stores where a PUT is all or nothing, so the final key is written directly.
OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "abfs", "az", "adl", "memory"})


def as_os_error(exc: BaseException, where: str) -> OSError:
    """A driver's exception as an OSError naming the root (OSErrors pass through)."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return exc
    return OSError(errno.EIO, f"{type(exc).__name__}: {exc}".strip(), where)


@dataclass
class RemoteRoot:
    """One landing root at an fsspec URL: where each landed name lies, reads, writes."""

    url: str
    storage_options: Mapping[str, Any] = field(default_factory=dict)
    _fs: Any = field(default=None, repr=False)
    _base: str = field(default="", repr=False)

    def _open_fs(self) -> tuple[Any, str]:
        if self._fs is None:
            import fsspec  # the driver (s3fs, sshfs, ...) loads with the first remote root

            try:
                self._fs, self._base = fsspec.core.url_to_fs(self.url, **self.storage_options)
            except Exception as exc:  # unknown protocol, driver not installed
                raise as_os_error(exc, self.url) from exc
            self._base = self._base.rstrip("/")
        return self._fs, self._base

    @property
    def protocol(self) -> str:
        return self.url.split("://", 1)[0].lower()

    @property
    def atomic_put(self) -> bool:
        return self.protocol in OBJECT_STORES

    def key(self, sha256: str) -> str:
        _, base = self._open_fs()
        return f"{base}/{sha256[:2]}/{sha256}"

    def _call(self, action: str, fn: Any, *args: Any) -> Any:
        fs, _ = self._open_fs()
        try:
            return fn(fs, *args)
        except FileNotFoundError:
            raise
        except Exception as exc:
            raise as_os_error(exc, f"{self.url} ({action})") from exc

    def exists(self, sha256: str) -> bool:
        key = self.key(sha256)
        return bool(self._call("exists", lambda fs: (fs.invalidate_cache(key), fs.exists(key))[1]))

    def size(self, sha256: str) -> int:
        key = self.key(sha256)
        return int(self._call("info", lambda fs: fs.info(key)["size"]))

    def blocks(self, sha256: str) -> Iterator[bytes]:
        """The landed bytes, block by block (FileNotFoundError when absent)."""
        key = self.key(sha256)
        source = self._call("open", lambda fs: fs.open(key, "rb"))
        try:
            while True:
                block = self._call("read", lambda _fs: source.read(_READ_SIZE))
                if not block:
                    return
                yield block
        finally:
            with contextlib.suppress(Exception):
                source.close()

    def names(self) -> set[str]:
        """SHA-256 names landed under this root (temporaries and strays left out)."""

        def find(fs: Any) -> list[str]:
            fs.invalidate_cache()
            try:
                return list(fs.find(self._base))
            except FileNotFoundError:
                return []

        found = self._call("list", find)
        names = set()
        for path in found:
            parts = str(path).rstrip("/").rsplit("/", 2)
            if len(parts) == 3 and _NAME.match(parts[2]) and parts[1] == parts[2][:2]:
                names.add(parts[2])
        return names

    def reachable(self) -> bool:
        """Whether the store answers (an empty prefix of a reachable bucket counts)."""
        try:
            fs, base = self._open_fs()
            fs.invalidate_cache()
            if fs.exists(base):
                return True
            bucket = base.split("/", 1)[0]
            return bool(self.atomic_put and bucket != base and fs.exists(bucket))
        except Exception:
            return False

    def ensure(self) -> None:
        """Create the root (a bucket or folder) if the store lacks it: resync after loss."""
        _, base = self._open_fs()
        if self.atomic_put:
            bucket = base.split("/", 1)[0]
            if not self._call("exists", lambda fs: fs.exists(bucket)):
                self._call("mkdir", lambda fs: fs.mkdir(bucket))
            return
        self._call("makedirs", lambda fs: fs.makedirs(base, exist_ok=True))

    def writer(self, sha256: str) -> RemoteWrite:
        return RemoteWrite(self, sha256)


class RemoteWrite:
    """One landed name being written: ``open`` → ``write``… → ``commit`` (or ``abort``).

    Object stores: the final key, made visible by the PUT that ``commit`` completes (one
    request per small file, beside the HEAD that found it missing).
    Others: a temporary name, renamed to the final one once closed and its size checked.
    """

    def __init__(self, root: RemoteRoot, sha256: str) -> None:
        self.root, self.sha256 = root, sha256
        self.target = root.key(sha256)
        if root.atomic_put:
            self.name = self.target
        else:
            self.name = self.target.rsplit("/", 1)[0] + f"/.landing-{uuid.uuid4().hex}"
        self.out: IO[bytes] | None = None
        self.size = 0

    def open(self) -> None:
        def start(fs: Any) -> IO[bytes]:
            if not self.root.atomic_put:
                fs.makedirs(self.name.rsplit("/", 1)[0], exist_ok=True)
            return fs.open(self.name, "wb")

        self.out = self.root._call("open", start)

    def write(self, block: bytes) -> None:
        self.root._call("write", lambda _fs: self.out.write(block))  # type: ignore[union-attr]
        self.size += len(block)

    def commit(self) -> None:
        """Complete the upload (the PUT) and, off object stores, rename into place."""
        out, self.out = self.out, None
        self.root._call("close", lambda _fs: out.close())  # type: ignore[union-attr]
        if self.root.atomic_put:
            return  # the store answered the PUT: the whole object is there (no extra HEAD)
        stored = self.root._call("info", lambda fs: fs.info(self.name)["size"])
        if int(stored) != self.size:
            raise OSError(errno.EIO, f"stored {stored} bytes of {self.size}", self.name)
        self.root._call("rename", lambda fs: fs.mv(self.name, self.target))

    def abort(self) -> None:
        """Leave nothing under the landed name: discard the upload, remove a temporary."""
        out, self.out = self.out, None
        if out is not None:
            with contextlib.suppress(Exception):
                out.discard()  # type: ignore[attr-defined]  # aborts a multipart upload
            with contextlib.suppress(Exception):
                out.closed = True  # type: ignore[misc]  # or closing would send the PUT
        if not self.root.atomic_put:
            with contextlib.suppress(Exception):
                self.root._call("remove", lambda fs: fs.rm(self.name))
