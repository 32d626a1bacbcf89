"""Takahē, a real third-party app (../shared/apps, unmodified), run by examples/takahe/lifeboat.yml alone:
its migrations run in the release phase, its static files are collected by the build command, it reads its
own variable names through env templates, its media land in nested folders of the bucket. An account and a
token are made with its manage.py through `lifeboat exec`, a status with an image is posted through its
Mastodon-compatible API, and the image is fetched back; then the whole stack moves to a second target with
`lifeboat migrate` and serves the same status and image there, and on to bare metal (real SSH hosts, the app
running as its own account, its media owned by it): two web hosts, a storage host that is also the first,
a database host, the TLS proxy with a certificate from a real ACME server (pebble). There the target's env
switches Takahē to its S3 backend on the media gateway (the second web host has no media folder), media
URLs point at the proxy, which answers them from the bucket (serve:) on both web hosts; a status and an
image posted through the second web host are served by both (issue 23)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import tarfile
import urllib.request
import uuid
import zlib
from pathlib import Path

import pytest

from .acme import fetch_verified
from .conftest import REPO, baremetal_target, make_host_roots, run_cli

# ../shared/apps beside the repository (LIFEBOAT_APPS elsewhere: a clone made somewhere else)
ARCHIVE = Path(os.environ.get("LIFEBOAT_APPS") or REPO.parent / "shared" / "apps") / "takahe-d45f22c.tar.gz"
TOKEN = "lifeboat-test-token-" + "0" * 20
SETUP = f"""
from users.models import User, Domain
from users.services import IdentityService
from api.models import Application, Token
domain, _ = Domain.objects.get_or_create(domain="takahe.lifeboat.test",
                                         defaults=dict(local=True, public=True, state="updated"))
