"""boto3 clients for one aws target: region, profile, endpoints (an emulator's too) and retries in one place,
and the STS identity check every command runs first."""

from __future__ import annotations

import os

from toolkit.errors import BadInput, ProviderUnreachable
from toolkit.stores.s3 import botocore_session, client_config, unsigned_payload_when_checksummed

# Terraform's endpoint names -> boto3 service names (and their AWS_ENDPOINT_URL_<ID> variables)
ENDPOINTS = {"ec2": "EC2", "s3": "S3", "rds": "RDS", "route53": "ROUTE_53", "sts": "STS", "iam": "IAM",
            "secretsmanager": "SECRETS_MANAGER"}


class AwsApi:
    """boto3 clients for one target: region, profile, endpoints and retries in one place."""

    def __init__(self, settings: dict, label: str):
        self.settings = settings
        self.label = label
        self.region = settings.get("region") or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        self.profile = settings.get("profile")
        self._session = None
        self._clients: dict[str, object] = {}

    def endpoint(self, service: str) -> str | None:
        return (os.environ.get(f"AWS_ENDPOINT_URL_{ENDPOINTS[service]}") or self.settings.get("endpoint_url")
                or os.environ.get("AWS_ENDPOINT_URL") or None)

    @property
    def emulated(self) -> bool:
        return any(self.endpoint(s) for s in ENDPOINTS)

    def session(self):
        if self._session is None:
            import boto3
            import botocore.exceptions

            if not self.region:
                raise BadInput(f"{self.label}: no AWS region: set region: under the target, or AWS_REGION.",
                               code="aws.no_region")
            try:
                self._session = boto3.Session(profile_name=self.profile, region_name=self.region,
                                              botocore_session=botocore_session())
            except botocore.exceptions.ProfileNotFound:
                shown = self.profile or os.environ.get("AWS_PROFILE")
                raise ProviderUnreachable(f"{self.label}: the AWS profile {shown!r} is not configured "
                                          "(~/.aws/config, ~/.aws/credentials).", code="aws.credentials") from None
        return self._session

    def client(self, service: str):
        if service not in self._clients:
            config = client_config("path" if self.endpoint("s3") else None, service)
            client = self.session().client(service, endpoint_url=self.endpoint(service), config=config)
            self._clients[service] = unsigned_payload_when_checksummed(client) if service == "s3" else client
        return self._clients[service]

    def where(self) -> str:
        parts = [f"region {self.region}"]
        if self.profile:
            parts.append(f"profile {self.profile}")
        if self.endpoint("sts"):
            parts.append(f"endpoint {self.endpoint('sts')}")
        return ", ".join(parts)

    def identity(self) -> dict:
        """STS GetCallerIdentity: the preflight every command runs first."""
        import botocore.exceptions

        try:
            found = self.client("sts").get_caller_identity()
        except botocore.exceptions.NoCredentialsError:
            raise ProviderUnreachable(f"{self.label}: no AWS credentials ({self.where()}).",
                                      hint="set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or profile: "
                                           "under the target.", code="aws.credentials") from None
        except botocore.exceptions.ClientError as exc:
            raise ProviderUnreachable(f"{self.label}: AWS refused the credentials ({self.where()}): "
                                      f"{exc.response['Error'].get('Message') or exc}.",
                                      hint="check the access key, the profile and the clock.",
                                      code="aws.credentials") from None
        except (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectTimeoutError) as exc:
            raise ProviderUnreachable(f"{self.label}: cannot reach AWS ({self.where()}): {exc}.",
                                      code="aws.unreachable") from None
        return {"account": found.get("Account"), "arn": found.get("Arn")}
