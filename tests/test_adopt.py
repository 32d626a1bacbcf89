"""Adoption (issue 23, item 12): Takahē run by hand the way its owner would (its own PostgreSQL cluster, a
virtualenv, gunicorn and its stator started from a shell with its env file, media in its default nested
folder), nothing of Lifeboat's involved, then described as an `existing` target (on this machine, and as
reached over SSH: its database through a tunnel from its host, its media read there) and migrated by
Lifeboat onto bare metal (real SSH hosts). Every status and image the hand-run copy served is served there; the hand-run copy is
unchanged except the freeze (its processes stopped by the stack's own command): its database keeps every
row and its media folder every byte, with no file of Lifeboat's added. `up`, `destroy` and a migration onto
it refuse (exit 2) before touching it."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from .conftest import REPO, baremetal_target, make_host_roots, run_cli
from .test_takahe import ARCHIVE, SETUP, api, fetch, logs_of, post_image, web_url

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_PORT, WEB_PORT = 5479, 8479  # the hand-run copy's own ports, on 127.0.0.1


def run(argv, **kw) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False, **kw)
    assert done.returncode == 0, f"{argv}: {done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return done


def as_postgres(*argv: str) -> subprocess.CompletedProcess:
    return run(["runuser", "-u", "postgres", "--", *argv])


def tree(folder: Path) -> dict[str, str]:
    """Every entry under ``folder`` (files by digest, folders as such), with its mode, owner and extended
    attributes (where a store keeps its checksum cache)."""
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        st = path.lstat()
        out[rel] = " ".join([hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir",
                             oct(st.st_mode), str(st.st_uid), ",".join(sorted(os.listxattr(path)))])
    return out


def rows(home: Path) -> dict[str, int]:
    import psycopg

    counts = {}
    with psycopg.connect(host="127.0.0.1", port=PG_PORT, user="takahe", password=PASSWORD, dbname="takahe") as conn:
        for (table,) in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"):
            counts[table] = conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]  # noqa: S608 - catalog names
    return counts


PASSWORD = "hand run: p@ss/word?"  # characters a URL has to escape
KEY_VAR = "LB_TEST_ADOPT_BACKUP_KEY"


@pytest.fixture(scope="module")
def hand_run():
    """Takahē started by hand in /var/tmp (PostgreSQL runs as its own user, who must reach the folder)."""
    if not ARCHIVE.is_file():
        pytest.fail(f"{ARCHIVE} is missing (../shared/apps beside the repository, or LIFEBOAT_APPS)")
    home = Path(f"/var/tmp/lifeboat-adopt-{uuid.uuid4().hex[:8]}")
    home.mkdir(mode=0o755)
    procs: list[subprocess.Popen] = []
    try:
        with tarfile.open(ARCHIVE) as archive:
            archive.extractall(home / "src", filter="data")
        app = home / "src" / "takahe"
        # its own PostgreSQL 15 cluster
        (home / "pg").mkdir()
        shutil.chown(home / "pg", "postgres", "postgres")
        as_postgres(str(PG_BIN / "initdb"), "-D", str(home / "pg" / "data"), "--auth-local=trust",
                    "--auth-host=scram-sha-256", "-U", "postgres")
        as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(home / "pg" / "data"), "-l", str(home / "pg" / "log"), "-w",
                    "-o", f"-p {PG_PORT} -k {home / 'pg'} -c listen_addresses=127.0.0.1", "start")
        for sql in (f"CREATE ROLE takahe LOGIN PASSWORD '{PASSWORD}'", "CREATE DATABASE takahe OWNER takahe"):
            as_postgres(str(PG_BIN / "psql"), "-h", str(home / "pg"), "-p", str(PG_PORT), "-U", "postgres",
                        "-v", "ON_ERROR_STOP=1", "-c", sql)
        # its env file, as its docs describe it
        from urllib.parse import quote

        env = {"TAKAHE_DATABASE_SERVER": f"postgres://takahe:{quote(PASSWORD, safe='')}@127.0.0.1:{PG_PORT}/takahe",
               "TAKAHE_SECRET_KEY": "hand-" + uuid.uuid4().hex * 2, "TAKAHE_STATOR_TOKEN": uuid.uuid4().hex,
               "TAKAHE_MAIN_DOMAIN": "takahe.lifeboat.test", "TAKAHE_ENVIRONMENT": "production",
               "TAKAHE_MEDIA_BACKEND": "local://", "TAKAHE_MEDIA_ROOT": str(home / "media"),
               "TAKAHE_MEDIA_URL": "https://takahe.lifeboat.test/media/", "TAKAHE_USE_PROXY_HEADERS": "true"}
        (home / "takahe.env").write_text("# Takahe, run by hand\n" + "".join(
            f'export {k}="{v}"\n' if k == "TAKAHE_SECRET_KEY" else f"{k}={v}\n" for k, v in env.items()))
        (home / "media").mkdir()
        run([sys.executable, "-m", "venv", str(home / "venv")])
        py = str(home / "venv" / "bin" / "python")
        run([py, "-m", "pip", "install", "-q", "-r", str(app / "requirements.txt")])
        full = {**os.environ, **env}
        run([py, "manage.py", "collectstatic", "--noinput"], cwd=app, env=full)
        run([py, "manage.py", "migrate", "--noinput"], cwd=app, env=full)
        made = run([py, "manage.py", "shell", "-c", SETUP], cwd=app, env=full)
        assert "made" in made.stdout
        log = open(home / "app.log", "ab")  # noqa: SIM115 - the processes keep it
        procs.append(subprocess.Popen([str(home / "venv" / "bin" / "gunicorn"), "takahe.wsgi:application", "--bind",
                                       f"127.0.0.1:{WEB_PORT}", "--workers", "2"], cwd=app, env=full, stdout=log,
                                      stderr=log, start_new_session=True))
        procs.append(subprocess.Popen([py, "manage.py", "runstator"], cwd=app, env=full, stdout=log, stderr=log,
                                      start_new_session=True))
        base = f"http://127.0.0.1:{WEB_PORT}"
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(base + "/robots.txt", timeout=5).close()  # noqa: S310 - loopback
                break
            except OSError:
                assert time.time() < deadline, (home / "app.log").read_text()[-3000:]
                time.sleep(1)
        posted = [post_image(base, f"written by hand {n} ✓") for n in range(2)]
        yield {"home": home, "base": base, "posted": posted, "pids": [p.pid for p in procs]}
    finally:
        for proc in procs:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        if (home / "pg" / "data").is_dir():
            subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / "pg_ctl"), "-D", str(home / "pg" / "data"),
                            "-m", "immediate", "stop"], capture_output=True, check=False)
        shutil.rmtree(home, ignore_errors=True)


def stack_for(tmp_path: Path, hand: dict, lab, roots: Path) -> Path:
    home = hand["home"]
    with tarfile.open(ARCHIVE) as archive:
        archive.extractall(tmp_path, filter="data")
    stack = tmp_path / "lifeboat.yml"
    stop = json.dumps(["kill", "-TERM", *[str(p) for p in hand["pids"]]])
    # bare metal on the lab's hosts: web, worker and media on one, the database on another (ports of its own)
    colo = baremetal_target(lab, roots, roles=(("web", "worker", "storage"), ("db",)), pg_port=5462, redis_port=6412)
    colo = colo.replace("    type: baremetal\n", "    type: baremetal\n    port_offset: 312\n    media_port: 8812\n")
    # what both descriptions of the hand-run copy say alike (one reads this machine, the other its SSH host)
    described = (f"    database_url_var: TAKAHE_DATABASE_SERVER\n    buckets:\n      media: {home}/media\n"
                 f"    health:\n      web: {hand['base']}/robots.txt\n")
    example = (REPO / "examples" / "takahe" / "lifeboat.yml").read_text()
    assert "\nsecrets:\n" in example
    example = example.replace("\nsecrets:\n", f"\nsecrets:\n  BACKUP_KEY: {{from: env, var: {KEY_VAR}}}\n")
    stack.write_text(example + f"""  adopted:
    type: local
    address: 127.0.0.31
  hand:                   # the copy its owner runs by hand: Lifeboat only reads it
    type: existing
    env_file: {home}/takahe.env
{described}    freeze:
      stop: [{stop}]
  remote:                 # the same copy as Lifeboat reaches a server: over SSH (the lab's first host is here)
    type: existing
{ssh_settings(lab)}    env_file: app1:{home}/takahe.env
{described}    freeze:
      stop: [{{host: app1, run: {stop}}}]
{colo}backup:
  to: adopted
  keep: 3
  encrypt_with: BACKUP_KEY
