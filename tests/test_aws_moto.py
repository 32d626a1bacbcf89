"""The aws provider against a real moto server, with Terraform really running (hashicorp/aws from the
machine's mirror).

Emulation, named plainly: moto's EC2 instances run nothing and its RDS has no database behind it. Each
instance is paired with a real OpenSSH host of the lab and the RDS endpoint with a real PostgreSQL
(tests/awslab.py), through the provider's ``reach:`` setting. Everything else (S3, Route53, Secrets
Manager, STS, the EC2/RDS control planes) is moto answering the real API calls, and every check below
asks moto with boto3 directly, not the provider.
"""

from __future__ import annotations

import hashlib
import io
import os
import urllib.request
from contextlib import ExitStack

import boto3
import pytest

from toolkit.config import stackfile
from toolkit.contract.suite import AWKWARD_KEYS, ProviderContract
from toolkit.run.engine import Engine

from .conftest import aws_environment, environment, make_host_roots, run_cli, tiny_app
from .sshd import lab_first_address

pytestmark = pytest.mark.timeout(900)  # Terraform against an emulator takes minutes

LAB = [f"127.0.0.{lab_first_address() + i}" for i in range(3)]  # the lab's hosts' addresses

STACK = """version: 1
name: awsy
domain: www.awsy.test
services:
  web:
    role: web
    build: {app}
    command: ["python3", "serve.py"]
    port: 8200
    secrets: [APP_KEY]
  worker:
    role: worker
    build: {app}
    command: ["sleep", "3600"]
postgres:
  version: 15
  database: awsy
  extensions: [pg_trgm]
redis: {{}}
buckets:
  media: {{}}
secrets:
  APP_KEY: {{from: generate, length: 32}}
providers:
  cloud:
    type: aws
    region: us-east-1
    endpoint_url: {endpoint}
    ami: ami-12c6146b
    known_hosts: {known_hosts}
    redis_port: 6396
    instances:
      - {{name: web-1, roles: [web, worker, db], root: {roots}/web-1}}
      - {{name: web-2, roles: [web], root: {roots}/web-2}}
    reach:
      web-1: {{address: {a1}, private_address: {a1}, port: {p1}, user: {user}, key: {key}}}
      web-2: {{address: {a2}, private_address: {a2}, port: {p2}, user: {user}, key: {key}}}
      postgres: {{address: {pg_address}, port: {pg_port}}}
dns:
  provider: cloud
  zone: awsy.test
  records:
    - {{name: www, type: A, target: web, ttl: 60}}
"""


def aws(client: str, endpoint: str):
    return boto3.client(client, endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                        aws_secret_access_key="testing")


def media_bucket(endpoint: str) -> str:
    """The media bucket's name as S3 lists it (a prefix and a suffix Terraform picked)."""
    names = [b["Name"] for b in aws("s3", endpoint).list_buckets()["Buckets"] if b["Name"].startswith("awsy-cloud-media-")]
    assert len(names) == 1, names
    return names[0]


def stack_text(root, lab, endpoint, rds, roots) -> str:
    return STACK.format(app=tiny_app(root), endpoint=endpoint, known_hosts=lab.known_hosts, roots=roots,
                        p1=lab.hosts[0].port, p2=lab.hosts[1].port, user=lab.user, key=lab.client_key,
                        pg_address=rds.address, pg_port=rds.port, a1=LAB[0], a2=LAB[1])


