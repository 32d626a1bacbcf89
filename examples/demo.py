"""`make demo`: deploy chirp on the local provider, seed it, show status, fetch a page and a media file
from the running app, migrate it to a second target, back that up, lose it, fail over from the backup,
and tear it all down. Runs the `lifeboat` CLI exactly as a user would."""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STACK = REPO / "examples" / "chirp" / "lifeboat.yml"
LIFEBOAT = [str(Path(sys.executable).with_name("lifeboat")), "--config", str(STACK)]


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", file=sys.stderr, flush=True)


def lifeboat(*args: str, capture: bool = False, check: bool = True) -> subprocess.CompletedProcess:
    print("$ lifeboat " + " ".join(args), file=sys.stderr, flush=True)
    proc = subprocess.run([*LIFEBOAT, *args], text=True, stdout=subprocess.PIPE if capture else None)
    if check and proc.returncode != 0:
        raise SystemExit(f"demo: `lifeboat {' '.join(args)}` exited with {proc.returncode}")
    return proc


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=15) as resp:  # noqa: S310 - the app we just started on loopback
        return resp.read()


def main() -> int:
    started = time.monotonic()
    # The key that seals backups: the operator's, in the environment (never in argv or the stack file).
    os.environ.setdefault("LIFEBOAT_BACKUP_KEY", secrets.token_urlsafe(32))
    say("Lifeboat demo: chirp (a small social app) on the local provider")
    lifeboat("validate")
    for target in ("here", "spare"):
        leftover = lifeboat("--output", "json", "status", "--on", target, capture=True, check=False)
        if json.loads(leftover.stdout)["data"].get("deployed"):
            say(f"a previous demo left chirp running on {target}: tearing it down first")
            lifeboat("--yes", "destroy", "--on", target, "--delete-backups")
    try:
        say("plan, then up: PostgreSQL, Redis, media store, secrets, web and worker, DNS zone")
        lifeboat("plan", "--on", "here")
        lifeboat("up", "--on", "here")

        say("seed: users, posts, follows and media files of mixed sizes and names")
        lifeboat("exec", "--on", "here", "web", "--", "python", "-m", "chirp", "seed",
                 "--users", "200", "--posts", "2000", "--media", "30")

        say("status")
        status = json.loads(lifeboat("--output", "json", "status", "--on", "here", capture=True).stdout)
        lifeboat("status", "--on", "here")
        url = next(s["url"] for s in status["data"]["services"] if s["service"] == "web")

        say(f"fetch a page and a media file from {url}")
        page = fetch(url + "/").decode()
        posts = re.findall(r"<li><b>(@[^<]+)</b> ([^<]{0,60})", page)
        print(f"GET /  -> {len(page)} bytes, {len(re.findall('<li>', page))} posts; first: "
              f"{posts[0][0]} {posts[0][1]!r}", file=sys.stderr)
        recent = json.loads(fetch(url + "/api/posts?limit=200"))
        key = next(p["media"] for p in recent if p["media"])
        body = fetch(url + "/media/" + urllib.parse.quote(key))
        print(f"GET /media/{key} -> {len(body)} bytes, sha256 {hashlib.sha256(body).hexdigest()[:16]}...",
              file=sys.stderr)
        stats = json.loads(fetch(url + "/api/stats"))
        print(f"GET /api/stats -> {stats}", file=sys.stderr)

        say("migrate to the second target: secrets, every row, every media file, the cache; verified")
        lifeboat("--yes", "migrate", "--from", "here", "--to", "spare")
        status = json.loads(lifeboat("--output", "json", "status", "--on", "spare", capture=True).stdout)
        url = next(s["url"] for s in status["data"]["services"] if s["service"] == "web")
        moved = json.loads(fetch(url + "/api/stats"))
        print(f"GET {url}/api/stats -> {moved}", file=sys.stderr)
        if moved != stats:
            raise SystemExit(f"demo: the migrated copy says {moved}, the source said {stats}")

        say("backup: spare's database, media, secrets and stack file, sealed, into here's object store")
        lifeboat("--yes", "backup", "--from", "spare")
        lifeboat("backups", "list")
        say("spare is gone (destroyed with everything on it): fail over to here from the backup alone")
        lifeboat("--yes", "destroy", "--on", "spare")
        over = json.loads(lifeboat("--yes", "--output", "json", "failover", "--to", "here", capture=True).stdout)
        data = over["data"]
        print(f"failover from backup {data['backup']}: RPO {data['rpo_seconds']:.0f} s, RTO {data['rto_seconds']:.1f} s",
              file=sys.stderr)
        status = json.loads(lifeboat("--output", "json", "status", "--on", "here", capture=True).stdout)
        url = next(s["url"] for s in status["data"]["services"] if s["service"] == "web")
        restored = json.loads(fetch(url + "/api/stats"))
        print(f"GET {url}/api/stats -> {restored}", file=sys.stderr)
        if restored != stats:
            raise SystemExit(f"demo: the restored copy says {restored}, the backup was of {stats}")
    finally:
        say("destroy: stop every process, remove every file")
        for target in ("spare", "here"):
            lifeboat("--yes", "destroy", "--on", target, "--delete-backups", check=False)
        for name in ("migrate-here-spare", "backup-spare-here", "failover-here"):
            shutil.rmtree(STACK.parent / ".lifeboat" / name, ignore_errors=True)
        try:
            (STACK.parent / ".lifeboat").rmdir()
        except OSError:
            pass
    left = STACK.parent / ".lifeboat"
    if left.exists():
        raise SystemExit(f"demo: {left} was left behind")
    say(f"done in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
