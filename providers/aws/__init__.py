"""The ``aws`` provider: provision with Terraform, operate with boto3, run the services over SSH.

- Terraform (``templates/terraform/aws``, through :mod:`toolkit.transport.terraform`) makes the network, one EC2
  instance per entry of ``instances:``, RDS PostgreSQL, the media buckets (private, versioned, encrypted)
  and, when the stack's DNS lives here, a Route53 zone. Its state is kept in the target's state directory
  (0700) or in an S3 backend with a lock file (``terraform_backend:``).
- boto3 does the rest: an STS identity check before anything, S3 objects as streams (multipart above
  8 MiB, SHA-256 checked by S3 per request and recorded with the object; a download cut short goes on
  from where it stopped), Secrets Manager, Route53 changes (waiting for INSYNC), RDS discovery. Retries
  with backoff on throttling (botocore's standard mode). An object's first GET and a single-part PUT go as
  presigned URLs on botocore's own connection pool (a third less CPU per object); anything but a plain
  success is asked again through the botocore call.
- Services are deployed onto the instances over SSH by the bare-metal machinery (supervised processes or
  containers, Redis on the ``db`` instance, Caddy for TLS). Lifeboat logs in with a key it makes and keeps;
  each instance gets a host key Lifeboat generated and pinned through cloud-init, so the first connection is
  already verified.
- RDS is private: Lifeboat reaches it through an SSH tunnel via an instance (``tunnel_via``).

``reach:`` overrides how Lifeboat and the apps reach an instance or the database (``postgres``): an
address (and port, user, key, pinned keys or known_hosts) used instead of what EC2/RDS report. In real life
that is a bastion, a VPN address or a tunnel end; the tests use it to pair emulated instances (moto,
LocalStack: they run nothing) with real SSH hosts, and the emulated RDS endpoint with a real PostgreSQL.

Endpoints: ``endpoint_url`` (or ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_<SERVICE>``) points boto3 and
Terraform's ``endpoints {}`` at an emulator, so the whole provider runs against LocalStack or moto.
"""

from providers.aws.provider import AwsProvider

__all__ = ["AwsProvider"]
