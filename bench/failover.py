"""Failover RTO benchmark: chirp (the example stack) on the embedded default, seeded, backed up from one
local target ("spare") into the other's object store ("here"); spare is then destroyed (the host is gone)
and `lifeboat failover --to spare` restores everything onto a fresh spare from the backup alone: database
(verified), media (verified), secrets, deploy, DNS switch. Lifeboat's own RTO (from the start of the
failover to the verified target) and the time of each step, medians over BENCH_RUNS (5): after each run
the restored spare is destroyed again and the failover runs again from the same backup. The issue's goal:
RTO under 2 minutes for a 1 GB database and 10,000 media objects on a 2-core machine (BENCH_PROFILE=full);
the quick profile is smaller. Not a test: nothing asserts a time. Writes bench/results/failover.json
(failover-PROFILE.json for another profile).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import save_results  # noqa: E402 - after the path is set

RUNS = int(os.environ.get("BENCH_RUNS", "5"))
# users, posts, media objects (1 B - 64 KB, one large), the large one in MB
PROFILES = {"tiny": (200, 5000, 100, 4), "quick": (5000, 300_000, 2000, 64), "full": (20000, 3_000_000, 10000, 256)}


def lifeboat(stack: Path, *args: str, capture: bool = True) -> dict:
    argv = [str(Path(sys.executable).with_name("lifeboat")), "--config", str(stack), "--yes", "--output", "json", *args]
    proc = subprocess.run(argv, text=True, capture_output=True)
    if proc.returncode != 0:
        raise SystemExit(f"bench: `lifeboat {' '.join(args)}` exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return json.loads(proc.stdout) if capture else {}


def stats(stack: Path, target: str) -> dict:
    status = lifeboat(stack, "status", "--on", target)
    url = next(s["url"] for s in status["data"]["services"] if s["service"] == "web")
    with urllib.request.urlopen(url + "/api/stats", timeout=30) as resp:  # noqa: S310 - the app on loopback
        return json.loads(resp.read())


def database_bytes(stack: Path, target: str) -> int:
    """The database's size on disk (pg_database_size), as the provider reports it to `migrate --dry-run`."""
    from toolkit.config import stackfile
    from toolkit.run.engine import Engine

    return Engine(stackfile.load(stack)).provider(target).database().info().size_bytes


def main() -> int:
    profile = os.environ.get("BENCH_PROFILE", "quick")
    users, posts, media, large_mb = PROFILES[profile]
    os.environ.setdefault("LIFEBOAT_BACKUP_KEY", secrets.token_urlsafe(32))
    work = Path(tempfile.mkdtemp(prefix="lifeboat-bench-failover-", dir="/tmp"))
    work.chmod(0o755)
    app = work / "chirp"
    shutil.copytree(REPO / "examples" / "chirp", app, ignore=shutil.ignore_patterns(".lifeboat", "__pycache__"))
    stack = app / "lifeboat.yml"
    results: dict = {"profile": profile, "runs": RUNS, "data": {}, "steps": {}}
    try:
        print(f"bench: failover: chirp with {users} users, {posts} posts, {media} media ({profile})", file=sys.stderr)
        lifeboat(stack, "up", "--on", "spare")
        started = time.monotonic()
        lifeboat(stack, "exec", "--on", "spare", "web", "--", "python", "-m", "chirp", "seed", "--users", str(users),
                 "--posts", str(posts), "--media", str(media), "--max-kb", "64", "--large-mb", str(large_mb),
                 capture=False)
        print(f"bench: failover: seeded in {time.monotonic() - started:.0f} s", file=sys.stderr)
        before = stats(stack, "spare")
        db_bytes = database_bytes(stack, "spare")
        print(f"bench: failover: database {db_bytes / 1e6:.0f} MB on disk", file=sys.stderr)
        backup = lifeboat(stack, "backup", "--from", "spare")["data"]
        results["data"] = {"stats": before, "database_bytes": db_bytes, "backup_seconds": backup["seconds"],
                           "backup_steps": {s["step"]: {k: v for k, v in s.items() if k != "step"}
                                            for s in backup["steps"]}}
        lifeboat(stack, "destroy", "--on", "spare")  # the host is gone; its backup is what is left
        samples = []
        for run in range(RUNS):
            if run:
                lifeboat(stack, "destroy", "--on", "spare")
            t0 = time.monotonic()
            done = lifeboat(stack, "failover", "--to", "spare")["data"]
            wall = time.monotonic() - t0
            after = stats(stack, "spare")
            if after != before:
                raise SystemExit(f"bench: the restored chirp says {after}, the backup was of {before}")
            samples.append({"rto": done["rto_seconds"], "wall": wall,
                            "steps": {s["step"]: s.get("seconds", 0) for s in done["steps"]}})
            print(f"bench: failover run {run + 1}: RTO {done['rto_seconds']:.1f} s (command {wall:.1f} s)",
                  file=sys.stderr)
        results["rto_s"] = round(statistics.median(s["rto"] for s in samples), 2)
        results["command_s"] = round(statistics.median(s["wall"] for s in samples), 2)
        for step in samples[0]["steps"]:
            results["steps"][step] = round(statistics.median(s["steps"].get(step, 0) for s in samples), 2)
    finally:
        for target in ("spare", "here"):
            subprocess.run([str(Path(sys.executable).with_name("lifeboat")), "--config", str(stack), "--yes", "destroy",
                            "--on", target, "--delete-backups"], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    # the quick profile is make bench's; a run of another profile is kept beside it (BENCHMARKS.md shows both)
    save_results("failover" if profile == "quick" else f"failover-{profile}", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