@pytest.fixture(scope="module")
def deployed(tmp_path_factory, ssh_lab, moto_server, terraform_rc):
    """`lifeboat up` through the CLI, once for the module; `destroy` at the end must leave nothing."""
    from .awslab import start_rds_stand_in

    moto_server.reset()
    root = tmp_path_factory.mktemp("aws-moto")
    roots = make_host_roots()
    rds = start_rds_stand_in(database="awsy")
    (root / "lifeboat.yml").write_text(stack_text(root, ssh_lab, moto_server.url, rds, roots))
    env = aws_environment(terraform_rc)
    scope = ExitStack()
    scope.enter_context(environment(env))
    try:
        result = run_cli("up", "--on", "cloud", "--yes", "--output", "json", cwd=root, timeout=900)
        assert result.code == 0, result
        yield {"root": root, "env": env, "endpoint": moto_server.url, "rds": rds, "roots": roots,
               "up": result.envelope}
        result = run_cli("destroy", "--on", "cloud", "--yes", "--output", "json", cwd=root, timeout=900)
        assert result.code == 0, result
        left = [p for p in roots.iterdir()]
        assert not left, f"destroy left {left} on the hosts"
        assert not (root / ".lifeboat" / "cloud").exists(), "destroy left the target's state directory"
        ec2 = aws("ec2", moto_server.url)
        live = [i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]
                if i["State"]["Name"] not in ("terminated", "shutting-down")]
        assert not live
        assert not ec2.describe_vpcs(Filters=[{"Name": "tag:lifeboat:stack", "Values": ["awsy-cloud"]}])["Vpcs"]
        assert not aws("rds", moto_server.url).describe_db_instances()["DBInstances"]
        assert not [b for b in aws("s3", moto_server.url).list_buckets()["Buckets"]
                    if b["Name"].startswith("awsy-cloud")]
        assert not aws("route53", moto_server.url).list_hosted_zones()["HostedZones"]
        assert not aws("secretsmanager", moto_server.url).list_secrets()["SecretList"]
    finally:
        scope.close()
        rds.stop()
        import shutil

        shutil.rmtree(roots, ignore_errors=True)


