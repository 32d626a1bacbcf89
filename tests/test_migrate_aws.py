"""`lifeboat migrate` off AWS (the Parler case): chirp on the aws provider (moto, with Terraform applying for
real; the emulated instance paired with a real SSH host and the emulated RDS with a real PostgreSQL, as in
test_aws_moto.py) moved to a bare-metal host. Rows, media (written by the app itself to S3), secrets and
the cache arrive; DNS (Route53) is switched. Then back onto AWS (bare metal -> aws) with new rows and
awkward objects; rclone, reading S3 and the host (SFTP) with its own code, agrees on every key, size and
MD5: the bare-metal store keeps each key at its path (docs/object-layout.md), so the two inventories are
compared as rclone lists them, names and all.)"""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from contextlib import ExitStack

import boto3
import pytest

from toolkit.config import stackfile
from toolkit.run.engine import Engine

from .conftest import CHIRP, aws_environment, environment, make_host_roots, run_cli
from .sshd import lab_first_address
from .test_migrate_local import objects, rows

pytestmark = pytest.mark.timeout(1200)

LAB = [f"127.0.0.{lab_first_address() + i}" for i in range(3)]  # the lab's hosts' addresses

STACK = """version: 1
name: chirpa
domain: chirp.chirpa.test
services:
  web:
    role: web
    build: {chirp}
    command: ["python", "-m", "chirp", "web"]
    port: 8000
    health: /healthz
    env: {{CHIRP_WORKERS: "1"}}
    secrets: [CHIRP_SECRET_KEY, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY]
  worker:
    role: worker
    build: {chirp}
    command: ["python", "-m", "chirp", "worker"]
    secrets: [AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY]
postgres: {{version: 15, database: chirp, extensions: [pg_trgm]}}
redis: {{version: 7}}
buckets: {{media: {{}}}}
secrets:
  CHIRP_SECRET_KEY: {{from: generate, length: 40}}
  # the app's own S3 credentials (on real AWS the instance role serves; the emulator needs keys)
  AWS_ACCESS_KEY_ID: {{from: env, var: CHIRP_S3_KEY}}
  AWS_SECRET_ACCESS_KEY: {{from: env, var: CHIRP_S3_SECRET}}
  BACKUP_KEY: {{from: env, var: CHIRPA_BACKUP_KEY}}
providers:
  cloud:
    type: aws
    region: us-east-1
    endpoint_url: {endpoint}
    ami: ami-12c6146b
    known_hosts: {known_hosts}
    redis_port: 6399
    instances:
      - {{name: web-1, roles: [web, worker, db], root: {roots}/aws-web-1}}
    reach:
      web-1: {{address: {a1}, private_address: {a1}, port: {p1}, user: {user}, key: {key}}}
      postgres: {{address: {pg_address}, port: {pg_port}}}
    drill_reach:
      postgres: {{address: {drill_pg_address}, port: {drill_pg_port}}}
  colo:
    type: baremetal
    known_hosts: {known_hosts}
    postgres_port: 5449
    redis_port: 6400
    hosts:
      - {{name: box, address: {a3}, port: {p3}, user: {user}, key: {key}, roles: [web, worker, db, storage],
         root: {roots}/colo-box}}
dns:
  provider: cloud
  zone: chirpa.test
  records:
    - {{name: chirp, type: A, target: web, ttl: 60}}
backup: {{to: colo, encrypt_with: BACKUP_KEY}}
"""


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=15) as resp:  # noqa: S310 - lab hosts on loopback
        return resp.read()


