"""Media storage: a directory (Lifeboat's directory-store layout) or an S3 bucket, as streams."""

import hashlib
import os
import tempfile
from pathlib import Path
from urllib.parse import quote, unquote, urlparse

from . import config

CHUNK = 1 << 20


def encode_key(key: str) -> str:
    """The directory store's file name for a key (see Lifeboat docs/object-layout.md)."""
    name = quote(key, safe=" ")
    if name.startswith((".", "~")):  # no hidden files, and "~" marks hashed names
        name = f"%{ord(name[0]):02X}" + name[1:]
    if len(name.encode()) > 240:
        raise ValueError("key too long for chirp's directory backend")
    return name


class DirectoryMedia:
    def __init__(self, path: str):
        self.root = Path(path)

    def put(self, key: str, stream, content_type: str | None = None) -> tuple[int, str]:
        tmpdir = self.root.parent / ".tmp"
        tmpdir.mkdir(parents=True, exist_ok=True)
        digest, size = hashlib.sha256(), 0
        fd, tmp = tempfile.mkstemp(dir=tmpdir, prefix="chirp-")
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in iter(lambda: stream.read(CHUNK), b""):
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.root / encode_key(key))
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return size, digest.hexdigest()

    def open(self, key: str):
        path = self.root / encode_key(key)
        return open(path, "rb"), path.stat().st_size

    def keys(self):
        for entry in os.scandir(self.root):
            if entry.is_file() and not entry.name.startswith("~"):
                yield unquote(entry.name)


class S3Media:
    def __init__(self, bucket: str):
        import boto3

        self.bucket = bucket
        endpoint = os.environ.get("BUCKET_MEDIA_ENDPOINT") or None
        self.client = boto3.client("s3", endpoint_url=endpoint)

    def put(self, key: str, stream, content_type: str | None = None) -> tuple[int, str]:
        with tempfile.SpooledTemporaryFile(max_size=8 << 20) as spool:
            digest, size = hashlib.sha256(), 0
            for chunk in iter(lambda: stream.read(CHUNK), b""):
                digest.update(chunk)
                size += len(chunk)
                spool.write(chunk)
            spool.seek(0)
            extra = {"ContentType": content_type} if content_type else {}
            self.client.upload_fileobj(spool, self.bucket, key, ExtraArgs=extra or None)
        return size, digest.hexdigest()

    def open(self, key: str):
        obj = self.client.get_object(Bucket=self.bucket, Key=key)
        return obj["Body"], obj["ContentLength"]

    def keys(self):
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket):
            for item in page.get("Contents", []):
                yield item["Key"]


def media():
    url = config.media_url()
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return DirectoryMedia(unquote(parsed.path))
    if parsed.scheme == "s3":
        return S3Media(parsed.netloc)
    raise SystemExit(f"chirp: unsupported BUCKET_MEDIA_URL scheme {parsed.scheme!r}")