def test_up_made_the_resources(deployed):
    url = deployed["endpoint"]
    ec2 = aws("ec2", url)
    vpcs = ec2.describe_vpcs(Filters=[{"Name": "tag:lifeboat:stack", "Values": ["awsy-cloud"]}])["Vpcs"]
    assert len(vpcs) == 1
    running = [i for r in ec2.describe_instances(Filters=[{"Name": "vpc-id", "Values": [vpcs[0]["VpcId"]]}])
               ["Reservations"] for i in r["Instances"] if i["State"]["Name"] == "running"]
    names = sorted(t["Value"] for i in running for t in i["Tags"] if t["Key"] == "lifeboat:host")
    assert names == ["web-1", "web-2"]
    assert all(i["KeyName"] == "awsy-cloud-lifeboat" for i in running)
    assert all(i["IamInstanceProfile"]["Arn"].endswith("/awsy-cloud-host") for i in running)
    policy = aws("iam", url).get_role_policy(RoleName="awsy-cloud-host", PolicyName="awsy-cloud-media")
    resources = {r for st in policy["PolicyDocument"]["Statement"] for r in st["Resource"]}
    bucket = media_bucket(url)
    assert resources == {f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"}
    db = aws("rds", url).describe_db_instances(DBInstanceIdentifier="awsy-cloud-pg")["DBInstances"][0]
    assert (db["Engine"], db["PubliclyAccessible"], db["StorageEncrypted"]) == ("postgres", False, True)
    s3 = aws("s3", url)
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    rule = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert all(block.values())
    r53 = aws("route53", url)
    zone = r53.list_hosted_zones_by_name(DNSName="awsy.test")["HostedZones"][0]
    records = {(r["Name"], r["Type"]): r for r in r53.list_resource_record_sets(HostedZoneId=zone["Id"])
               ["ResourceRecordSets"]}
    www = records[("www.awsy.test.", "A")]
    assert www["TTL"] == 60 and sorted(v["Value"] for v in www["ResourceRecords"]) == [LAB[0], LAB[1]]
    secrets = aws("secretsmanager", url).list_secrets()["SecretList"]
    assert [s["Name"] for s in secrets] == ["awsy/cloud/APP_KEY"]
    assert len(aws("secretsmanager", url).get_secret_value(SecretId="awsy/cloud/APP_KEY")["SecretString"]) >= 32


def test_services_answer_on_the_paired_hosts(deployed):
    for address in LAB[:2]:
        with urllib.request.urlopen(f"http://{address}:8200/", timeout=5) as resp:  # noqa: S310
            assert resp.read() == b"ok"


def test_the_app_role_exists_on_the_database_with_its_extension(deployed):
    rds = deployed["rds"]
    assert rds.psql("SELECT rolname FROM pg_roles WHERE rolname = 'awsy'") == "awsy"
    assert rds.psql("SELECT extname FROM pg_extension WHERE extname = 'pg_trgm'", database="awsy") == "pg_trgm"
    assert rds.psql("SELECT pg_catalog.pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'awsy'") == "awsy"


def test_state_is_private_and_secrets_stay_out_of_it(deployed):
    state = deployed["root"] / ".lifeboat" / "cloud"
    assert oct(state.stat().st_mode & 0o777) == "0o700"
    for path in state.rglob("*"):
        if path.is_file() and ".terraform" not in path.parts:
            assert path.stat().st_mode & 0o077 == 0, f"{path} is readable by others"
    secret = aws("secretsmanager", deployed["endpoint"]).get_secret_value(SecretId="awsy/cloud/APP_KEY")["SecretString"]
    for path in state.rglob("*"):
        if path.is_file() and ".terraform" not in path.parts:
            assert secret.encode() not in path.read_bytes(), f"the secret APP_KEY is in {path}"


def test_second_plan_changes_nothing(deployed):
    result = run_cli("plan", "--on", "cloud", "--detailed-exitcode", "--output", "json", cwd=deployed["root"],
                     timeout=600)
    assert result.code == 0, result
    data = result.envelope["data"]
    assert data["summary"]["create"] == data["summary"]["update"] == data["summary"]["delete"] == 0
    infra = [c for c in data["changes"] if c["kind"] == "infra"]
    assert "aws_db_instance.postgres[0]" in [c["name"] for c in infra]
    assert all(c["action"] == "noop" for c in infra)


def test_object_checksums_are_recorded_with_the_objects(deployed):
    """Independent of the provider: the SHA-256 Lifeboat records is the SHA-256 of what S3 returns."""
    engine = Engine(stackfile.load(deployed["root"] / "lifeboat.yml"))
    store = engine.provider("cloud").objects()
    body = os.urandom(9 << 20)  # above the multipart threshold
    store.write("media", "check/big.bin", io.BytesIO(body))
    s3 = aws("s3", deployed["endpoint"])
    bucket = media_bucket(deployed["endpoint"])
    got = s3.get_object(Bucket=bucket, Key="check/big.bin")["Body"].read()
    tags = s3.get_object_tagging(Bucket=bucket, Key="check/big.bin")["TagSet"]
    assert {t["Key"]: t["Value"] for t in tags}["lifeboat-sha256"] == hashlib.sha256(got).hexdigest() == \
        hashlib.sha256(body).hexdigest()
    store.delete("media", "check/big.bin")


def test_compute_discovers_the_instances_in_ec2(deployed):
    engine = Engine(stackfile.load(deployed["root"] / "lifeboat.yml"))
    hosts = {h.name: h for h in engine.provider("cloud").compute().hosts()}
    ec2 = aws("ec2", deployed["endpoint"])
    ids = {t["Value"]: i["InstanceId"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]
           for t in i["Tags"] if t["Key"] == "lifeboat:host" and i["State"]["Name"] == "running"}
    assert {n: h.extra["instance_id"] for n, h in hosts.items()} == ids
    assert all(h.extra["state"] == "running" for h in hosts.values())
    assert hosts["web-1"].roles == ("web", "worker", "db")
    db = aws("rds", deployed["endpoint"]).describe_db_instances(DBInstanceIdentifier="awsy-cloud-pg")
    endpoint = db["DBInstances"][0]["Endpoint"]
    assert engine.provider("cloud")._rds_endpoint("awsy-cloud-pg") == (endpoint["Address"], endpoint["Port"])


class TestAwsContract(ProviderContract):
    zone = "awsy.test"
    # moto's limits, not S3's: its HTTP router answers 404 for a key holding a newline, and a key holding a
    # control character other than tab breaks its XML listings for good. The LocalStack suite keeps them.
    awkward_keys = [k for k in AWKWARD_KEYS if "\n" not in k] + ["tab\tkey"]

    @pytest.fixture
    def provider(self, deployed):
        engine = Engine(stackfile.load(deployed["root"] / "lifeboat.yml"))
        provider = engine.provider("cloud")
        yield provider
        provider.close_tunnel()
