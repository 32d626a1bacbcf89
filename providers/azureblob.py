"""``type: azure-blob``: Azure Blob Storage as a target of its own (objects only), like ``type: s3``: it keeps
backups off every host the stack runs on and holds buckets (Azure calls them containers).

Objects are written as blocks (4 MiB, each sent with its Content-MD5 for the service to check) and made
visible in one atomic commit that also records the whole object's SHA-256 (blob metadata) and MD5
(Content-MD5): readers see the old object or the new one, and a stream that ends short commits nothing.
Reads stream chunk by chunk; memory stays flat. The account key comes from the environment variable the
target names, never from the stack file. The SDK (azure-storage-blob) is imported only when the target is
used: ``pip install 'lifeboat[azure]'``.

```yaml
providers:
  blobs:
    type: azure-blob
    account: mystorageaccount
    key_env: AZURE_STORAGE_KEY          # default; the account's access key
    # endpoint_url: https://mystorageaccount.blob.core.windows.net   (default)
    # container_prefix: chirp-blobs-    # the stack's containers there (default <stack>-<target>-)
```
"""

from __future__ import annotations

import base64
import hashlib
import os
from contextlib import contextmanager

from toolkit.config.schema import Field, Str
from toolkit.contract import BucketsOnly, ObjectInfo, ObjectStore, Provider, bucket_var, read_full
from toolkit.errors import BadInput, ProviderError, ProviderUnreachable
from toolkit.stores.sealed import Produced

BLOCK = 4 << 20
SHA_META = "lifeboat_sha256"
ENV_NAME = r"[A-Za-z_][A-Za-z0-9_]{0,127}"


def _sdk():
    try:
        from azure.storage import blob
    except ImportError:
        raise BadInput("the azure-blob target needs the Azure SDK: pip install 'lifeboat[azure]' "
                       "(azure-storage-blob).", code="azure.no_sdk") from None
    return blob


class AzureBlobStore(ObjectStore):
    NATIVE_CHECKSUMS = ("md5",)
    PARALLEL = 8

    def __init__(self, service, names: dict[str, str], label: str):
        self.service, self.names, self.label = service, names, label

    def real(self, bucket: str) -> str:
        return self.names.get(bucket, bucket)

    def _blob(self, bucket: str, key: str):
        if any(part in (".", "..") for part in key.split("/")):
            # URLs fold such segments before the request is signed and sent: Azure cannot name a blob so.
            raise ProviderError(f"{self.label}: object key {key!r} has a '.' or '..' path segment, which Azure "
                                "Blob Storage cannot hold.", hint="rename the object at the source.",
                                code="objects.bad_key")
        return self.service.get_blob_client(self.real(bucket), key)

    def _fail(self, what: str, exc) -> ProviderError:
        return ProviderError(f"{self.label}: {what}: {getattr(exc, 'error_code', None) or type(exc).__name__} "
                             f"{getattr(exc, 'message', exc)}", code="azure.blob")

    def _missing_container(self, bucket: str, exc) -> ProviderError:
        return ProviderError(f"bucket {bucket} does not exist at {self.label}.", code="objects.no_bucket")

    @staticmethod
    def _info(name: str, size: int, metadata, settings) -> ObjectInfo:
        md5 = settings.content_md5 if settings is not None else None
        return ObjectInfo(name, int(size), (metadata or {}).get(SHA_META), bytes(md5).hex() if md5 else None,
                          {"content_type": settings.content_type if settings is not None else None})

    def list(self, bucket, prefix=""):
        from azure.core.exceptions import ResourceNotFoundError

        container = self.service.get_container_client(self.real(bucket))
        try:
            for item in container.list_blobs(name_starts_with=prefix or None, include=["metadata"]):
                yield self._info(item.name, item.size, item.metadata, item.content_settings)
        except ResourceNotFoundError as exc:
            raise self._missing_container(bucket, exc) from None

    def head(self, bucket, key):
        from azure.core.exceptions import ResourceNotFoundError

        try:
            props = self._blob(bucket, key).get_blob_properties()
        except ResourceNotFoundError as exc:
            if getattr(exc, "error_code", None) == "ContainerNotFound":
                raise self._missing_container(bucket, exc) from None
            return None
        return self._info(key, props.size, props.metadata, props.content_settings)

    @contextmanager
    def open_read(self, bucket, key):
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceNotFoundError

        blob = self._blob(bucket, key)
        try:
            props = blob.get_blob_properties()
        except ResourceNotFoundError:
            raise ProviderError(f"{self.label}: no object {key!r} in bucket {bucket}.",
                                code="objects.missing") from None

        def ranges():
            # One block-sized range per request, all pinned to the version first seen (its ETag): a blob
            # replaced mid-read fails instead of mixing two versions.
            for offset in range(0, props.size, BLOCK):
                yield blob.download_blob(offset=offset, length=min(BLOCK, props.size - offset), max_concurrency=1,
                                         etag=props.etag, match_condition=MatchConditions.IfNotModified).readall()

        yield _Chunks(ranges())

    def write(self, bucket, key, stream, *, size=None, content_type=None):
        from azure.core.exceptions import ResourceNotFoundError

        sdk = _sdk()
        blob = self._blob(bucket, key)
        sha, md5, total, blocks = hashlib.sha256(), hashlib.md5(), 0, []  # noqa: S324 - Content-MD5 is MD5
        try:
            while True:
                chunk = read_full(stream, BLOCK)
                if not chunk and blocks:
                    break
                if size is not None and total + len(chunk) > size:
                    raise ProviderError(f"object {key!r}: the stream gave more than {size} bytes; nothing was "
                                        "stored.", code="objects.short_write")
                total += len(chunk)
                sha.update(chunk)
                md5.update(chunk)
                if chunk:
                    block_id = base64.b64encode(f"{len(blocks):08d}".encode()).decode()
                    blob.stage_block(block_id, chunk, length=len(chunk), validate_content=True)
                    blocks.append(sdk.BlobBlock(block_id=block_id))
                if len(chunk) < BLOCK:
                    break
            if size is not None and total != size:
                raise ProviderError(f"object {key!r}: expected {size} bytes, the stream gave {total}; nothing was "
                                    "stored.", code="objects.short_write")
            blob.commit_block_list(blocks, metadata={SHA_META: sha.hexdigest()},
                                   content_settings=sdk.ContentSettings(content_type=content_type,
                                                                        content_md5=bytearray(md5.digest())))
        except ResourceNotFoundError as exc:
            raise self._missing_container(bucket, exc) from None
        return ObjectInfo(key, total, sha.hexdigest(), md5.hexdigest(), {"content_type": content_type})

    def delete(self, bucket, key):
        from azure.core.exceptions import ResourceNotFoundError

        try:
            self._blob(bucket, key).delete_blob()
        except ResourceNotFoundError:
            pass

    def checksum(self, bucket, key):
        return self._recorded_or_read_sha256(bucket, key, self.label)

    def create_bucket(self, bucket: str) -> None:
        from azure.core.exceptions import ResourceExistsError

        try:
            self.service.create_container(self.real(bucket))  # private: no public access level
        except ResourceExistsError:
            pass

    def remove_bucket(self, bucket: str) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            self.service.delete_container(self.real(bucket))
        except ResourceNotFoundError:
            pass