""")
    return stack


def test_takahe_run_by_hand_is_adopted_and_migrated(hand_run, tmp_path, monkeypatch, ssh_lab):
    roots = make_host_roots()
    stack = stack_for(tmp_path, hand_run, ssh_lab, roots)
    home = hand_run["home"]
    lb = ["-c", str(stack), "-o", "json", "--yes"]
    monkeypatch.setenv(KEY_VAR, "the key only the operator holds: " + uuid.uuid4().hex)  # the CLI's children read it
    try:
        # what Lifeboat finds there: the database, the media folder, the web service healthy
        status = run_cli(*lb, "status", "--on", "hand")
        assert status.code == 0, status
        found = {r["kind"] + "/" + r["name"]: r for r in status.envelope["data"]["resources"]}
        assert found["database/takahe"]["running"] is True and found["bucket/media"]["folder"] == str(home / "media")
        assert [(s["service"], s["healthy"]) for s in status.envelope["data"]["services"]] == [("web", True)]
        # the same, reached over SSH: the URL's 127.0.0.1 is the app's host's, reached through a tunnel
        remote = run_cli(*lb, "status", "--on", "remote")
        assert remote.code == 0, remote
        found = {r["kind"] + "/" + r["name"]: r for r in remote.envelope["data"]["resources"]}
        assert found["database/takahe"]["running"] is True
        assert found["bucket/media"]["folder"] == f"app1:{home / 'media'}"
        assert [(s["service"], s["healthy"]) for s in remote.envelope["data"]["services"]] == [("web", True)]
        plan = run_cli(*lb, "plan", "--on", "hand", "--detailed-exitcode")
        assert plan.code == 0, plan  # nothing is ever planned there
        # it is never changed: up, destroy, a migration onto it refuse before doing anything
        for argv in (["up", "--on", "hand"], ["destroy", "--on", "remote"],
                     ["migrate", "--from", "adopted", "--to", "remote"]):
            refused = run_cli(*lb, *argv)
            assert refused.code == 2 and refused.envelope["errors"][0]["code"] == "target.adopted", refused
        media_before, rows_before = tree(home / "media"), rows(home)
        files = [k for k, v in media_before.items() if not v.startswith("dir")]
        assert files and all("/" in key for key in files)  # Takahe's own nested layout

        # a backup of it, every medium in it
        saved = run_cli(*lb, "backup", "--from", "hand", "--to", "adopted")
        assert saved.code == 0, saved
        verified = run_cli(*lb, "backups", "verify", "--at", "adopted")
        assert verified.code == 0 and verified.envelope["data"]["backups"][0]["objects"] == len(files), verified

        done = run_cli(*lb, "migrate", "--from", "remote", "--to", "colo", timeout=2400)
        assert done.code == 0, json.dumps(done.envelope, indent=1)[:6000] + logs_of(stack)
        steps = {s["step"]: s for s in done.envelope["data"]["steps"]}
        assert steps["freeze"]["paused"] == ["web", "worker"], steps["freeze"]

        # the hand-run copy: frozen (its processes stopped by the stack's command), otherwise untouched
        for pid in hand_run["pids"]:
            deadline = time.time() + 30
            while Path(f"/proc/{pid}").exists() and b"zombie" not in _state(pid) and time.time() < deadline:
                time.sleep(0.5)
            assert not Path(f"/proc/{pid}").exists() or b"zombie" in _state(pid), f"{pid} still runs"
        assert tree(home / "media") == media_before
        assert rows(home) == rows_before

        # every status and image it served is served by the copy Lifeboat runs on bare metal
        base = web_url(stack, "colo")
        for status_posted, image in hand_run["posted"]:
            got = api(base, "GET", f"/api/v1/statuses/{status_posted['id']}")
            assert got["content"] == status_posted["content"]
            assert fetch(base, got["media_attachments"][0]["url"]) == image
        _, image = post_image(base, "written after the move")
        assert image
    finally:
        run_cli(*lb, "destroy", "--on", "colo")
        run_cli(*lb, "destroy", "--on", "adopted", "--delete-backups")  # it keeps the backups too
        shutil.rmtree(roots, ignore_errors=True)


def _state(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/status").read_bytes()
    except OSError:
        return b"zombie"


def existing_stack(tmp_path: Path, settings: str) -> Path:
    (tmp_path / "app").mkdir(exist_ok=True)
    stack = tmp_path / "lifeboat.yml"
    stack.write_text(f"""version: 1
