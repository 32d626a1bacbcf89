"""AWS Secrets Manager as the secret store of an aws target."""

from __future__ import annotations

from typing import TYPE_CHECKING

from toolkit.contract import (
    SecretStore,
    SecretValue,
)
from toolkit.errors import ProviderError
from toolkit.stores.s3 import client_error

if TYPE_CHECKING:
    from providers.aws.api import AwsApi


class SecretsManagerStore(SecretStore):
    """Secrets under ``<stack>/<target>/NAME``. Deletion is immediate (no recovery window), so a re-run can
    create the name again."""

    def __init__(self, api: AwsApi, prefix: str):
        self.api = api
        self.prefix = prefix

    @property
    def sm(self):
        return self.api.client("secretsmanager")

    def names(self):
        out = []
        paginator = self.sm.get_paginator("list_secrets")
        for page in paginator.paginate(Filters=[{"Key": "name", "Values": [self.prefix]}]):
            for item in page.get("SecretList", []):
                if item["Name"].startswith(self.prefix) and not item.get("DeletedDate"):
                    out.append(item["Name"][len(self.prefix):])
        return sorted(out)

    def read(self, name):
        import botocore.exceptions

        try:
            found = self.sm.get_secret_value(SecretId=self.prefix + name)
        except botocore.exceptions.ClientError as exc:
            code, message = client_error(exc)
            if code in ("ResourceNotFoundException",) or "marked for deletion" in message:
                return None
            raise ProviderError(f"{self.api.label}: Secrets Manager read {name}: {code}", code="aws.secrets") from None
        if "SecretBinary" in found:
            return SecretValue(found["SecretBinary"])
        return SecretValue(found.get("SecretString", ""))

    def write(self, name, value):
        import botocore.exceptions

        try:
            self.sm.put_secret_value(SecretId=self.prefix + name, SecretString=value.reveal_text())
        except botocore.exceptions.ClientError as exc:
            code, _ = client_error(exc)
            if code != "ResourceNotFoundException":
                raise ProviderError(f"{self.api.label}: Secrets Manager write {name}: {code}",
                                    code="aws.secrets") from None
            self.sm.create_secret(Name=self.prefix + name, SecretString=value.reveal_text(),
                                  Tags=[{"Key": "managed-by", "Value": "lifeboat"}])

    def written_at(self, name):
        import botocore.exceptions

        try:
            found = self.sm.describe_secret(SecretId=self.prefix + name)
        except botocore.exceptions.ClientError:
            return None
        when = found.get("LastChangedDate") or found.get("CreatedDate")
        return when.timestamp() if when is not None else None

    def delete(self, name):
        import botocore.exceptions

        try:
            self.sm.delete_secret(SecretId=self.prefix + name, ForceDeleteWithoutRecovery=True)
        except botocore.exceptions.ClientError as exc:
            code, _ = client_error(exc)
            if code != "ResourceNotFoundException":
                raise ProviderError(f"{self.api.label}: Secrets Manager delete {name}: {code}",
                                    code="aws.secrets") from None
