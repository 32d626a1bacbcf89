"""An object store that is a directory: one file per object, written atomically, with checksums.

Layout under ``root`` (documented in docs/object-layout.md, so an app can read it directly):

    <root>/<bucket>/<encoded key>          the object's bytes
    <root>/.meta/<bucket>/<encoded key>    JSON: key, size, sha256, md5, mtime_ns (a cache, never trusted
                                           unless size and mtime match the data file), where the data
                                           file's attribute user.lifeboat.meta cannot hold it
                                           (toolkit/stores/objmeta.py)
    <root>/.tmp/                           partial writes; renamed into place when complete

A key is encoded as one file name: percent-encoding of every byte outside [A-Za-z0-9_-.~ ] except that a
leading "." or "~" is encoded too, so "a/b", "../x" and "." are all plain names in one directory. Keys whose
encoded name would exceed 240 bytes are stored as "~<sha256 of key>" and their key is kept in the meta.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote, unquote

from toolkit.contract import ObjectInfo, ObjectStore
from toolkit.errors import BadInput, ProviderError
from toolkit.paths import private_dir
from toolkit.run.locks import gone_here
from toolkit.stores.objmeta import load_meta, store_meta

CHUNK = 1 << 20
MAX_NAME = 240
STALE_PARTIAL = 24 * 3600


def partial_name() -> str:
    """Name of a partial write under .tmp/: says which process on which machine writes it."""
    return f"w-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:12]}"


def stale_partial(name: str, mtime: float) -> bool:
    """A partial write nobody will finish: its writer ran on this machine and is gone, or it is a day old."""
    if not name.startswith("w-"):
        return False
    if time.time() - mtime > STALE_PARTIAL:
        return True
    try:
        host, pid, _ = name[2:].rsplit("-", 2)
        return gone_here(host, int(pid))
    except ValueError:
        return False


def encode_key(key: str) -> str:
    if not key or len(key.encode("utf-8")) > 1024:
        raise BadInput(f"object key {key[:60]!r} must be 1 to 1024 bytes of UTF-8.", code="objects.bad_key")
    name = quote(key, safe=" ")
    if name.startswith((".", "~")):  # no hidden files, and "~" marks hashed names
        name = f"%{ord(name[0]):02X}" + name[1:]
    if len(name.encode()) > MAX_NAME:
        return "~" + hashlib.sha256(key.encode("utf-8")).hexdigest()
    return name


def decode_name(name: str) -> str | None:
    """The key for a file name, or None when it must come from the meta file (hashed names)."""
    if name.startswith("~"):
        return None
    return unquote(name)


class DirectoryStore(ObjectStore):
    NATIVE_CHECKSUMS = ("sha256", "md5")

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    # -- paths
    def bucket_dir(self, bucket: str) -> Path:
        if not bucket or "/" in bucket or bucket.startswith("."):
            raise BadInput(f"bad bucket name {bucket!r}.", code="objects.bad_bucket")
        return self.root / bucket

    def _paths(self, bucket: str, key: str) -> tuple[Path, Path]:
        name = encode_key(key)
        return self.bucket_dir(bucket) / name, self.root / ".meta" / bucket / name

    def create_bucket(self, bucket: str) -> None:
        for path in (self.bucket_dir(bucket), self.root / ".meta" / bucket, self.root / ".tmp"):
            private_dir(path)

    def bucket_exists(self, bucket: str) -> bool:
        return self.bucket_dir(bucket).is_dir()

    def _require(self, bucket: str) -> Path:
        path = self.bucket_dir(bucket)
        if not path.is_dir():
            raise ProviderError(f"bucket {bucket} does not exist at {self.root}.", code="objects.no_bucket")
        return path

    # -- metadata (toolkit/stores/objmeta.py: the data file's extended attribute, else a file of its own)
    def _info(self, data: Path, meta: Path, key: str | None) -> ObjectInfo | None:
        try:
            st = data.stat()
        except FileNotFoundError:
            return None
        cached, anything = load_meta(data, meta, st)
        if cached:
            return ObjectInfo(cached["key"], st.st_size, cached["sha256"], cached.get("md5"),
                              {"content_type": cached.get("content_type")})
        # Written by someone else (the app) or the cache is stale: compute where the data lives.
        sha, md5 = _hash_file(data)
        content_type = (anything or {}).get("content_type")
        if key is None:
            key = (anything or {}).get("key")
            if key is None:
                return None
        self._write_meta(data, meta, key, st, sha, md5, content_type)
        return ObjectInfo(key, st.st_size, sha, md5, {"content_type": content_type})

    def _write_meta(self, data, meta: Path, key, st, sha, md5, content_type) -> None:
        store_meta(data, str(meta), {"key": key, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                                     "mtime_s": int(st.st_mtime), "sha256": sha, "md5": md5,
                                     "content_type": content_type})

    # -- contract
    def list(self, bucket: str, prefix: str = "") -> Iterator[ObjectInfo]:
        directory = self._require(bucket)
        entries = []
        with os.scandir(directory) as it:
            for entry in it:
                if not entry.is_file(follow_symlinks=False):
                    continue
                key = decode_name(entry.name)
                if key is None:
                    key = (load_meta(entry.path, self.root / ".meta" / bucket / entry.name)[1] or {}).get("key")
                    if key is None:
                        continue
                if key.startswith(prefix):
                    entries.append((key, entry.name))
        entries.sort()
        for key, name in entries:
            info = self._info(directory / name, self.root / ".meta" / bucket / name, key)
            if info is not None:
                yield info

    def head(self, bucket: str, key: str) -> ObjectInfo | None:
        self._require(bucket)
        data, meta = self._paths(bucket, key)
        return self._info(data, meta, key)

    @contextmanager
    def open_read(self, bucket: str, key: str):
        self._require(bucket)
        data, _ = self._paths(bucket, key)
        try:
            handle = open(data, "rb")
        except FileNotFoundError:
            raise ProviderError(f"object {key!r} not found in bucket {bucket}.", code="objects.not_found") from None
        with handle:
            yield handle

    def write(self, bucket: str, key: str, stream: BinaryIO, *, size: int | None = None,
              content_type: str | None = None) -> ObjectInfo:
        self._require(bucket)
        data, meta = self._paths(bucket, key)
        tmpdir = self.root / ".tmp"
        private_dir(tmpdir)
        sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
        written = 0
        tmp = str(tmpdir / partial_name())
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                while True:
                    chunk = stream.read(CHUNK)
                    if not chunk:
                        break
                    sha.update(chunk)
                    md5.update(chunk)
                    out.write(chunk)
                    written += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            if size is not None and written != size:
                raise ProviderError(f"object {key!r}: expected {size} bytes, the stream gave {written}; "
                                    "nothing was stored.", code="objects.short_write")
            # the cache goes with the file (in its attribute) before it is renamed into place
            self._write_meta(tmp, meta, key, os.stat(tmp), sha.hexdigest(), md5.hexdigest(), content_type)
            os.replace(tmp, data)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        return ObjectInfo(key, written, sha.hexdigest(), md5.hexdigest(), {"content_type": content_type})

    def delete(self, bucket: str, key: str) -> None:
        self._require(bucket)
        data, meta = self._paths(bucket, key)
        for path in (data, meta):
            try:
                path.unlink()
            except FileNotFoundError:
                pass

    def sweep_partial(self) -> int:
        removed = 0
        try:
            entries = list(os.scandir(self.root / ".tmp"))
        except FileNotFoundError:
            return 0
        for entry in entries:
            try:
                if entry.is_file(follow_symlinks=False) and stale_partial(entry.name, entry.stat().st_mtime):
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:
                pass
        return removed

    def checksum(self, bucket: str, key: str) -> str:
        info = self.head(bucket, key)
        if info is None:
            raise ProviderError(f"object {key!r} not found in bucket {bucket}.", code="objects.not_found")
        return info.sha256

    def stats(self, bucket: str) -> tuple[int, int]:
        """(objects, bytes) without hashing anything."""
        count = total = 0
        with os.scandir(self._require(bucket)) as it:
            for entry in it:
                if entry.is_file(follow_symlinks=False):
                    count += 1
                    total += entry.stat().st_size
        return count, total


def _hash_file(path: Path) -> tuple[str, str]:
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while True:
            chunk = handle.read(CHUNK)
            if not chunk:
                break
            sha.update(chunk)
            md5.update(chunk)
    return sha.hexdigest(), md5.hexdigest()
