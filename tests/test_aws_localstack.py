"""The aws provider against LocalStack (community, host mode): what teams run for CI dry runs.

Emulation, named plainly: LocalStack's EC2 instances run nothing, so each is paired with a real OpenSSH host
of the lab through ``reach:``; its community build has no RDS, and the provider must say so (exit 5) rather
than half-work. Every check asks LocalStack with boto3 directly, not the provider.
"""

from __future__ import annotations

import os
import shutil
import urllib.request

import boto3
import pytest

from toolkit.config import stackfile
from toolkit.contract.suite import ProviderContract
from toolkit.errors import ProviderError
from toolkit.run.engine import Engine

from .conftest import aws_environment, make_host_roots, run_cli, tiny_app
from .sshd import lab_first_address

pytestmark = pytest.mark.timeout(900)  # Terraform against an emulator takes minutes

LAB = [f"127.0.0.{lab_first_address() + i}" for i in range(3)]  # the lab's hosts' addresses

STACK = """version: 1
name: lsy
domain: www.lsy.test
services:
  web:
    role: web
    build: {app}
    command: ["python3", "serve.py"]
    port: 8300
    secrets: [APP_KEY]
{postgres}buckets:
  media: {{}}
secrets:
  APP_KEY: {{from: generate, length: 24}}
providers:
  ci:
    type: aws
    region: us-east-1
    endpoint_url: {endpoint}
    ami: ami-12c6146b
    known_hosts: {known_hosts}
    instances:
      - {{name: web-1, roles: [web], root: {roots}/web-1}}
    reach:
      web-1: {{address: {a3}, private_address: {a3}, port: {port}, user: {user}, key: {key}}}
dns:
  provider: ci
  zone: lsy.test
  records:
    - {{name: www, type: A, target: web, ttl: 120}}
"""


def aws(client: str, endpoint: str):
    return boto3.client(client, endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test",
                        aws_secret_access_key="test")


def write_stack(root, lab, endpoint, roots, *, postgres: bool) -> None:
    pg = "postgres:\n  version: 15\n  database: lsy\n" if postgres else ""
    host = lab.hosts[2]
    (root / "lifeboat.yml").write_text(STACK.format(
        app=tiny_app(root) if not (root / "app").exists() else root / "app", endpoint=endpoint,
        known_hosts=lab.known_hosts, roots=roots, port=host.port, user=lab.user, key=lab.client_key, postgres=pg, a3=LAB[2]))


@pytest.fixture(scope="module")
def env(terraform_rc):
    values = aws_environment(terraform_rc)
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    yield values
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def test_rds_missing_is_exit_5_and_changes_nothing(tmp_path, ssh_lab, localstack, env):
    roots = make_host_roots()
    try:
        write_stack(tmp_path, ssh_lab, localstack.url, roots, postgres=True)
        result = run_cli("up", "--on", "ci", "--yes", "--output", "json", cwd=tmp_path)
        assert result.code == 5, result
        error = result.envelope["errors"][0]
        assert error["message"].startswith(f"RDS is not available at {localstack.url}"), error
        assert not aws("ec2", localstack.url).describe_vpcs(
            Filters=[{"Name": "tag:lifeboat:stack", "Values": ["lsy-ci"]}])["Vpcs"]
        assert not list(roots.iterdir())
    finally:
        shutil.rmtree(roots, ignore_errors=True)


@pytest.fixture(scope="module")
def deployed(tmp_path_factory, ssh_lab, localstack, env):
    root = tmp_path_factory.mktemp("aws-localstack")
    roots = make_host_roots()
    write_stack(root, ssh_lab, localstack.url, roots, postgres=False)
    try:
        result = run_cli("up", "--on", "ci", "--yes", "--output", "json", cwd=root, timeout=900)
        assert result.code == 0, result
        yield {"root": root, "endpoint": localstack.url, "roots": roots}
        result = run_cli("destroy", "--on", "ci", "--yes", "--output", "json", cwd=root, timeout=900)
        assert result.code == 0, result
        assert not list(roots.iterdir()), "destroy left files on the host"
        url = localstack.url
        ec2 = aws("ec2", url)
        assert not ec2.describe_vpcs(Filters=[{"Name": "tag:lifeboat:stack", "Values": ["lsy-ci"]}])["Vpcs"]
        live = [i for r in ec2.describe_instances(Filters=[{"Name": "tag:lifeboat:stack", "Values": ["lsy-ci"]}])
                ["Reservations"] for i in r["Instances"] if i["State"]["Name"] not in ("terminated", "shutting-down")]
        assert not live
        assert not [b for b in aws("s3", url).list_buckets()["Buckets"] if b["Name"].startswith("lsy-ci")]
        assert not [z for z in aws("route53", url).list_hosted_zones()["HostedZones"] if z["Name"] == "lsy.test."]
        assert not [s for s in aws("secretsmanager", url).list_secrets()["SecretList"]
                    if s["Name"].startswith("lsy/ci/")]
    finally:
        shutil.rmtree(roots, ignore_errors=True)