name: adopt
domain: adopt.lifeboat.test
services:
  web: {{role: web, build: app, command: [python, app.py], port: 8000}}
buckets:
  media: {{}}
secrets:
  APP_KEY: {{from: generate}}
providers:
  old:
    type: existing
{settings}""")
    return stack


def ssh_settings(lab) -> str:
    """hosts: of an existing target on the first of the lab's SSH hosts (this machine, over SSH)."""
    host = lab.hosts[0]
    return (f"    known_hosts: {lab.known_hosts}\n    hosts:\n      - {{name: app1, address: {host.address}, "
            f"port: {host.port}, user: {lab.user}, key: {lab.client_key}}}\n")


@pytest.fixture(params=["here", "ssh"])
def where_adopted(request) -> str:
    """The settings that put an existing target's paths on this machine, or on an SSH host."""
    return "" if request.param == "here" else ssh_settings(request.getfixturevalue("ssh_lab"))


def test_an_adopted_folder_is_read_as_it_is_and_never_written(tmp_path, where_adopted):
    """Every file at any depth is an object at its path; a link is an error naming it; nothing is written,
    not even a checksum cache; the env file's secrets are read by the stack's names. On this machine and on
    an SSH host (the lab's hosts are this machine, so the test looks at the files)."""
    from toolkit.config import stackfile
    from toolkit.errors import BadInput, ProviderError
    from toolkit.run.engine import Engine

    tmp_path.chmod(0o755)
    media = tmp_path / "media"
    (media / "attachments" / "2026" / "12").mkdir(parents=True)
    (media / "attachments" / "2026" / "12" / "x.webp").write_bytes(b"x" * 1000)
    (media / "top.png").write_bytes(b"top")
    (media / "emoji" / "_default").mkdir(parents=True)
    (media / "emoji" / "_default" / "blob cat ✓.png").write_bytes(b"\x00" * 3)
    (tmp_path / "app.env").write_text("# the app's\nexport APP_KEY='s3cr=t value'\nOTHER=1\n\n")
    env_file = tmp_path / "app.env" if where_adopted else "app.env"
    stack = existing_stack(tmp_path, f"    env_file: {env_file}\n    buckets: {{media: {media}}}\n" + where_adopted)
    provider = Engine(stackfile.load(stack)).provider("old")
    before = tree(media)
    store = provider.objects()
    listed = {o.key: o for o in store.list("media")}
    assert sorted(listed) == ["attachments/2026/12/x.webp", "emoji/_default/blob cat ✓.png", "top.png"]
    assert listed["top.png"].sha256 == hashlib.sha256(b"top").hexdigest()
    assert store.stats("media") == (3, 1006)
    with store.open_read("media", "attachments/2026/12/x.webp") as handle:
        assert handle.read() == b"x" * 1000
    assert provider.secrets().read("APP_KEY").reveal_text() == "s3cr=t value"
    assert provider.secrets().names() == ["APP_KEY"]
    for attempt in (lambda: store.write("media", "new", iter([]), size=0), lambda: store.delete("media", "top.png"),
                    lambda: provider.secrets().write("APP_KEY", provider.secrets().read("APP_KEY"))):
        with pytest.raises(BadInput) as refused:
            attempt()
        assert refused.value.code == "target.adopted"
    assert tree(media) == before and not (tmp_path / ".meta").exists()
    (media / "attachments" / "link").symlink_to(media / "top.png")
    with pytest.raises(ProviderError) as found:
        list(store.list("media"))
    assert found.value.code == "objects.not_an_object" and "attachments/link" in str(found.value)
    (media / "attachments" / "link").unlink()
    media.rename(tmp_path / "moved-away")
    with pytest.raises(ProviderError) as gone:  # a folder gone is an error, never an empty bucket
        list(store.list("media"))
    assert gone.value.code == "objects.no_bucket"
    store.release()