user = User.objects.create(email="alice@takahe.lifeboat.test")
identity = IdentityService.create(user, "alice", domain, "Alice")
app = Application.objects.create(name="lifeboat-test", client_id="lifeboat-test", client_secret="s")
Token.objects.create(application=app, user=user, identity=identity, token="{TOKEN}", scopes=["read", "write"])
print("made", identity.handle)
"""


def png(width: int = 16, height: int = 16) -> bytes:
    """A small valid PNG (RGB), different every time."""
    seed = uuid.uuid4().bytes
    rows = b"".join(b"\x00" + bytes(seed[(x + y) % 16] for x in range(width * 3)) for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def api(base: str, method: str, path: str, *, body: bytes | None = None, ctype: str | None = None):
    request = urllib.request.Request(base + path, data=body, method=method,
                                     headers={"Authorization": f"Bearer {TOKEN}", "Host": "takahe.lifeboat.test",
                                              **({"Content-Type": ctype} if ctype else {})})
    with urllib.request.urlopen(request, timeout=60) as resp:  # noqa: S310 - loopback
        return json.loads(resp.read())


def fetch(base: str, url: str) -> bytes:
    path = "/" + url.split("://", 1)[1].split("/", 1)[1]  # the same path, through this web host
    with urllib.request.urlopen(urllib.request.Request(base + path, headers={"Host": "takahe.lifeboat.test"}),
                                timeout=30) as resp:  # noqa: S310 - loopback
        return resp.read()


def web_urls(stack: Path, target: str) -> list[str]:
    """The web service's replicas' URLs on ``target``, one per web host (the app itself, not the proxy)."""
    status = run_cli("-c", str(stack), "-o", "json", "status", "--on", target)
    assert status.code == 0, json.dumps(status.envelope, indent=1)[:6000] + logs_of(stack)
    return [s["url"].rstrip("/") for s in status.envelope["data"]["services"] if s["service"] == "web"]


def web_url(stack: Path, target: str) -> str:
    return web_urls(stack, target)[0]


def logs_of(stack: Path) -> str:
    """The tails of the services' logs on the lab's hosts (this machine), for a failure's message."""
    roots = [line.split("root: ", 1)[1].rstrip("}").strip() for line in stack.read_text().splitlines() if "root: " in line]
    out = []
    for root in roots:
        for log in sorted(Path(root).rglob("logs/*.log")):
            out.append(f"\n--- {log}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:]))
    return "".join(out)


# The bare-metal target's env: Takahē's S3 backend on the media gateway (its two web hosts share the bucket),
# its media URLs at the proxy's host (Takahē's S3 URLs are https://<TAKAHE_MEDIA_URL host>/<key>)
S3_MODE = """    env:
      TAKAHE_MEDIA_BACKEND: "s3-insecure://${BUCKET_MEDIA_ACCESS_KEY_ID}:${BUCKET_MEDIA_SECRET_ACCESS_KEY}@\
${BUCKET_MEDIA_ENDPOINT_HOST}:${BUCKET_MEDIA_ENDPOINT_PORT}/media"
      TAKAHE_MEDIA_URL: "https://takahe.lifeboat.test/"
      TAKAHE_MEDIA_ROOT: ""
"""
PROXIES = ("127.0.0.2", "127.0.0.3")  # the two web hosts' TLS proxies (the lab's hosts, on this machine)
KEY_VAR = "LB_TEST_TAKAHE_BACKUP_KEY"  # the operator's backup key, from the environment


@pytest.fixture(scope="module")
def takahe(tmp_path_factory, ssh_lab, pebble):
    root = tmp_path_factory.mktemp("takahe")
    if not ARCHIVE.is_file():
        pytest.fail(f"{ARCHIVE} is missing: the unmodified app lives in ../shared/apps beside the repository; "
                    "set LIFEBOAT_APPS to that folder when the clone is elsewhere")
    with tarfile.open(ARCHIVE) as archive:
        archive.extractall(root, filter="data")
    roots = make_host_roots()
    stack = root / "lifeboat.yml"
    # the example as it is, plus a target on the lab's hosts (web, worker and media on one, a second web host,
    # the database on a third) and TLS from the lab's ACME server
    target = baremetal_target(ssh_lab, roots, roles=(("web", "worker", "storage"), ("web",), ("db",)), pg_port=5461,
                              redis_port=6411, pebble=pebble)
    # ports of its own on the lab's hosts (other tests' stacks serve there too)
    target = target.replace("    type: baremetal\n", "    type: baremetal\n    port_offset: 311\n    media_port: 8811\n"
                            + S3_MODE)
    example = (REPO / "examples" / "takahe" / "lifeboat.yml").read_text()
    assert "\nsecrets:\n" in example  # backups sealed with a key only the operator holds
    example = example.replace("\nsecrets:\n", f"\nsecrets:\n  BACKUP_KEY: {{from: env, var: {KEY_VAR}}}\n")
    stack.write_text(example + target + "tls:\n  acme_email: ops@takahe.lifeboat.test\n"
                     + "backup:\n  to: spare\n  encrypt_with: BACKUP_KEY\n")
    os.environ[KEY_VAR] = "the takahe operator's key " + uuid.uuid4().hex  # (the CLI's children read it)
    (root / "roots.pem").write_bytes(pebble.issuing_roots())
    yield stack
    for host in ssh_lab.hosts:  # (a failed failover test may have left them down)
        if host.process is None:
            host.start(ssh_lab.authorized_keys)
    for target in ("colo", "spare", "here"):
        run_cli("-c", str(stack), "-o", "json", "--yes", "destroy", "--on", target, "--delete-backups")
    os.environ.pop(KEY_VAR, None)
    shutil.rmtree(roots, ignore_errors=True)


def test_takahe_up_posts_media_and_serves_it(takahe):
    lb = ["-c", str(takahe), "-o", "json", "--yes"]
    up = run_cli(*lb, "up", "--on", "here", timeout=1800)
    assert up.code == 0, up
    made = run_cli("-c", str(takahe), "exec", "--on", "here", "web", "--", "python", "manage.py", "shell", "-c", SETUP)
    assert made.code == 0 and "made" in made.stdout, made
    base = web_url(takahe, "here")
    status, served = post_image(base, "moved by lifeboat ✓")
    # the file is where Takahē put it, in a nested folder of the bucket, and is an object of it
    from toolkit.config import stackfile
    from toolkit.run.engine import Engine

    bucket = Engine(stackfile.load(takahe)).provider("here").state.objects / "media"
    files = {p.relative_to(bucket).as_posix(): p.read_bytes() for p in bucket.rglob("*") if p.is_file()}
    assert served in files.values() and all("/" in key for key in files), sorted(files)
    resources = run_cli(*lb, "status", "--on", "here").envelope["data"]["resources"]
    assert {r["name"]: r for r in resources if r["kind"] == "bucket"}["media"]["objects"] == len(files)
    (takahe.parent / "posted.json").write_text(json.dumps({"status": status["id"], "sha256":
                                                           hashlib.sha256(served).hexdigest(),
                                                           "url": status["media_attachments"][0]["url"]}))


def through_proxies(takahe: Path):
    """A fetcher of a medium's URL through each web host's TLS proxy (its certificate checked against the
    ACME server's roots): the bytes, the same from every proxy."""
    roots = (takahe.parent / "roots.pem").read_bytes()

    def fetch_all(base: str, url: str) -> bytes:
        assert url.startswith("https://takahe.lifeboat.test/"), url
        path = "/" + url.split("://", 1)[1].split("/", 1)[1]
        got = [fetch_verified(address, 8443, "takahe.lifeboat.test", roots, path) for address in PROXIES]
        assert [code for code, _, _ in got] == [200] * len(PROXIES), (url, [(c, b[:200]) for c, b, _ in got])
        assert len({body for _, body, _ in got}) == 1, url
        return got[0][1]

    return fetch_all


def moved(takahe: Path, source: str, target: str, fetcher=fetch) -> list[str]:
    """Migrate from ``source`` to ``target``; the status posted first is served there by every web host, its
    image the same bytes (once left root's 0600 by a copy onto a host, the app answered 500 for it). The
    target's web URLs."""
    posted = json.loads((takahe.parent / "posted.json").read_text())
    done = run_cli("-c", str(takahe), "-o", "json", "--yes", "migrate", "--from", source, "--to", target,
                   "--no-cutover", timeout=2400)
    assert done.code == 0, json.dumps(done.envelope, indent=1)[:6000] + logs_of(takahe)
    bases = web_urls(takahe, target)
    for base in bases:
        status = api(base, "GET", f"/api/v1/statuses/{posted['status']}")
        assert "moved by lifeboat" in status["content"]
        assert hashlib.sha256(fetcher(base, status["media_attachments"][0]["url"])).hexdigest() == posted["sha256"]
    return bases


def test_takahe_migrates_with_its_media(takahe):
    moved(takahe, "here", "spare")


def post_image(base: str, text: str, fetcher=fetch) -> tuple[dict, bytes]:
    """A status with a new image, posted through the Mastodon API; (the status, the image as served back)."""
    image = png()
    boundary = uuid.uuid4().hex
    form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"photo.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + image + f"\r\n--{boundary}--\r\n".encode()
    media = api(base, "POST", "/api/v2/media", body=form, ctype=f"multipart/form-data; boundary={boundary}")
    status = api(base, "POST", "/api/v1/statuses", body=json.dumps({"status": text,
                                                                     "media_ids": [media["id"]]}).encode(),
                 ctype="application/json")
    return status, fetcher(base, status["media_attachments"][0]["url"])


def test_takahe_migrates_onto_bare_metal_and_runs_as_its_account(takahe):
    fetcher = through_proxies(takahe)
    bases = moved(takahe, "spare", "colo", fetcher)
    assert len(bases) == 2, bases  # one web replica on each web host
    # posted through the second web host (no media folder there: the S3 API of the gateway on the first),
    # served by the proxies of both from the bucket; the status read back through the first
    status, served = post_image(bases[1], "written on bare metal", fetcher)
    assert api(bases[0], "GET", f"/api/v1/statuses/{status['id']}")["content"] == status["content"]
    (takahe.parent / "posted-colo.json").write_text(json.dumps({"status": status["id"], "content": status["content"],
                                                                "sha256": hashlib.sha256(served).hexdigest()}))
    from toolkit.config import stackfile
    from toolkit.run.engine import Engine

    colo = Engine(stackfile.load(takahe)).provider("colo")
    bucket = Path(colo.spec("web1").root) / "objects" / "media"  # the lab's hosts are this machine
    files = [p for p in bucket.rglob("*") if p.is_file()]
    assert any(p.read_bytes() == served for p in files)
    assert {p.owner() for p in files} == {"lifeboat-app"}, {str(p): p.owner() for p in files}
    assert len(files) == len({o.key for o in colo.objects().list("media")})


def test_takahe_fails_over_from_its_backup_with_its_hosts_gone(takahe, ssh_lab):
    """Backed up from bare metal (sealed, into the spare target's store), then every SSH host drops off the
    network; `failover --to here` brings Takahē up from the backup alone: both statuses and their images,
    the one migrated there and the one written on bare metal, are served by the app on its new home."""
    lb = ["-c", str(takahe), "-o", "json", "--yes"]
    saved = run_cli(*lb, "backup", "--from", "colo", timeout=1800)
    assert saved.code == 0, saved
    posted = [json.loads((takahe.parent / name).read_text()) for name in ("posted.json", "posted-colo.json")]
    try:
        for host in ssh_lab.hosts:  # the hosts are gone
            host.crash()
        assert run_cli(*lb, "status", "--on", "colo").code == 5
        over = run_cli(*lb, "failover", "--to", "here", timeout=2400)
        assert over.code == 0, json.dumps(over.envelope, indent=1)[:6000] + logs_of(takahe)
        assert over.envelope["data"]["backup"] == saved.envelope["data"]["backup"]
        base = web_url(takahe, "here")
        for one in posted:
            status = api(base, "GET", f"/api/v1/statuses/{one['status']}")
            assert status["content"] == one.get("content", status["content"]) and status["media_attachments"]
            # here (no proxy) Takahē serves its media itself, from the bucket the backup filled
            assert hashlib.sha256(fetch(base, status["media_attachments"][0]["url"])).hexdigest() == one["sha256"]
    finally:
        for host in ssh_lab.hosts:
            if host.process is None:
                host.start(ssh_lab.authorized_keys)
