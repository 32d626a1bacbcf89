"""An object store that is a directory: one file per object, written atomically, with checksums.

The layout (where each key's file is: a key is a path, ``attachments/2026/x.webp``; keys that cannot be
paths are kept apart under ``.keys/``; stores of the older flat layout read as they are until ``up``
converts them) is toolkit/stores/layout.py, documented in docs/object-layout.md so an app can read and
write the files directly. The meta cache (checksums, content type) is toolkit/stores/objmeta.py. Partial
writes go to ``<root>/.tmp/`` and are renamed into place when complete.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from toolkit.contract import ObjectInfo, ObjectStore
from toolkit.errors import BadInput, ProviderError
from toolkit.paths import private_dir
from toolkit.run.locks import gone_here
from toolkit.stores import layout
from toolkit.stores.objmeta import load_meta, store_meta

CHUNK = 1 << 20
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
    """The key's flat name (toolkit/stores/layout.py), with Lifeboat's error for a bad key."""
    try:
        return layout.flat_name(key)
    except ValueError:
        raise BadInput(f"object key {key[:60]!r} must be 1 to 1024 bytes of UTF-8.", code="objects.bad_key") from None


def checked(key: str) -> str:
    encode_key(key)
    return key


def not_an_object(exc: layout.NotAnObject, bucket: str, where: str = "") -> ProviderError:
    return ProviderError(f"bucket {bucket}{where}: {exc}. Nothing was skipped: Lifeboat stops rather than leave "
                         "it behind.", code="objects.not_an_object")


class HeadChecksum:
    """``checksum`` of a store whose ``head`` already gives the SHA-256, computed where the files are (here,
    or on the SSH host by its lister)."""

    def checksum(self, bucket: str, key: str) -> str:
        info = self.head(bucket, key)
        if info is None:
            raise ProviderError(f"object {key!r} not found in bucket {bucket}.", code="objects.not_found")
        return info.sha256


class FolderReads(HeadChecksum, ObjectStore):
    """The read side of a store whose objects are files in folders (toolkit/stores/layout.py): listing,
    heads, reads, checksums and counts. A store gives ``_bucket(bucket)`` (the bucket's
    :class:`layout.Bucket`) and ``_info(data, meta, key)`` (an object's size and checksums)."""

    NATIVE_CHECKSUMS = ("sha256", "md5")

    def _bucket(self, bucket: str) -> layout.Bucket:
        raise NotImplementedError

    def _info(self, data: str, meta: str | None, key: str | None) -> ObjectInfo | None:
        raise NotImplementedError

    def _walk(self, bucket: str, prefix: str = ""):
        places = self._bucket(bucket)
        try:
            yield from places.walk(prefix)
        except layout.NotAnObject as exc:
            raise not_an_object(exc, bucket) from None

    def list(self, bucket: str, prefix: str = "") -> Iterator[ObjectInfo]:
        entries = []
        for key, data, meta in self._walk(bucket, prefix):
            if key is None:
                key = (load_meta(data, meta)[1] or {}).get("key")
                if key is None or not key.startswith(prefix):
                    continue
            entries.append((key, data, meta))
        entries.sort()
        for key, data, meta in entries:
            info = self._info(data, meta, key)
            if info is not None:
                yield info

    def path_of(self, bucket: str, key: str) -> Path | None:
        """The file that holds ``key``'s object, or None."""
        found = self._bucket(bucket).find(checked(key))
        return Path(found[0]) if found else None

    def head(self, bucket: str, key: str) -> ObjectInfo | None:
        found = self._bucket(bucket).find(checked(key))
        return self._info(found[0], found[1], key) if found else None

    @contextmanager
    def open_read(self, bucket: str, key: str):
        found = self._bucket(bucket).find(checked(key))
        try:
            handle = open(found[0], "rb") if found else None
        except FileNotFoundError:
            handle = None
        if handle is None:
            raise ProviderError(f"object {key!r} not found in bucket {bucket}.", code="objects.not_found")
        with handle:
            yield handle

    def stats(self, bucket: str) -> tuple[int, int]:
        """(objects, bytes) without hashing anything."""
        try:
            return self._bucket(bucket).stats()
        except layout.NotAnObject as exc:
            raise not_an_object(exc, bucket) from None


class DirectoryStore(FolderReads):
    def __init__(self, root: str | os.PathLike, *, file_mode: int = 0o600):
        self.root = Path(root)
        self.file_mode = file_mode  # of the files it writes (folders: x wherever r is)

    # -- paths
    def bucket_dir(self, bucket: str) -> Path:
        if not bucket or "/" in bucket or bucket.startswith("."):
            raise BadInput(f"bad bucket name {bucket!r}.", code="objects.bad_bucket")
        return self.root / bucket

    def layout(self) -> int:
        try:
            return layout.layout_of(str(self.root))
        except layout.LayoutError as exc:
            raise ProviderError(str(exc) + ".", code="objects.layout") from None

    def layout_found(self) -> int:
        """The store's layout as it is, marking nothing (0: a conversion was interrupted)."""
        try:
            return layout.layout_of(str(self.root), mark=False)
        except layout.LayoutError:
            return 0

    def _bucket(self, bucket: str) -> layout.Bucket:
        """The bucket's places (toolkit/stores/layout.py); it must exist."""
        path = self.bucket_dir(bucket)
        if not path.is_dir():
            raise ProviderError(f"bucket {bucket} does not exist at {self.root}.", code="objects.no_bucket")
        return layout.Bucket(str(self.root), bucket, self.layout(), self.file_mode)

    def create_bucket(self, bucket: str) -> None:
        private_dir(self.root)
        self.layout()  # a new store is marked nested before its .meta exists (which alone would say flat)
        for path in (self.bucket_dir(bucket), self.root / ".meta" / bucket, self.root / ".tmp"):
            private_dir(path)

    def convert_layout(self, log=None) -> int:
        """Convert a store of the flat layout to nested paths (toolkit/stores/layout.py convert): the number
        of objects moved, 0 when it is nested already."""
        return layout.convert(str(self.root), self.file_mode, log)

    def bucket_exists(self, bucket: str) -> bool:
        return self.bucket_dir(bucket).is_dir()

    # -- metadata (toolkit/stores/objmeta.py: the data file's extended attribute, else a file of its own)
    def _info(self, data: str, meta: str, key: str | None) -> ObjectInfo | None:
        try:
            st = os.lstat(data)
        except (FileNotFoundError, NotADirectoryError):
            return None
        cached, anything = load_meta(data, meta, st)
        if cached:
            return ObjectInfo(key or cached["key"], st.st_size, cached["sha256"], cached.get("md5"),
                              {"content_type": cached.get("content_type")})
        # Written by someone else (the app) or the cache is stale: compute where the data lives.
        sha, md5 = hash_file(data)
        content_type = (anything or {}).get("content_type")
        if key is None:
            key = (anything or {}).get("key")
            if key is None:
                return None
        try:
            self._write_meta(data, meta, key, st, sha, md5, content_type)
        except OSError:
            pass  # a cache only: the next read hashes it again
        return ObjectInfo(key, st.st_size, sha, md5, {"content_type": content_type})

    def _write_meta(self, data, meta: str, key, st, sha, md5, content_type) -> None:
        store_meta(data, str(meta), {"key": key, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                                     "mtime_s": int(st.st_mtime), "sha256": sha, "md5": md5,
                                     "content_type": content_type})

    # -- contract: the reads are FolderReads'
    def write(self, bucket: str, key: str, stream: BinaryIO, *, size: int | None = None,
              content_type: str | None = None) -> ObjectInfo:
        places = self._bucket(bucket)
        checked(key)
        tmpdir = self.root / ".tmp"
        private_dir(tmpdir)
        tmp = str(tmpdir / partial_name())
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                sha, md5, written = layout.copy_hashed(stream, out, CHUNK)
            if size is not None and written != size:
                raise ProviderError(f"object {key!r}: expected {size} bytes, the stream gave {written}; "
                                    "nothing was stored.", code="objects.short_write")
            places.settle(tmp)
            data, meta, elsewhere = places.target(key)
            # the cache goes with the file (in its attribute) before it is renamed into place
            self._write_meta(tmp, meta, key, os.stat(tmp), sha.hexdigest(), md5.hexdigest(), content_type)
            os.replace(tmp, data)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        places.remove(elsewhere)  # an older copy under its other name
        return ObjectInfo(key, written, sha.hexdigest(), md5.hexdigest(), {"content_type": content_type})

    def delete(self, bucket: str, key: str) -> None:
        places = self._bucket(bucket)
        places.remove(places.places(checked(key)))

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


def hash_file(path) -> tuple[str, str]:
    """(SHA-256, MD5) of a file's bytes, hex."""
    with open(path, "rb") as handle:
        sha, md5, _ = layout.hash_stream(handle, CHUNK)
    return sha.hexdigest(), md5.hexdigest()