def test_an_existing_target_names_its_hosts_rightly(tmp_path):
    """A path or command on a host that is not in hosts:, or a relative path on a host: the file, line and
    key, exit 2, before anything is reached."""
    stack = existing_stack(tmp_path, """    hosts:
      - {name: app1, address: 192.0.2.10}
    env_file: app2:/srv/app/.env
    buckets: {media: srv/media}
    freeze:
      stop: [[systemctl, stop, app], {host: app3, run: [systemctl, stop, worker]}]
""")
    out = run_cli("-c", str(stack), "-o", "json", "plan", "--on", "old")
    assert out.code == 2, out
    messages = [e["message"] for e in out.envelope["errors"]]
    text = "\n".join(messages)
    assert 'env_file: the path names host "app2"' in text and "lifeboat.yml:15: providers.old.env_file" in text, text
    assert "buckets.media: 'srv/media' is on an SSH host: give an absolute path" in text, text
    assert 'freeze.stop[1]: the command names host "app3"' in text, text


def test_an_existing_target_without_its_database_url_says_which_setting(tmp_path):
    stack = existing_stack(tmp_path, "    buckets: {media: media}\n")
    text = stack.read_text().replace("buckets:\n  media: {}\n", "buckets:\n  media: {}\npostgres: {version: 15, database: app}\n")
    stack.write_text(text)
    (tmp_path / "media").mkdir()
    out = run_cli("-c", str(stack), "-o", "json", "plan", "--on", "old")
    assert out.code == 2 and "database_url_var" in out.envelope["errors"][0]["message"], out


