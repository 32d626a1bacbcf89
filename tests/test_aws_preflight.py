"""The aws provider's preflight and generated Terraform configuration (against a real moto server, no
Terraform run): credentials and endpoints fail with exit 5 and a useful message, before anything changes."""

from __future__ import annotations

import json

import pytest

from toolkit.config import stackfile
from toolkit.contract import Unsupported
from toolkit.run.engine import Engine

from .conftest import run_cli

STACK = """version: 1
name: pre
domain: pre.example.test
services:
  web: {{role: web, build: ., command: ["python3", "-m", "http.server"], port: 8000}}
buckets:
  media: {{}}
providers:
  cloud:
    type: aws
    region: eu-west-3
    ami: ami-12c6146b
    endpoint_url: {endpoint}
{extra}    instances:
      - {{name: web-1, roles: [web]}}
"""

NO_CREDENTIALS = {"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None, "AWS_SESSION_TOKEN": None,
                  "AWS_PROFILE": None, "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/credentials",
                  "AWS_CONFIG_FILE": "/nonexistent/config", "AWS_EC2_METADATA_DISABLED": "true",
                  "AWS_CONTAINER_CREDENTIALS_FULL_URI": None, "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": None}


def write(tmp_path, endpoint: str, extra: str = "") -> None:
    (tmp_path / "lifeboat.yml").write_text(STACK.format(endpoint=endpoint, extra=extra))


def test_missing_credentials_exit_5_naming_region_and_endpoint(tmp_path, moto_server):
    write(tmp_path, moto_server.url)
    result = run_cli("plan", "--on", "cloud", "--output", "json", cwd=tmp_path, env=NO_CREDENTIALS)
    assert result.code == 5, result
    error = result.envelope["errors"][0]
    assert "no AWS credentials" in error["message"] and "region eu-west-3" in error["message"]
    assert moto_server.url in error["message"] and "AWS_PROFILE" in error["hint"]
    assert not (tmp_path / ".lifeboat").exists(), "a failed preflight wrote state"


def test_unknown_profile_exit_5(tmp_path, moto_server):
    write(tmp_path, moto_server.url, "    profile: nosuchprofile\n")
    result = run_cli("up", "--on", "cloud", "--yes", "--output", "json", cwd=tmp_path,
                     env={**NO_CREDENTIALS, "AWS_CONFIG_FILE": str(tmp_path / "config")})
    assert result.code == 5, result
    assert "nosuchprofile" in result.envelope["errors"][0]["message"]


def test_unreachable_endpoint_exit_5(tmp_path):
    write(tmp_path, "http://127.0.0.1:9")  # discard port: nothing listens
    result = run_cli("plan", "--on", "cloud", "--output", "json", cwd=tmp_path,
                     env={"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b",
                          "AWS_MAX_ATTEMPTS": "1"}, timeout=120)
    assert result.code == 5, result
    assert "cannot reach AWS" in result.envelope["errors"][0]["message"]


