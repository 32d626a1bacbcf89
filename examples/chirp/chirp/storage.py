"""Media storage as streams: a directory (Lifeboat's directory-store layout), an S3 bucket, an Azure Blob
container or a Google Cloud Storage bucket, as Lifeboat's ``BUCKET_MEDIA_*`` variables say
(docs/app-contract.md). The Azure and GCS SDKs are imported only for those stores: add
``azure-storage-blob`` or ``google-cloud-storage`` to requirements.txt when the media lives there."""

import hashlib
import json
import os
import tempfile
from pathlib import Path
from urllib.parse import quote, unquote, urlparse

from . import config

CHUNK = 1 << 20


class DirectoryMedia:
    """A folder of files, a key being a path in it (as in Lifeboat's directory store: docs/object-layout.md)."""

    def __init__(self, path: str):
        self.root = Path(path)

    def path(self, key: str) -> Path:
        parts = key.split("/")
        if any(part in ("", ".", "..") for part in parts):
            raise ValueError(f"chirp keeps media at plain paths; {key!r} is not one")
        return self.root.joinpath(*parts)

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
            target = self.path(key)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, target)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return size, digest.hexdigest()

    def open(self, key: str):
        path = self.path(key)
        return open(path, "rb"), path.stat().st_size

    def keys(self):
        for folder, _, files in os.walk(self.root):
            for name in files:
                yield Path(folder, name).relative_to(self.root).as_posix()


def var(name: str) -> str | None:
    return os.environ.get(f"BUCKET_MEDIA_{name}") or None


def spooled(stream):
    """The upload in a spool (memory, then disk), its size and SHA-256."""
    spool = tempfile.SpooledTemporaryFile(max_size=8 << 20)
    digest, size = hashlib.sha256(), 0
    for chunk in iter(lambda: stream.read(CHUNK), b""):
        digest.update(chunk)
        size += len(chunk)
        spool.write(chunk)
    spool.seek(0)
    return spool, size, digest.hexdigest()


class S3Media:
    def __init__(self, bucket: str):
        import boto3

        self.bucket = bucket
        key, secret = var("ACCESS_KEY_ID"), var("SECRET_ACCESS_KEY")
        credentials = {"aws_access_key_id": key, "aws_secret_access_key": secret} if key and secret else {}
        self.client = boto3.client("s3", endpoint_url=var("ENDPOINT"), region_name=var("REGION"), **credentials)

    def put(self, key: str, stream, content_type: str | None = None) -> tuple[int, str]:
        spool, size, sha = spooled(stream)
        with spool:
            extra = {"ContentType": content_type} if content_type else {}
            self.client.upload_fileobj(spool, self.bucket, key, ExtraArgs=extra or None)
        return size, sha

    def open(self, key: str):
        obj = self.client.get_object(Bucket=self.bucket, Key=key)
        return obj["Body"], obj["ContentLength"]

    def keys(self):
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket):
            for item in page.get("Contents", []):
                yield item["Key"]


class AzureMedia:
    def __init__(self, container: str):
        from azure.storage.blob import BlobServiceClient

        service = BlobServiceClient(var("ENDPOINT"), credential={"account_name": var("ACCOUNT"),
                                                                 "account_key": var("KEY")},
                                    max_single_get_size=4 << 20, max_chunk_get_size=4 << 20)
        self.container = service.get_container_client(container)

    def put(self, key: str, stream, content_type: str | None = None) -> tuple[int, str]:
        from azure.storage.blob import ContentSettings

        spool, size, sha = spooled(stream)
        with spool:
            self.container.upload_blob(key, spool, length=size, overwrite=True,
                                       content_settings=ContentSettings(content_type=content_type))
        return size, sha

    def open(self, key: str):
        download = self.container.download_blob(key, max_concurrency=1)
        return _Reader(download), download.size

    def keys(self):
        for blob in self.container.list_blobs():
            yield blob.name


class GcsMedia:
    def __init__(self, bucket: str):
        from google.cloud import storage

        options = {"api_endpoint": var("ENDPOINT")} if var("ENDPOINT") else None
        if var("CREDENTIALS"):
            from google.oauth2 import service_account

            credentials = service_account.Credentials.from_service_account_info(json.loads(var("CREDENTIALS")))
        elif var("ENDPOINT"):
            from google.auth.credentials import AnonymousCredentials

            credentials = AnonymousCredentials()  # an emulator
        else:
            credentials = None  # the machine's default credentials
        client = storage.Client(project=var("PROJECT"), credentials=credentials, client_options=options)
        self.bucket = client.bucket(bucket)

    def put(self, key: str, stream, content_type: str | None = None) -> tuple[int, str]:
        spool, size, sha = spooled(stream)
        with spool:
            self.bucket.blob(key).upload_from_file(spool, size=size, content_type=content_type)
        return size, sha

    def open(self, key: str):
        blob = self.bucket.get_blob(key)
        if blob is None:
            raise FileNotFoundError(key)
        return blob.open("rb", chunk_size=CHUNK), blob.size

    def keys(self):
        for blob in self.bucket.list_blobs():
            yield blob.name


class HttpMedia:
    """The media gateway Lifeboat runs on a bare-metal storage host, for apps on the other hosts."""

    def __init__(self, url: str):
        self.base = url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {var('TOKEN') or ''}"}

    def _request(self, method: str, key: str = "", **kwargs):
        import urllib.request

        url = f"{self.base}/{quote(key, safe='')}" if key else f"{self.base}/"
        request = urllib.request.Request(url, method=method, headers={**self.headers, **kwargs.pop("headers", {})},
                                         **kwargs)
        return urllib.request.urlopen(request, timeout=60)  # noqa: S310 - the gateway Lifeboat configured

    def put(self, key: str, stream, content_type: str | None = None) -> tuple[int, str]:
        spool, size, sha = spooled(stream)
        with spool, self._request("PUT", key, data=spool, headers={"Content-Length": str(size)}) as resp:
            stored = json.loads(resp.read())
        if stored["sha256"] != sha or stored["size"] != size:
            raise OSError(f"the media gateway stored {stored['size']} bytes of {size} for {key!r}")
        return size, sha

    def open(self, key: str):
        import urllib.error

        try:
            resp = self._request("GET", key)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                raise FileNotFoundError(key) from None
            raise
        return resp, int(resp.headers["Content-Length"])

    def keys(self):
        with self._request("GET") as resp:
            yield from json.loads(resp.read())["keys"]


class _Reader:
    """The SDK's downloader (read(n) streams block by block) with the close() the web handler calls."""

    def __init__(self, download):
        self.read = download.read

    def close(self) -> None:
        pass


def media():
    url = config.media_url()
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return DirectoryMedia(unquote(parsed.path))
    if parsed.scheme == "s3":
        return S3Media(parsed.netloc)
    if parsed.scheme in ("http", "https"):
        return HttpMedia(url)
    if parsed.scheme == "az":
        return AzureMedia(parsed.netloc)
    if parsed.scheme == "gs":
        return GcsMedia(parsed.netloc)
    raise SystemExit(f"chirp: unsupported BUCKET_MEDIA_URL scheme {parsed.scheme!r}")