def test_aws_to_baremetal(tmp_path, ssh_lab, moto_server, terraform_rc):
    from .awslab import start_rds_stand_in

    moto_server.reset()
    roots = make_host_roots()
    rds = start_rds_stand_in(database="chirp")
    drill_rds = start_rds_stand_in(database="chirp")  # the drill's RDS instance (a second stand-in)
    lab = ssh_lab
    stack = tmp_path / "lifeboat.yml"
    stack.write_text(STACK.format(chirp=CHIRP, endpoint=moto_server.url, known_hosts=lab.known_hosts, roots=roots,
                                  p1=lab.hosts[0].port, p3=lab.hosts[2].port, user=lab.user, key=lab.client_key,
                                  pg_address=rds.address, pg_port=rds.port, drill_pg_address=drill_rds.address,
                                  drill_pg_port=drill_rds.port, a1=LAB[0], a3=LAB[2]))
    env = {**aws_environment(terraform_rc), "CHIRP_S3_KEY": "chirp-app", "CHIRP_S3_SECRET": "chirp-app-secret",
           "CHIRPA_BACKUP_KEY": "the operator's key for chirpa"}
    scope = ExitStack()
    scope.enter_context(environment(env))
    lb = ["-c", str(stack), "-o", "json", "--yes"]
    try:
        up = run_cli(*lb, "up", "--on", "cloud", timeout=900)
        assert up.code == 0, up
        seed = run_cli("-c", str(stack), "exec", "--on", "cloud", "web", "--", "python", "-m", "chirp", "seed",
                       "--users", "50", "--posts", "700", "--media", "8", "--large-mb", "9")
        assert seed.code == 0, seed
        s3 = boto3.client("s3", endpoint_url=moto_server.url, region_name="us-east-1")
        bucket = [b["Name"] for b in s3.list_buckets()["Buckets"] if b["Name"].startswith("chirpa-cloud-media-")][0]
        assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 8  # written by chirp itself, through S3

        moved = run_cli(*lb, "-v", "migrate", "--from", "cloud", "--to", "colo", timeout=900)
        assert moved.code == 0, moved
        steps = {s["step"]: s for s in moved.envelope["data"]["steps"]}
        assert steps["media"]["copied"] == 8 and [r["record"] for r in steps["cutover"]["records"]] == ["chirp A"]

        engine = Engine(stackfile.load(stack))
        cloud, colo = engine.provider("cloud"), engine.provider("colo")
        assert rows(cloud) == rows(colo)
        assert objects(cloud.objects()) == objects(colo.objects())
        for name in ("CHIRP_SECRET_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            assert colo.secrets().read(name) == cloud.secrets().read(name)
        assert json.loads(get(f"http://{LAB[2]}:8000/api/stats"))["posts"] == 700
        zone = boto3.client("route53", endpoint_url=moto_server.url, region_name="us-east-1")
        zid = zone.list_hosted_zones_by_name(DNSName="chirpa.test")["HostedZones"][0]["Id"]
        chirp = [r for r in zone.list_resource_record_sets(HostedZoneId=zid)["ResourceRecordSets"]
                 if r["Name"] == "chirp.chirpa.test." and r["Type"] == "A"][0]
        assert [v["Value"] for v in chirp["ResourceRecords"]] == [LAB[2]]

        # And back onto AWS, with what the bare-metal side gained meanwhile: rows, awkward keys (0 bytes,
        # unicode, spaces) and an object above the multipart threshold.
        import io

        import psycopg

        extra = {"back/empty file.bin": b"", "back/unicode ☕ naïve.txt": "☕ naïve ".encode() * 300,
                 "back/big multipart.bin": os.urandom(12 << 20)}
        for key, body in extra.items():
            colo.objects().write("media", key, io.BytesIO(body), size=len(body))
        with psycopg.connect(colo.database().connection_url().reveal_text(), autocommit=True) as conn:
            conn.execute("INSERT INTO posts (user_id, body) SELECT id, 'written on colo ✓' FROM users "
                         "ORDER BY id LIMIT 5")
        back = run_cli(*lb, "migrate", "--from", "colo", "--to", "cloud", timeout=900)
        assert back.code == 0, back
        steps = {s["step"]: s for s in back.envelope["data"]["steps"]}
        assert steps["media"]["copied"] == 3 and steps["media"]["already_there"] == 8
        engine = Engine(stackfile.load(stack))
        cloud, colo = engine.provider("cloud"), engine.provider("colo")
        assert rows(cloud) == rows(colo) and rows(cloud)["posts"][0] == 705

        # rclone, reading both sides with its own S3 and SFTP code, agrees on every key, size and MD5.
        from .rclonelab import inventory, s3_remote, sftp_remote, write_config

        config = write_config(tmp_path / "rclone.conf", {
            "cloud": s3_remote(moto_server.url, "testing", "testing"),
            "colo": sftp_remote(LAB[2], lab.hosts[2].port, lab.user, lab.client_key, lab.known_hosts)})
        on_s3 = inventory(config, f"cloud:{bucket}")
        on_host = inventory(config, f"colo:{roots}/colo-box/objects/media")
        assert on_s3 == on_host and len(on_s3) == 11
        assert on_s3["back/empty file.bin"][0] == 0

        # DNS is back on the cloud instance, and chirp there serves the new rows and media by that name.
        chirp = [r for r in zone.list_resource_record_sets(HostedZoneId=zid)["ResourceRecordSets"]
                 if r["Name"] == "chirp.chirpa.test." and r["Type"] == "A"][0]
        address = chirp["ResourceRecords"][0]["Value"]
        assert address == LAB[0]
        assert json.loads(get(f"http://{address}:8000/api/stats"))["posts"] == 705
        from urllib.parse import quote

        assert get(f"http://{address}:8000/media/{quote('back/unicode ☕ naïve.txt')}") == \
            extra["back/unicode ☕ naïve.txt"]

        # The Parler case: chirp on AWS is backed up off AWS (sealed, onto the bare-metal storage host); AWS
        # then deletes everything and its endpoint goes away for real (the emulator is shut down). `failover
        # --to colo` brings chirp up there from the backup alone; Route53 went with AWS, so DNS is reported
        # as not switched.
        with psycopg.connect(cloud.database().connection_url().reveal_text(), autocommit=True) as conn:
            conn.execute("INSERT INTO posts (user_id, body) SELECT id, 'only on AWS ✓' FROM users ORDER BY id LIMIT 3")
        last = b"posted just before the drop\n"
        cloud.objects().write("media", "only-on-aws/last words.txt", io.BytesIO(last), size=len(last))
        expected = {"rows": rows(cloud), "objects": objects(cloud.objects())}
        cloud.close_tunnel()
        saved_backup = run_cli(*lb, "backup", "--from", "cloud", timeout=900)
        assert saved_backup.code == 0, saved_backup

        # First a drill onto AWS: a second deployment of the Terraform under its own name (VPC, instance,
        # RDS, buckets and secrets of its own in moto; its instance is the same paired host, so the copy runs
        # beside the live one with its root suffixed and its ports moved; its RDS is the second stand-in,
        # drill_reach) restores that backup, is compared with the live stack and torn down. The live stack
        # never notices.
        live_before = {"buckets": sorted(b["Name"] for b in s3.list_buckets()["Buckets"]),
                       "secrets": sorted(x["Name"] for x in boto3.client(
                           "secretsmanager", endpoint_url=moto_server.url,
                           region_name="us-east-1").list_secrets()["SecretList"])}
        drill = run_cli(*lb, "drill", "--to", "cloud", "--against", "cloud", timeout=900)
        assert drill.code == 0, drill
        report = drill.envelope["data"]
        assert report["torn_down"] and report["target"] == "cloud", report
        assert report["against_source"]["database"]["changed_since_backup"] == {}, report
        assert report["against_source"]["media"]["written_since_backup"] == 0, report
        assert report["against_source"]["media"]["differ"] == [], report
        assert sum(s["seconds"] for s in report["steps"]) <= report["rto_seconds"] + 1, report
        rds_api = boto3.client("rds", endpoint_url=moto_server.url, region_name="us-east-1")
        assert len(rds_api.describe_db_instances()["DBInstances"]) == 1  # the live one
        assert sorted(b["Name"] for b in s3.list_buckets()["Buckets"]) == live_before["buckets"]
        assert sorted(x["Name"] for x in boto3.client("secretsmanager", endpoint_url=moto_server.url,
                                                      region_name="us-east-1").list_secrets()["SecretList"]) == \
            live_before["secrets"]
        # what the copy restored was the backup, in its own database, and the live stack is as it was
        with psycopg.connect(f"host={drill_rds.address} port={drill_rds.port} user=lifeboat_admin dbname=chirp") \
                as conn:
            assert conn.execute("SELECT count(*) FROM posts").fetchone()[0] == 708
        assert rows(cloud) == expected["rows"]
        assert json.loads(get(f"http://{LAB[0]}:8000/api/stats"))["posts"] == 708
        assert not [p for p in roots.iterdir() if "drill" in p.name], list(roots.iterdir())
        gone = run_cli(*lb, "destroy", "--on", "cloud", timeout=900)
        assert gone.code == 0, gone
        assert not [b for b in s3.list_buckets()["Buckets"] if b["Name"].startswith("chirpa-")]
        moto_server.stop()
        try:
            over = run_cli(*lb, "failover", "--to", "colo", timeout=900)
            assert over.code == 0, over
        finally:
            moto_server.restart()
        steps = {s["step"]: s for s in over.envelope["data"]["steps"]}
        assert "cloud" in steps["cutover"]["skipped"], steps["cutover"]
        assert steps["media"]["written"] >= 1
        colo = Engine(stackfile.load(stack)).provider("colo")
        assert rows(colo) == expected["rows"] and rows(colo)["posts"][0] == 708
        assert objects(colo.objects()) == expected["objects"]
        assert json.loads(get(f"http://{LAB[2]}:8000/api/stats"))["posts"] == 708

        kept = run_cli(*lb, "destroy", "--on", "colo", timeout=900)  # it keeps the backups
        assert kept.code == 2, kept
        gone = run_cli(*lb, "destroy", "--on", "colo", "--delete-backups", timeout=900)
        assert gone.code == 0, gone
        assert not list(roots.iterdir())
    finally:
        run_cli(*lb, "destroy", "--on", "colo", "--delete-backups", timeout=900)
        run_cli(*lb, "destroy", "--on", "cloud", timeout=900)
        scope.close()
        rds.stop()
        drill_rds.stop()
        shutil.rmtree(roots, ignore_errors=True)
