"""``type: s3``: any S3-compatible object store as a target of its own (objects only): DigitalOcean Spaces,
Hetzner Object Storage, Backblaze B2, Cloudflare R2, Wasabi, MinIO, Ceph. It keeps backups off-host
(``backup: to:``) and holds buckets; it runs nothing, so ``up``/``plan`` refuse it like a DNS-only target.

The store is toolkit/stores/s3.py's S3Store, as the aws provider's (an ObjectStore over boto3: SHA-256 sent with every
request for the service to check, recorded with the object, multipart above 64 MiB) pointed at the
endpoint, with path-style addressing and the credentials taken from the two environment variables the
target names (never from the stack file, never on a command line).

```yaml
providers:
  spaces:
    type: s3
    endpoint_url: https://fra1.digitaloceanspaces.com
    region: fra1
    access_key_env: SPACES_KEY          # default AWS_ACCESS_KEY_ID
    secret_key_env: SPACES_SECRET       # default AWS_SECRET_ACCESS_KEY
```
"""

from __future__ import annotations

import os

from toolkit.config.schema import Field, Str
from toolkit.contract import BucketsOnly, ObjectStore, Provider, bucket_var
from toolkit.errors import BadInput, ProviderUnreachable

ENV_NAME = r"[A-Za-z_][A-Za-z0-9_]{0,127}"


class S3CompatibleApi:
    """The one boto3 S3 client of an S3-compatible target (what toolkit.stores.s3.S3Store asks of its api)."""

    def __init__(self, settings: dict, label: str):
        self.settings, self.label = settings, label
        self.region = settings.get("region") or "us-east-1"
        self.endpoint_url = settings["endpoint_url"]
        self._client = None

    def credentials(self) -> tuple[str, str]:
        names = (self.settings.get("access_key_env") or "AWS_ACCESS_KEY_ID",
                 self.settings.get("secret_key_env") or "AWS_SECRET_ACCESS_KEY")
        values = tuple(os.environ.get(n) for n in names)
        missing = [n for n, v in zip(names, values, strict=True) if not v]
        if missing:
            raise BadInput(f"{self.label}: the environment variable{'s' if len(missing) > 1 else ''} "
                           f"{' and '.join(missing)} holding the store's credentials {'are' if len(missing) > 1 else 'is'} "
                           "not set.", hint="export them before running Lifeboat (their values are never printed).",
                           code="s3.no_credentials")
        return values  # type: ignore[return-value]

    def client(self, service: str = "s3"):
        if self._client is None:
            import boto3

            from toolkit.stores.s3 import botocore_session, client_config, unsigned_payload_when_checksummed

            key, secret = self.credentials()
            session = boto3.session.Session(botocore_session=botocore_session())
            self._client = unsigned_payload_when_checksummed(session.client(
                "s3", endpoint_url=self.endpoint_url, region_name=self.region, aws_access_key_id=key,
                aws_secret_access_key=secret, config=client_config(self.settings.get("addressing") or "path")))
        return self._client


class S3CompatibleProvider(BucketsOnly, Provider):
    TYPE = "s3"
    DESCRIPTION = "any S3-compatible object store (Spaces, Hetzner, B2, R2, Wasabi, MinIO): buckets and backups only"
    SERVICES = frozenset({"objects"})
    FEATURES = {"checksums.sha256": True, "runs_services": False}
    SETTINGS = {
        "endpoint_url": Field(Str(pattern=r"https?://[^\s/]+(/.*)?", expected="the store's URL (https://...)"),
                              required=True, doc="where the S3 API answers"),
        "region": Field(Str(pattern=r"[a-z0-9-]{1,40}", expected="a region name"), default="us-east-1",
                        doc="the region the store expects in signatures"),
        "access_key_env": Field(Str(pattern=ENV_NAME, expected="an environment variable name"),
                                default="AWS_ACCESS_KEY_ID", doc="the variable holding the access key id"),
        "secret_key_env": Field(Str(pattern=ENV_NAME, expected="an environment variable name"),
                                default="AWS_SECRET_ACCESS_KEY", doc="the variable holding the secret key"),
        "bucket_prefix": Field(Str(pattern=r"[a-z0-9][a-z0-9-]{0,40}", expected="lowercase letters, digits, -"),
                               doc="prefix of the stack's bucket names there (default <stack>-<target>-)"),
        "addressing": Field(Str(choices=["path", "virtual"]), default="path",
                            doc="path-style (https://host/bucket) or virtual-hosted (https://bucket.host)"),
    }

    def __init__(self, stack, target):
        super().__init__(stack, target)
        self.api = S3CompatibleApi(self.settings, self.label)

    def objects(self) -> ObjectStore:
        from toolkit.stores.s3 import S3Store

        return S3Store(self.api, self.names())

    def check(self) -> dict:
        import botocore.exceptions

        try:
            found = self.api.client().list_buckets().get("Buckets", [])
        except botocore.exceptions.ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            raise ProviderUnreachable(f"{self.label}: {self.api.endpoint_url} refused the credentials ({code}).",
                                      hint="check the key variables named under the target.",
                                      code="s3.credentials") from None
        except (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectTimeoutError) as exc:
            raise ProviderUnreachable(f"{self.label}: {self.api.endpoint_url} does not answer ({exc}).",
                                      code="s3.unreachable") from None
        return {"endpoint": self.api.endpoint_url, "buckets": len(found)}

    def bucket_names_there(self) -> set[str]:
        return {b["Name"] for b in self.api.client().list_buckets().get("Buckets", [])}

    def app_env(self, bucket: str) -> dict[str, str]:
        key, secret = self.api.credentials()
        return {bucket_var(bucket, "URL"): f"s3://{self.names()[bucket]}",
                bucket_var(bucket, "ENDPOINT"): self.api.endpoint_url, bucket_var(bucket, "REGION"): self.api.region,
                bucket_var(bucket, "ACCESS_KEY_ID"): key, bucket_var(bucket, "SECRET_ACCESS_KEY"): secret}