def test_an_existing_database_url_is_read_into_its_parts_password_and_sslmode(tmp_path, monkeypatch):
    from toolkit.config import stackfile
    from toolkit.run.engine import Engine

    stack = existing_stack(tmp_path, "    database_url_var: LB_TEST_APP_DB\n    buckets: {media: media}\n")
    stack.write_text(stack.read_text().replace("buckets:\n  media: {}\n",
                                               "buckets:\n  media: {}\npostgres: {version: 15, database: app}\n"))
    monkeypatch.setenv("LB_TEST_APP_DB", "postgres://app%40prod:p%2Fw%20rd@db.internal:6543/app_prod?sslmode=require")
    db = Engine(stackfile.load(stack)).provider("old").database()
    assert (db.endpoint(), db.login()[0], db.database) == (("db.internal", 6543), "app@prod", "app_prod")
    env = db.client_env()
    assert env["PGPASSWORD"] == "p/w rd" and env["PGSSLMODE"] == "require"


def test_an_adopted_redis_on_a_host_is_reached_through_a_tunnel(tmp_path, ssh_lab):
    """The app's Redis URL (a password a URL has to escape, a database other than 0) is what the app's host
    sees: Lifeboat reaches it through a tunnel from that host, and a backup's dump finds every database."""
    import socket
    from urllib.parse import quote

    import redis

    from toolkit.config import stackfile
    from toolkit.run.engine import Engine
    from toolkit.workflows.backup import CacheDump

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    password = "r3d:is@p/ss word"
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no", "--dir", str(tmp_path), "--requirepass", password],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = redis.Redis(port=port, password=password, db=2)
        deadline = time.time() + 20
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert time.time() < deadline, "redis-server did not start"
                time.sleep(0.2)
        client.set("queue:celery", "task", ex=600)
        redis.Redis(port=port, password=password, db=0).set("feed:1", "x")
        tmp_path.chmod(0o755)
        (tmp_path / "app.env").write_text(f"REDIS_URL=redis://:{quote(password, safe='')}@127.0.0.1:{port}/2\n")
        (tmp_path / "media").mkdir()
        stack = existing_stack(tmp_path, f"    env_file: {tmp_path / 'app.env'}\n    redis_url_var: REDIS_URL\n"
                                         f"    buckets: {{media: {tmp_path / 'media'}}}\n" + ssh_settings(ssh_lab))
        stack.write_text(stack.read_text().replace("buckets:\n  media: {}\n", "buckets:\n  media: {}\nredis: {}\n"))
        provider = Engine(stackfile.load(stack)).provider("old")
        cache = provider.cache()
        assert cache.ping() and cache.where() == f"127.0.0.1:{port} (as app1 sees it)"
        url = cache.connection_url().reveal_text()
        assert f":{port}/" not in url and url.endswith("/2")  # the tunnel's end here, the app's database
        dump = CacheDump(url)
        while dump.read(1 << 16):
            pass
        assert dump.keys == 2 and dump.per_db == {0: 1, 2: 1}, dump.per_db
        provider.close_tunnels()
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_an_existing_targets_host_key_is_checked_and_trusted_only_when_confirmed(tmp_path, ssh_lab):
    """An SSH host whose key is not in known_hosts is refused (nothing read), naming the command that trusts
    it; `hosts trust` records it after confirmation (here --yes), and the target reads the host."""
    tmp_path.chmod(0o755)
    (tmp_path / "media").mkdir()
    (tmp_path / "media" / "a.txt").write_text("a")
    (tmp_path / "app.env").write_text("APP_KEY=k\n")
    known = tmp_path / "known_hosts"
    known.write_text("")
    settings = ssh_settings(ssh_lab).replace(str(ssh_lab.known_hosts), str(known))
    stack = existing_stack(tmp_path, f"    env_file: {tmp_path / 'app.env'}\n    buckets: {{media: {tmp_path / 'media'}}}\n"
                                     + settings)
    lb = ["-c", str(stack), "-o", "json"]
    refused = run_cli(*lb, "status", "--on", "old")
    assert refused.code == 5 and refused.envelope["errors"][0]["code"] == "ssh.unknown_host", refused
    assert "lifeboat hosts trust --on old app1" in json.dumps(refused.envelope), refused
    assert known.read_text() == ""
    trusted = run_cli(*lb, "--yes", "hosts", "trust", "--on", "old")
    assert trusted.code == 0 and trusted.envelope["data"]["hosts"][0]["action"] == "trusted", trusted
    status = run_cli(*lb, "status", "--on", "old")
    assert status.code == 0, status
    assert {r["name"]: r for r in status.envelope["data"]["resources"]}["media"]["folder"] == f"app1:{tmp_path / 'media'}"


