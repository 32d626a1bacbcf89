"""The aws provider against LocalStack (community, host mode): what teams run for CI dry runs (issue 26).

Emulation, named plainly: LocalStack's EC2 instances run nothing, so each is paired with a real OpenSSH host
of the lab through ``reach:``; its community build has no RDS. A stack on RDS (chirp's own stack file with
an aws target) still plans, with every resource listed and RDS named as a warning; `up` refuses it (exit 5)
before changing anything. With ``postgres: {on: instance}`` PostgreSQL runs on the db instance (the lab
host) and the whole stack deploys, serves, plans clean and is destroyed; the shipped workflow's steps run
here in order. Every check asks LocalStack with boto3 directly, not the provider.
"""

from __future__ import annotations

import shutil
import urllib.request

import boto3
import pytest

from toolkit.config import stackfile
from toolkit.contract.suite import ProviderContract
from toolkit.run.engine import Engine

from .conftest import aws_environment, environment, make_host_roots, run_cli, tiny_app
from .sshd import lab_first_address

pytestmark = pytest.mark.timeout(900)  # Terraform against an emulator takes minutes

LAB = [f"127.0.0.{lab_first_address() + i}" for i in range(3)]  # the lab's hosts' addresses

STACK = """version: 1
name: {name}
domain: www.{name}.test
services:
  web:
    role: web
    build: {app}
    command: ["python3", "serve.py"]
    port: {web_port}
    secrets: [APP_KEY]
postgres:
  version: 15
  database: lsy
buckets:
  media: {{}}
secrets:
  APP_KEY: {{from: generate, length: 24}}
providers:
  ci:
    type: aws
    region: us-east-1
{endpoint}    ami: ami-12c6146b
    known_hosts: {known_hosts}
{postgres}    instances:
      - {{name: web-1, roles: [web, db], root: {roots}/{name}-web-1}}
    reach:
      web-1: {{address: {a3}, private_address: {a3}, port: {port}, user: {user}, key: {key}}}
dns:
  provider: ci
  zone: {name}.test
  records:
    - {{name: www, type: A, target: web, ttl: 120}}
"""


def aws(client: str, endpoint: str):
    return boto3.client(client, endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test",
                        aws_secret_access_key="test")


def write_stack(root, lab, endpoint, roots, *, name: str = "lsy", web_port: int = 8300, pg_port: int = 5472,
                in_env: bool = False) -> None:
    """The stack, PostgreSQL on the db instance (LocalStack has no RDS); the endpoint in the stack file, or
    (``in_env``) left to AWS_ENDPOINT_URL as a CI job sets it."""
    host = lab.hosts[2]
    (root / "lifeboat.yml").write_text(STACK.format(
        name=name, app=tiny_app(root) if not (root / "app").exists() else root / "app", web_port=web_port,
        endpoint="" if in_env else f"    endpoint_url: {endpoint}\n", known_hosts=lab.known_hosts, roots=roots,
        port=host.port, user=lab.user, key=lab.client_key, a3=LAB[2],
        postgres=f"    postgres: {{on: instance}}\n    postgres_port: {pg_port}\n"))


@pytest.fixture(scope="module")
def env(terraform_rc):
    with environment(aws_environment(terraform_rc)) as values:
        yield values


def test_chirps_own_stack_plans_with_rds_missing_named_and_up_refuses_it(tmp_path, localstack, env):
    """chirp's stack file as it is, with an aws target added the way a CI user would (no reach: hosts):
    `plan --detailed-exitcode` computes every resource, RDS included, exits 10 and names the missing RDS as
    a warning with a code; `up` stops with exit 5 before changing anything."""
    from .conftest import CHIRP

    app = tmp_path / "chirp"
    shutil.copytree(CHIRP, app, ignore=shutil.ignore_patterns(".lifeboat", "__pycache__"))
    text = (app / "lifeboat.yml").read_text()
    assert "\nproviders:\n" in text
    (app / "lifeboat.yml").write_text(text.replace("\nproviders:\n", f"""
providers:
  ci:
    type: aws
    region: us-east-1
    endpoint_url: {localstack.url}
    ami: ami-12c6146b
    instances:
      - {{name: app-1, roles: [web, worker, db]}}
""", 1))
    plan = run_cli("plan", "--on", "ci", "--detailed-exitcode", "--output", "json", cwd=app, timeout=600)
    assert plan.code == 10, plan
    data = plan.envelope["data"]
    [warning] = [w for w in data["warnings"] if w["code"] == "aws.rds_unavailable"]
    assert warning["message"].startswith(f"RDS is not available at {localstack.url}"), warning
    planned = {(c["kind"], c["name"]): c["action"] for c in data["changes"]}
    assert planned[("infra", "aws_db_instance.postgres[0]")] == "create", sorted(planned)
    assert planned[("infra", "aws_instance.host[\"app-1\"]")] == "create", sorted(planned)
    assert planned[("database", "chirp")] == "create" and planned[("secret", "CHIRP_SECRET_KEY")] == "create"
    from toolkit.plan.planner import REDACTED

    secret = {c["name"]: c["changes"] for c in data["changes"] if c["kind"] == "secret"}
    assert secret["CHIRP_SECRET_KEY"]["value"] == {"before": None, "after": REDACTED}, secret  # never the value
    assert data["summary"]["create"] == len([c for c in data["changes"] if c["action"] == "create"])

    up = run_cli("up", "--on", "ci", "--yes", "--output", "json", cwd=app, timeout=600)
    assert up.code == 5 and up.envelope["errors"][0]["code"] == "aws.rds_unavailable", up
    assert "postgres: {on: instance}" in up.envelope["errors"][0]["hint"]
    assert not aws("ec2", localstack.url).describe_vpcs(
        Filters=[{"Name": "tag:lifeboat:stack", "Values": ["chirp-ci"]}])["Vpcs"]
    assert not [b for b in aws("s3", localstack.url).list_buckets()["Buckets"] if b["Name"].startswith("chirp-ci")]


@pytest.fixture(scope="module")
def deployed(tmp_path_factory, ssh_lab, localstack, env):
    root = tmp_path_factory.mktemp("aws-localstack")
    roots = make_host_roots()
    write_stack(root, ssh_lab, localstack.url, roots)
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

    def test_compute_reports_instances(self, provider):
        instances = provider.compute().instances()
        assert [(i.service, i.host, i.state, i.healthy) for i in instances] == [("web", "web-1", "running", True)]
        assert provider.compute().addresses("web") == [LAB[2]]