class _Chunks(Produced):
    """A read(n) stream over an iterator of byte chunks (one chunk in memory at a time)."""

    def __init__(self, chunks):
        super().__init__()
        self._chunks = chunks

    def _fill(self) -> None:
        more = next(self._chunks, None)
        if more is None:
            self._ended = True
        else:
            self._out += more


class AzureBlobProvider(BucketsOnly, Provider):
    TYPE = "azure-blob"
    DESCRIPTION = "Azure Blob Storage: containers and backups only"
    SERVICES = frozenset({"objects"})
    FEATURES = {"checksums.md5": True, "runs_services": False}
    PREFIX_SETTING = "container_prefix"
    SETTINGS = {
        "account": Field(Str(pattern=r"[a-z0-9]{3,24}", expected="a storage account name"), required=True,
                         doc="the storage account"),
        "endpoint_url": Field(Str(pattern=r"https?://[^\s]+", expected="the blob service URL"),
                              doc="default https://<account>.blob.core.windows.net"),
        "key_env": Field(Str(pattern=ENV_NAME, expected="an environment variable name"), default="AZURE_STORAGE_KEY",
                         doc="the variable holding the account's access key"),
        "container_prefix": Field(Str(pattern=r"[a-z0-9][a-z0-9-]{0,40}", expected="lowercase letters, digits, -"),
                                  doc="prefix of the stack's container names there (default <stack>-<target>-)"),
    }

    def __init__(self, stack, target):
        super().__init__(stack, target)
        self._service = None

    @property
    def endpoint(self) -> str:
        return self.settings.get("endpoint_url") or f"https://{self.settings['account']}.blob.core.windows.net"

    def account_key(self) -> str:
        name = self.settings.get("key_env") or "AZURE_STORAGE_KEY"
        key = os.environ.get(name)
        if not key:
            raise BadInput(f"{self.label}: the environment variable {name} holding the account key is not set.",
                           hint="export it before running Lifeboat (its value is never printed).",
                           code="azure.no_key")
        return key

    def service(self):
        if self._service is None:
            sdk = _sdk()
            self._service = sdk.BlobServiceClient(self.endpoint, credential={
                "account_name": self.settings["account"], "account_key": self.account_key()}, retry_total=5,
                connection_timeout=10, read_timeout=120,
                max_single_get_size=BLOCK, max_chunk_get_size=BLOCK)  # reads hold one block, not 32 MiB
        return self._service

    def objects(self) -> AzureBlobStore:
        return AzureBlobStore(self.service(), self.names(), self.label)

    def check(self) -> dict:
        from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ServiceRequestError

        try:
            found = sum(1 for _ in self.service().list_containers())
        except ClientAuthenticationError:
            raise ProviderUnreachable(f"{self.label}: {self.endpoint} refused the account key.",
                                      hint="check the variable named by key_env.", code="azure.credentials") from None
        except ServiceRequestError as exc:
            raise ProviderUnreachable(f"{self.label}: {self.endpoint} does not answer ({exc}).",
                                      code="azure.unreachable") from None
        except HttpResponseError as exc:
            if exc.status_code == 403:
                raise ProviderUnreachable(f"{self.label}: {self.endpoint} refused the account key.",
                                          code="azure.credentials") from None
            raise
        return {"endpoint": self.endpoint, "containers": found}

    def bucket_names_there(self) -> set[str]:
        return {c.name for c in self.service().list_containers()}

    def app_env(self, bucket: str) -> dict[str, str]:
        return {bucket_var(bucket, "URL"): f"az://{self.names()[bucket]}",
                bucket_var(bucket, "ENDPOINT"): self.endpoint, bucket_var(bucket, "ACCOUNT"): self.settings["account"], bucket_var(bucket, "KEY"): self.account_key()}