def test_an_apps_media_kept_in_s3_are_adopted_and_migrated(tmp_path, moto_server):
    """An app that keeps its media in S3 (Mastodon's S3_BUCKET/S3_ENDPOINT, Takahē's s3:// backend): the
    existing target names the bucket and its endpoint and keys by the app's own variables (read from its env
    file, never written in the stack file). Objects the app wrote (nested keys, awkward names, an empty one,
    a multipart upload whose ETag is no MD5) are listed and hashed as they are and migrated onto a local
    target, every byte; the app's bucket is left exactly as it was (no object, version or tag added)."""
    import boto3

    from .conftest import tiny_app

    s3 = boto3.client("s3", endpoint_url=moto_server.url, region_name="us-east-1", aws_access_key_id="app-key",
                      aws_secret_access_key="app-secret")
    real = f"social-media-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=real)
    s3.put_bucket_versioning(Bucket=real, VersioningConfiguration={"Status": "Enabled"})
    objects = {"media_attachments/files/109/402/original/a b.png": os.urandom(3000),
               "accounts/avatars/000/001/ünïcode ☕.jpg": b"\xff\xd8" + os.urandom(500),
               "cache/empty": b"", "odd/what?#%.txt": b"keys a URL has to escape\n"}
    for key, body in objects.items():
        s3.put_object(Bucket=real, Key=key, Body=body)
    big = os.urandom(11 << 20)  # uploaded in parts, as SDKs do above their threshold: its ETag is not an MD5
    from boto3.s3.transfer import TransferConfig

    s3.upload_fileobj(io.BytesIO(big), real, "media_attachments/files/video.mp4",
                      Config=TransferConfig(multipart_threshold=5 << 20, multipart_chunksize=5 << 20))
    objects["media_attachments/files/video.mp4"] = big
    assert "-" in s3.head_object(Bucket=real, Key="media_attachments/files/video.mp4")["ETag"]

    def as_it_is():
        versions = s3.list_object_versions(Bucket=real)
        return (sorted((v["Key"], v["VersionId"], v["ETag"]) for v in versions.get("Versions", [])),
                versions.get("DeleteMarkers", []),
                {k: s3.get_object_tagging(Bucket=real, Key=k)["TagSet"] for k in objects})

    before = as_it_is()
    (tmp_path / "app.env").write_text(f"S3_ENABLED=true\nS3_BUCKET={real}\nS3_ENDPOINT={moto_server.url}\n"
                                      "AWS_ACCESS_KEY_ID=app-key\nAWS_SECRET_ACCESS_KEY='app-secret'\n")
    tiny_app(tmp_path)
    stack = tmp_path / "lifeboat.yml"
    stack.write_text("""version: 1
name: adopts3
domain: adopts3.lifeboat.test
services:
  web: {role: web, build: app, command: [python, serve.py], port: 8000, health: /}
buckets:
  media: {}
providers:
  old:
    type: existing
    env_file: app.env
    buckets:
      media: {s3: "${S3_BUCKET}", endpoint: "${S3_ENDPOINT}", access_key_id: "${AWS_ACCESS_KEY_ID}",
               secret_access_key: "${AWS_SECRET_ACCESS_KEY}"}
  here:
    type: local
    address: 127.0.0.32
""")
    lb = ["-c", str(stack), "-o", "json", "--yes"]
    try:
        status = run_cli(*lb, "status", "--on", "old")
        found = {r["kind"] + "/" + r["name"]: r for r in status.envelope["data"]["resources"]}
        assert found["bucket/media"]["s3"] == f"s3://{real} at {moto_server.url}", status
        assert "app-secret" not in status.stdout
        from toolkit.config import stackfile
        from toolkit.run.engine import Engine

        store = Engine(stackfile.load(stack)).provider("old").objects()
        listed = {o.key: o for o in store.list("media")}
        assert sorted(listed) == sorted(objects)
        assert store.checksum("media", "media_attachments/files/video.mp4") == hashlib.sha256(big).hexdigest()
        with pytest.raises(Exception) as refused:
            store.write("media", "new", io.BytesIO(b"x"), size=1)
        assert getattr(refused.value, "code", None) == "target.adopted"

        moved = run_cli(*lb, "migrate", "--from", "old", "--to", "here", "--no-cutover", timeout=900)
        assert moved.code == 0, json.dumps(moved.envelope, indent=1)[:4000]
        steps = {s["step"]: s for s in moved.envelope["data"]["steps"]}
        assert steps["media"]["copied"] == len(objects), steps["media"]
        here = Engine(stackfile.load(stack)).provider("here").objects()
        for key, body in objects.items():
            with here.open_read("media", key) as handle:
                assert handle.read() == body, key
        assert as_it_is() == before
        assert "app-secret" not in moved.stdout + moved.stderr
    finally:
        run_cli(*lb, "destroy", "--on", "here")