def test_identity_check_passes_and_reports_the_account(tmp_path, moto_server, monkeypatch):
    write(tmp_path, moto_server.url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    facts = Engine(stackfile.load(tmp_path / "lifeboat.yml")).preflight("cloud")
    assert facts["identity"]["account"] and facts["region"] == "eu-west-3"


def test_terraform_root_points_every_service_at_the_endpoint(tmp_path, moto_server, monkeypatch):
    write(tmp_path, moto_server.url, "    terraform_backend: {bucket: tf-state}\n")
    monkeypatch.setenv("AWS_ENDPOINT_URL_ROUTE_53", "http://127.0.0.1:1234")
    provider = Engine(stackfile.load(tmp_path / "lifeboat.yml")).provider("cloud")
    root = provider.terraform_root()
    endpoints = root["provider"]["aws"]["endpoints"][0]
    assert endpoints["route53"] == "http://127.0.0.1:1234"  # the per-service variable wins
    assert {k for k, v in endpoints.items() if v == moto_server.url} == {"ec2", "s3", "rds", "sts", "iam",
                                                                           "secretsmanager"}
    assert root["provider"]["aws"]["skip_credentials_validation"] is True
    backend = root["terraform"]["backend"]["s3"]
    assert backend["bucket"] == "tf-state" and backend["use_lockfile"] and backend["key"] == "lifeboat/pre-cloud.tfstate"
    variables = provider.terraform_variables()
    assert variables["availability_zones"] == ["eu-west-3a", "eu-west-3b"] and variables["postgres"] is None
    assert json.dumps(variables).count("PRIVATE KEY") == 0  # host keys go only in the sensitive var file
    user_data = provider.terraform_secrets()["user_data"]["web-1"].reveal_text()
    assert user_data.startswith("#cloud-config\n") and "ed25519_private" in user_data
    provider.outputs(fresh=True)  # hosts are re-read after Terraform ran; the new host key is pinned
    assert provider.host_key("web-1") in [k for s in provider.specs for k in s.host_keys]
    assert (tmp_path / ".lifeboat" / "cloud" / "ssh" / "host-web-1").stat().st_mode & 0o077 == 0


def test_terraform_state_in_an_s3_backend_on_the_emulator(tmp_path, moto_server, terraform_rc, monkeypatch):
    """The backend block the provider writes works: Terraform keeps its state in S3 (with a lock file)."""
    import boto3

    from toolkit.transport.terraform import Workspace

    from .test_terraform import MODULE

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    s3 = boto3.client("s3", endpoint_url=moto_server.url, region_name="eu-west-3")
    s3.create_bucket(Bucket="tf-state", CreateBucketConfiguration={"LocationConstraint": "eu-west-3"})
    write(tmp_path, moto_server.url, "    terraform_backend: {bucket: tf-state}\n")
    provider = Engine(stackfile.load(tmp_path / "lifeboat.yml")).provider("cloud")
    root = {"terraform": {"backend": provider.terraform_root()["terraform"]["backend"]}}
    ws = Workspace(tmp_path / "ws", MODULE, env={"TF_CLI_CONFIG_FILE": str(terraform_rc)})
    ws.prepare(root, {"greeting": "kept in s3"})
    ws.plan()
    ws.apply()
    body = s3.get_object(Bucket="tf-state", Key="lifeboat/pre-cloud.tfstate")["Body"].read()
    assert b"kept in s3" in body
    assert not (ws.dir / "terraform.tfstate").exists()
    ws.destroy()
    assert ws.resources() == []


def test_a_drill_copy_has_its_own_state_names_and_database(tmp_path, moto_server):
    """What a drill's scratch copy of an AWS target is (no Terraform run): its own backend key and state
    folder; on instances reached through reach: (possibly the live machines) roots suffixed and ports moved;
    and a target whose database is redirected by reach: postgres needs drill_reach: postgres, or the drill
    is refused (exit 2, naming the setting) before anything is made."""
    reach = ("    reach:\n      web-1: {address: 127.0.0.2}\n      postgres: {address: 127.0.0.9, port: 5999}\n"
             "    terraform_backend: {bucket: tf-state}\n")
    write(tmp_path, moto_server.url, reach)
    stack = (tmp_path / "lifeboat.yml").read_text().replace("name: pre\n", "name: pre\nbackup: {to: cloud}\n")
    (tmp_path / "lifeboat.yml").write_text(stack)
    refused = run_cli("drill", "--to", "cloud", "--output", "json", cwd=tmp_path)
    assert refused.code == 2, refused
    assert refused.envelope["errors"][0]["code"] == "drill.unsupported"
    assert "drill_reach" in refused.envelope["errors"][0]["message"]
    assert not (tmp_path / ".lifeboat").exists() or not any((tmp_path / ".lifeboat").iterdir())

    write(tmp_path, moto_server.url, reach + "    drill_reach:\n      postgres: {address: 127.0.0.9, port: 6000}\n")
    provider = Engine(stackfile.load(tmp_path / "lifeboat.yml")).provider("cloud")
    scratch = provider.scratch_settings("drill-cloud")
    assert scratch["reach"]["postgres"]["port"] == 6000 and scratch["reach"]["web-1"]["address"] == "127.0.0.2"
    assert scratch["terraform_backend"]["key"] == "lifeboat/pre-cloud-drill-cloud.tfstate"
    assert scratch["state_dir"].endswith(".lifeboat/cloud-drill-cloud")
    assert scratch["instances"][0]["root"] == "/srv/lifeboat-drill-cloud"
    assert scratch["port_offset"] == 10000 and scratch["proxy"]["http_port"] == 10080

    # containers are named after the stack: beside the live ones on a shared machine they would collide
    write(tmp_path, moto_server.url, reach + "    runtime: docker\n    drill_reach:\n      postgres: {address: 127.0.0.9, port: 6000}\n")
    with pytest.raises(Unsupported, match="process runtime only"):
        Engine(stackfile.load(tmp_path / "lifeboat.yml")).provider("cloud").scratch_settings("drill-cloud")

    # instances at the addresses AWS reports are new machines: nothing moves there (docker is fine too)
    write(tmp_path, moto_server.url, "    runtime: docker\n")
    plain = Engine(stackfile.load(tmp_path / "lifeboat.yml")).provider("cloud").scratch_settings("drill-cloud")
    assert "port_offset" not in plain and plain["instances"][0].get("root") is None


def test_validate_names_an_unknown_instance_in_reach_with_its_line(tmp_path):
    """reach:, drill_reach: and tunnel_via: name instances (or postgres): a typo is a stack-file error of
    `validate` (exit 2, file, line and key, a suggestion), before any command talks to AWS."""
    extra = ("    reach:\n      web-1: {address: 127.0.0.2}\n    drill_reach:\n      web_1: {address: 127.0.0.3}\n"
             "      postgress: {address: 127.0.0.9}\n    tunnel_via: web-2\n")
    write(tmp_path, "http://127.0.0.1:9", extra)
    lines = (tmp_path / "lifeboat.yml").read_text().splitlines()
    result = run_cli("validate", "--output", "json", cwd=tmp_path)
    assert result.code == 2, result
    problems = {e["key"]: e for e in result.envelope["errors"]}
    assert set(problems) == {"providers.cloud.drill_reach.web_1", "providers.cloud.drill_reach.postgress",
                             "providers.cloud.tunnel_via"}, problems
    for key, text in (("providers.cloud.drill_reach.web_1", "web_1:"), ("providers.cloud.drill_reach.postgress",
                                                                         "postgress:"),
                      ("providers.cloud.tunnel_via", "tunnel_via:")):
        assert lines[problems[key]["line"] - 1].strip().startswith(text), (key, problems[key])
        assert "lifeboat.yml" in problems[key]["message"]
    assert 'did you mean "postgres"?' in problems["providers.cloud.drill_reach.postgress"]["hint"]
    assert 'did you mean "web-1"?' in problems["providers.cloud.drill_reach.web_1"]["hint"]
    write(tmp_path, "http://127.0.0.1:9", "    reach:\n      web-1: {address: 127.0.0.2}\n      postgres: {address: 127.0.0.9}\n")
    assert run_cli("validate", cwd=tmp_path).code == 0
