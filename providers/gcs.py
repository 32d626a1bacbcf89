"""``type: gcs``: Google Cloud Storage as a target of its own (objects only), like ``type: s3`` and
``type: azure-blob``: it keeps backups off every host the stack runs on and holds buckets.

Objects up to 8 MiB go in one request with their MD5 and CRC32C for the service to check (so a short
stream stores nothing); larger ones as a resumable upload in 8 MiB chunks, finalised only by the last one
(a stream that ends short leaves no object). GCS records MD5 and CRC32C natively; Lifeboat adds the
SHA-256 to the object's metadata. Reads stream by ranges (flat memory). Credentials: a service-account key
file named by the environment variable the target gives (default GOOGLE_APPLICATION_CREDENTIALS); an
emulator reached through ``endpoint_url`` needs none. The SDK (google-cloud-storage) is imported only when
such a target is used: ``pip install 'lifeboat[gcs]'``.

```yaml
providers:
  gcs:
    type: gcs
    project: my-project
    # credentials_env: GOOGLE_APPLICATION_CREDENTIALS
    # bucket_prefix: chirp-gcs-        # the stack's buckets there (default <stack>-<target>-; names are global)
```
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
from contextlib import contextmanager

from toolkit.config.schema import Field, Str
from toolkit.contract import BucketsOnly, ObjectInfo, ObjectStore, Provider, bucket_var, read_full
from toolkit.errors import BadInput, ProviderError, ProviderUnreachable

SIMPLE_MAX = 8 << 20
CHUNK = 8 << 20  # a multiple of 256 KiB, as resumable uploads require
SHA_META = "lifeboat_sha256"
ENV_NAME = r"[A-Za-z_][A-Za-z0-9_]{0,127}"


def _sdk():
    try:
        from google.cloud import storage
    except ImportError:
        raise BadInput("the gcs target needs the Google Cloud SDK: pip install 'lifeboat[gcs]' "
                       "(google-cloud-storage).", code="gcs.no_sdk") from None
    return storage


class GcsStore(ObjectStore):
    NATIVE_CHECKSUMS = ("md5", "crc32c")
    PARALLEL = 8

    def __init__(self, client, names: dict[str, str], label: str):
        self.client, self.names, self.label = client, names, label

    def real(self, bucket: str) -> str:
        return self.names.get(bucket, bucket)

    def _bucket(self, bucket: str):
        return self.client.bucket(self.real(bucket))

    @staticmethod
    def _info(blob) -> ObjectInfo:
        md5 = base64.b64decode(blob.md5_hash).hex() if blob.md5_hash else None
        return ObjectInfo(blob.name, int(blob.size or 0), (blob.metadata or {}).get(SHA_META), md5,
                          {"content_type": blob.content_type, "crc32c": blob.crc32c, "generation": blob.generation})

    def _no_bucket(self, bucket: str) -> ProviderError:
        return ProviderError(f"bucket {bucket} does not exist at {self.label}.", code="objects.no_bucket")

    def list(self, bucket, prefix=""):
        from google.api_core.exceptions import NotFound

        try:
            for blob in self.client.list_blobs(self.real(bucket), prefix=prefix or None):
                yield self._info(blob)
        except NotFound:
            raise self._no_bucket(bucket) from None

    def head(self, bucket, key):
        from google.api_core.exceptions import NotFound

        try:
            blob = self._bucket(bucket).get_blob(key)
        except NotFound:
            raise self._no_bucket(bucket) from None
        return self._info(blob) if blob is not None else None

    @contextmanager
    def open_read(self, bucket, key):
        blob = self._bucket(bucket).get_blob(key)
        if blob is None:
            raise ProviderError(f"{self.label}: no object {key!r} in bucket {bucket}.", code="objects.missing")
        # Pinned to the generation first seen: a replaced object fails the read instead of mixing versions.
        with blob.open("rb", chunk_size=4 << 20, if_generation_match=blob.generation) as reader:
            yield reader

    def write(self, bucket, key, stream, *, size=None, content_type=None):
        from google.api_core.exceptions import NotFound

        blob = self._bucket(bucket).blob(key, chunk_size=CHUNK)
        counted = _Counted(stream, size)
        head = read_full(counted, SIMPLE_MAX + 1)
        try:
            if len(head) <= SIMPLE_MAX:
                counted.check_end()
                sha = hashlib.sha256(head).hexdigest()
                blob.metadata = {SHA_META: sha}
                blob.upload_from_file(io.BytesIO(head), size=len(head), content_type=content_type,
                                      checksum="md5", if_generation_match=None)
                return ObjectInfo(key, len(head), sha, hashlib.md5(head).hexdigest(),  # noqa: S324 - GCS's MD5
                                  {"content_type": content_type})
            # Larger: resumable; the SHA-256 is known only at the end, so it is added to the metadata then.
            joined = _Joined(head, counted)
            blob.upload_from_file(joined, size=size, content_type=content_type, checksum="crc32c")
        except NotFound:
            raise self._no_bucket(bucket) from None
        sha = counted.sha.hexdigest()
        blob.metadata = {SHA_META: sha}
        blob.patch()
        return ObjectInfo(key, counted.count, sha, None, {"content_type": content_type})

    def delete(self, bucket, key):
        from google.api_core.exceptions import NotFound

        try:
            self._bucket(bucket).blob(key).delete()
        except NotFound:
            pass

    def checksum(self, bucket, key):
        return self._recorded_or_read_sha256(bucket, key, self.label)

    def create_bucket(self, bucket: str) -> None:
        from google.api_core.exceptions import Conflict

        try:
            self.client.create_bucket(self.real(bucket))
        except Conflict:
            pass

    def remove_bucket(self, bucket: str) -> None:
        from google.api_core.exceptions import NotFound

        try:
            for blob in self.client.list_blobs(self.real(bucket)):
                blob.delete()
            self.client.bucket(self.real(bucket)).delete()
        except NotFound:
            pass


class _Counted:
    """Reads through, counting and hashing; more than ``size`` bytes, or fewer at the end, is an error."""

    def __init__(self, stream, size: int | None):
        self.stream, self.size, self.count, self.sha = stream, size, 0, hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.stream.read(n)
        self.count += len(data)
        if self.size is not None and self.count > self.size:
            raise ProviderError(f"the stream gave more than {self.size} bytes; nothing was stored.",
                                code="objects.short_write")
        self.sha.update(data)
        return data

    def check_end(self) -> None:
        if self.size is not None and self.count != self.size:
            raise ProviderError(f"expected {self.size} bytes, the stream gave {self.count}; nothing was stored.",
                                code="objects.short_write")


class _Joined:
    """The bytes already read, then the rest of the stream; an early end (fewer than the size said) is an
    error raised before the upload's last chunk is sent, so no object is made."""

    def __init__(self, head: bytes, rest: _Counted):
        self.head, self.rest, self.given = io.BytesIO(head), rest, 0

    def read(self, n: int = -1) -> bytes:
        data = self.head.read(n)
        if n is None or n < 0:
            data += self.rest.read()
        elif len(data) < n:
            data += read_full(self.rest, n - len(data))
        if n is None or n < 0 or len(data) < n:  # the end: it must be where the size said
            self.rest.check_end()
        self.given += len(data)
        return data

    def tell(self) -> int:
        return self.given


