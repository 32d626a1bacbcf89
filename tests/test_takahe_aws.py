"""Takahē (../shared/apps, unmodified) moved from bare metal onto AWS: run by examples/takahe/lifeboat.yml on a
bare-metal host (its media in nested folders of the bucket folder, served by the app), an account and a
status with an image made there through `lifeboat exec` and its Mastodon API; then `lifeboat migrate` to the
aws provider (moto with Terraform applying for real; the emulated instance paired with a real SSH host and
the emulated RDS with a real PostgreSQL, as in test_aws_moto.py), where the target's env switches Takahē to
its S3 backend on the stack's bucket (`${BUCKET_MEDIA_NAME}`, the endpoint's parts). The status is served by
the app there, its image by S3 at the URL the app gives, the same bytes under the same nested key; an image
posted there is written by the app itself to S3 (issue 23: "bare metal -> aws (moto with paired hosts, S3
media)").

What is emulated: moto answers the AWS APIs and runs no instance; the instance's "machine" is the lab's SSH
host, its RDS a PostgreSQL on loopback (tests/awslab.py). On real AWS the instance role gives the app its S3
credentials; the emulator needs keys, so this test lists them as the services' secrets (the one change to the
example's services)."""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
import urllib.request
import uuid
from contextlib import ExitStack

import boto3
import pytest

from .conftest import REPO, aws_environment, environment, make_host_roots, run_cli
from .test_takahe import ARCHIVE, SETUP, api, logs_of, post_image, web_urls

pytestmark = pytest.mark.timeout(2400)

SECRETS = "secrets: [TAKAHE_SECRET_KEY, TAKAHE_STATOR_TOKEN]"
TARGETS = """  colo:
    type: baremetal
    known_hosts: {known_hosts}
    postgres_port: 5463
    hosts:
      - {{name: box, address: {box.address}, port: {box.port}, user: {user}, key: {key},
         roles: [web, worker, storage, db], root: {roots}/colo-box}}
  cloud:
    type: aws
    region: us-east-1
    endpoint_url: {endpoint}
    ami: ami-12c6146b
    known_hosts: {known_hosts}
    instances:
      - {{name: web-1, roles: [web, worker, db], root: {roots}/aws-web-1}}
    reach:
      web-1: {{address: {web.address}, private_address: {web.address}, port: {web.port}, user: {user}, key: {key}}}
      postgres: {{address: {rds.address}, port: {rds.port}}}
    env:                  # Takahē's S3 backend on the stack's bucket (public: a policy, no ACLs); URLs S3's own
      TAKAHE_MEDIA_BACKEND: "s3-insecure://${{BUCKET_MEDIA_ENDPOINT_HOST}}:${{BUCKET_MEDIA_ENDPOINT_PORT}}/\
${{BUCKET_MEDIA_NAME}}"
      TAKAHE_MEDIA_BACKEND_S3_ACL: ""
      TAKAHE_MEDIA_URL: "/media/"
      TAKAHE_MEDIA_ROOT: ""
"""


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as resp:  # noqa: S310 - the emulator on loopback
        return resp.read()


def test_takahe_moves_from_bare_metal_onto_aws_with_its_media_in_s3(tmp_path, ssh_lab, moto_server, terraform_rc):
    from .awslab import start_rds_stand_in

    if not ARCHIVE.is_file():
        pytest.fail(f"{ARCHIVE} is missing: the unmodified app lives in ../shared/apps beside the repository; "
                    "set LIFEBOAT_APPS to that folder when the clone is elsewhere")
    with tarfile.open(ARCHIVE) as archive:
        archive.extractall(tmp_path, filter="data")
    moto_server.reset()
    roots = make_host_roots()
    rds = start_rds_stand_in(database="takahe")
    example = (REPO / "examples" / "takahe" / "lifeboat.yml").read_text()
    assert example.count(SECRETS) == 2 and "\nsecrets:\n" in example
    example = example.replace(SECRETS, SECRETS[:-1] + ", AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY]")
    example = example.replace("\nsecrets:\n", "\nsecrets:\n  AWS_ACCESS_KEY_ID: {from: env, var: TAKAHE_S3_KEY}\n"
                              "  AWS_SECRET_ACCESS_KEY: {from: env, var: TAKAHE_S3_SECRET}\n")
    stack = tmp_path / "lifeboat.yml"
    stack.write_text(example + TARGETS.format(known_hosts=ssh_lab.known_hosts, box=ssh_lab.hosts[2],
                                              web=ssh_lab.hosts[0], user=ssh_lab.user, key=ssh_lab.client_key,
                                              roots=roots, endpoint=moto_server.url, rds=rds))
    env = {**aws_environment(terraform_rc), "TAKAHE_S3_KEY": "takahe-app", "TAKAHE_S3_SECRET": uuid.uuid4().hex}
    scope = ExitStack()
    scope.enter_context(environment(env))
    lb = ["-c", str(stack), "-o", "json", "--yes"]
    try:
        up = run_cli(*lb, "up", "--on", "colo", timeout=1800)
        assert up.code == 0, json.dumps(up.envelope, indent=1)[:6000] + logs_of(stack)
        made = run_cli("-c", str(stack), "exec", "--on", "colo", "web", "--", "python", "manage.py", "shell",
                       "-c", SETUP)
        assert made.code == 0 and "made" in made.stdout, made
        [base] = web_urls(stack, "colo")
        status, served = post_image(base, "from bare metal to the cloud ✓")
        key = status["media_attachments"][0]["url"].split("/media/", 1)[1]
        assert key.count("/") >= 2, key  # Takahē's own nested layout (attachments/<date>/...)

        moved = run_cli(*lb, "migrate", "--from", "colo", "--to", "cloud", "--no-cutover", timeout=2400)
        assert moved.code == 0, json.dumps(moved.envelope, indent=1)[:6000] + logs_of(stack)
        steps = {s["step"]: s for s in moved.envelope["data"]["steps"]}
        assert steps["media"]["copied"] >= 1, steps["media"]

        # on AWS: the status served by the app, its image by S3 at the URL the app gives now, same bytes and key
        s3 = boto3.client("s3", endpoint_url=moto_server.url, region_name="us-east-1")
        [bucket] = [b["Name"] for b in s3.list_buckets()["Buckets"] if b["Name"].startswith("takahe-cloud-media")]
        [cloud] = web_urls(stack, "cloud")
        there = api(cloud, "GET", f"/api/v1/statuses/{status['id']}")
        assert there["content"] == status["content"]
        url = there["media_attachments"][0]["url"]
        assert url.startswith(f"{moto_server.url}/{bucket}/") and url.endswith("/" + key), url
        assert hashlib.sha256(get(url)).digest() == hashlib.sha256(served).digest()
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == served

        # a new image posted there is written by the app itself, through S3, in its nested layout
        new, new_served = post_image(cloud, "written on AWS", fetcher=lambda _base, link: get(link))
        new_key = new["media_attachments"][0]["url"].split(f"/{bucket}/", 1)[1]
        assert new_key.count("/") >= 2 and s3.get_object(Bucket=bucket, Key=new_key)["Body"].read() == new_served
        assert api(cloud, "GET", f"/api/v1/statuses/{new['id']}")["content"] == new["content"]
    finally:
        run_cli(*lb, "destroy", "--on", "cloud", timeout=900)
        run_cli(*lb, "destroy", "--on", "colo", timeout=900)
        scope.close()
        rds.stop()
        shutil.rmtree(roots, ignore_errors=True)