def test_up_made_the_resources(deployed):
    url = deployed["endpoint"]
    ec2 = aws("ec2", url)
    instances = [i for r in ec2.describe_instances(Filters=[{"Name": "tag:lifeboat:stack", "Values": ["lsy-ci"]}])
                 ["Reservations"] for i in r["Instances"] if i["State"]["Name"] == "running"]
    assert [t["Value"] for i in instances for t in i["Tags"] if t["Key"] == "lifeboat:host"] == ["web-1"]
    s3 = aws("s3", url)
    buckets = [b["Name"] for b in s3.list_buckets()["Buckets"] if b["Name"].startswith("lsy-ci-media-")]
    assert len(buckets) == 1 and s3.get_bucket_versioning(Bucket=buckets[0])["Status"] == "Enabled"
    r53 = aws("route53", url)
    zone = [z for z in r53.list_hosted_zones()["HostedZones"] if z["Name"] == "lsy.test."][0]
    sets = r53.list_resource_record_sets(HostedZoneId=zone["Id"])["ResourceRecordSets"]
    www = [r for r in sets if r["Name"] == "www.lsy.test." and r["Type"] == "A"][0]
    assert www["TTL"] == 120 and [v["Value"] for v in www["ResourceRecords"]] == [LAB[2]]
    assert aws("secretsmanager", url).get_secret_value(SecretId="lsy/ci/APP_KEY")["SecretString"]
    with urllib.request.urlopen(f"http://{LAB[2]}:8300/", timeout=5) as resp:  # noqa: S310
        assert resp.read() == b"ok"


def test_second_plan_changes_nothing(deployed):
    result = run_cli("plan", "--on", "ci", "--detailed-exitcode", "--output", "json", cwd=deployed["root"])
    assert result.code == 0, result
    summary = result.envelope["data"]["summary"]
    assert summary["create"] == summary["update"] == summary["delete"] == 0


def test_a_plain_put_whose_body_is_not_its_checksum_is_refused(deployed):
    """A single-part write goes as a presigned PUT (providers.aws.S3Store._plain_put) whose URL signs the
    body's SHA-256 header: LocalStack, like S3, refuses a body that is not what that header says (BadDigest),
    nothing is stored, and the store writes through put_object from then on (which is refused the same
    way, named)."""
    import base64
    import hashlib
    import io

    store = Engine(stackfile.load(deployed["root"] / "lifeboat.yml")).provider("ci").objects()
    real = store.real("media")
    wrong = base64.b64encode(hashlib.sha256(b"other bytes").digest()).decode()
    assert store._plain_put(real, "right.bin", io.BytesIO(b"some bytes"), 10,
                            base64.b64encode(hashlib.sha256(b"some bytes").digest()).decode(),
                            hashlib.sha256(b"some bytes").hexdigest(), None)
    assert not store._plain_put(real, "wrong.bin", io.BytesIO(b"some bytes"), 10, wrong,
                                hashlib.sha256(b"some bytes").hexdigest(), None)
    assert not store._plain_puts and store.head("media", "wrong.bin") is None
    assert store.checksum("media", "right.bin") == hashlib.sha256(b"some bytes").hexdigest()
    store.delete("media", "right.bin")


class TestLocalStackContract(ProviderContract):
    zone = "lsy.test"

    @pytest.fixture
    def provider(self, deployed):
        return Engine(stackfile.load(deployed["root"] / "lifeboat.yml")).provider("ci")

    # This stack has no PostgreSQL (LocalStack's community build has no RDS): the database part of the
    # contract is that asking for it fails clearly.
    def test_database_dump_restore_keeps_every_row(self, provider):
        with pytest.raises(ProviderError, match="no postgres"):
            provider.database().info()

    def test_digest_sees_a_changed_value(self, provider):
        with pytest.raises(ProviderError, match="no postgres"):
            provider.database().table_digests()

    def test_compute_reports_instances(self, provider):
        instances = provider.compute().instances()
        assert [(i.service, i.host, i.state, i.healthy) for i in instances] == [("web", "web-1", "running", True)]
        assert provider.compute().addresses("web") == [LAB[2]]