class GcsProvider(BucketsOnly, Provider):
    TYPE = "gcs"
    DESCRIPTION = "Google Cloud Storage: buckets and backups only"
    SERVICES = frozenset({"objects"})
    FEATURES = {"checksums.md5": True, "checksums.crc32c": True, "runs_services": False}
    SETTINGS = {
        "project": Field(Str(pattern=r"[a-z][a-z0-9-]{4,61}[a-z0-9]", expected="a Google Cloud project id"),
                         required=True, doc="the project the buckets belong to"),
        "credentials_env": Field(Str(pattern=ENV_NAME, expected="an environment variable name"),
                                 default="GOOGLE_APPLICATION_CREDENTIALS",
                                 doc="the variable holding the path of a service-account key file"),
        "endpoint_url": Field(Str(pattern=r"https?://[^\s]+", expected="the storage API URL"),
                              doc="another endpoint (an emulator); default Google's"),
        "bucket_prefix": Field(Str(pattern=r"[a-z0-9][a-z0-9-]{0,40}", expected="lowercase letters, digits, -"),
                               doc="prefix of the stack's bucket names there (default <stack>-<target>-)"),
    }

    def __init__(self, stack, target):
        super().__init__(stack, target)
        self._client = None

    def key_file(self) -> str | None:
        """The service-account key file the target's variable names; None with an emulator endpoint."""
        name = self.settings.get("credentials_env") or "GOOGLE_APPLICATION_CREDENTIALS"
        key_file = os.environ.get(name)
        if not key_file and not self.settings.get("endpoint_url"):
            raise BadInput(f"{self.label}: the environment variable {name} (the path of a service-account "
                           "key file) is not set.", hint="export it before running Lifeboat.",
                           code="gcs.no_credentials")
        return key_file or None

    def client(self):
        if self._client is None:
            storage = _sdk()
            endpoint = self.settings.get("endpoint_url")
            name = self.settings.get("credentials_env") or "GOOGLE_APPLICATION_CREDENTIALS"
            key_file = self.key_file()
            options = {"api_endpoint": endpoint} if endpoint else None
            if key_file:
                from google.oauth2 import service_account

                try:
                    credentials = service_account.Credentials.from_service_account_file(key_file)
                except (OSError, ValueError) as exc:
                    raise BadInput(f"{self.label}: cannot read the service-account key named by {name} ({exc}).",
                                   code="gcs.credentials") from None
            else:
                from google.auth.credentials import AnonymousCredentials

                credentials = AnonymousCredentials()  # an emulator
            self._client = storage.Client(project=self.settings["project"], credentials=credentials,
                                          client_options=options)
        return self._client

    def objects(self) -> GcsStore:
        return GcsStore(self.client(), self.names(), self.label)

    def check(self) -> dict:
        from google.api_core.exceptions import Forbidden, Unauthorized
        from google.auth.exceptions import TransportError

        try:
            found = sum(1 for _ in self.client().list_buckets())
        except (Forbidden, Unauthorized) as exc:
            raise ProviderUnreachable(f"{self.label}: Google Cloud Storage refused the credentials ({exc.message}).",
                                      code="gcs.credentials") from None
        except (TransportError, OSError) as exc:
            raise ProviderUnreachable(f"{self.label}: the storage API does not answer ({exc}).",
                                      code="gcs.unreachable") from None
        except Exception as exc:
            if "Connection" in type(exc).__name__ or "connection" in str(exc).lower():
                raise ProviderUnreachable(f"{self.label}: the storage API does not answer ({exc}).",
                                          code="gcs.unreachable") from None
            raise
        return {"project": self.settings["project"], "buckets": found}

    def bucket_names_there(self) -> set[str]:
        return {b.name for b in self.client().list_buckets()}

    def app_env(self, bucket: str) -> dict[str, str]:
        env = {bucket_var(bucket, "URL"): f"gs://{self.names()[bucket]}",
               bucket_var(bucket, "PROJECT"): self.settings["project"]}
        if self.settings.get("endpoint_url"):
            env[bucket_var(bucket, "ENDPOINT")] = self.settings["endpoint_url"]
        key_file = self.key_file()
        if key_file:
            try:
                env[bucket_var(bucket, "CREDENTIALS")] = open(key_file, encoding="utf-8").read()
            except OSError as exc:
                raise BadInput(f"{self.label}: cannot read the service-account key file ({exc.strerror}).",
                               code="gcs.credentials") from None
        return env
