"""A target without room: the migration refuses before copying anything when the space it needs is not
there, and a disk that fills up mid-copy stops it with a clear error while the source keeps serving; once
there is room, --resume completes. The target's state lives on a real, small tmpfs mounted for the test."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from toolkit.config import stackfile
from toolkit.run.engine import Engine

from .conftest import run_cli, run_cli_stalled, seeded_chirp
from .test_migrate_local import objects, rows

LARGE_MB = 40


def mount_tmpfs(path: Path, size_mb: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0755", "tmpfs", str(path)],
                          capture_output=True, text=True)
    assert done.returncode == 0, f"mounting a tmpfs needs root (CI runs as root): {done.stderr}"


def unmount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("migrate-space")
    root.chmod(0o755)  # PostgreSQL runs as the lifeboat account on the target's tmpfs
    extra = """  tiny:
    type: local
    state_dir: tiny/state
    address: 127.0.0.23
  roomy:
    type: local
    state_dir: roomy/state
    address: 127.0.0.24
"""
    try:
        with seeded_chirp(root, extra, users=30, posts=300, media=6, large_mb=LARGE_MB,
                          targets=("tiny", "roomy")) as path:
            mount_tmpfs(root / "tiny", 96)
            mount_tmpfs(root / "roomy", 400)
            yield path
    finally:
        unmount(root / "tiny")
        unmount(root / "roomy")


def test_too_small_a_target_is_refused_before_anything_is_copied(stack):
    lb = ["-c", str(stack), "-o", "json", "--yes"]
    plan = run_cli(*lb, "migrate", "--from", "old", "--to", "tiny", "--dry-run")
    assert plan.code == 0 and plan.envelope["data"]["space"]["enough"] is False, plan
    refused = run_cli(*lb, "migrate", "--from", "old", "--to", "tiny")
    assert refused.code == 1, refused
    problem = refused.envelope["errors"][0]
    assert problem["code"] == "migrate.no_space" and "not enough space" in problem["message"], problem
    assert str(stack.parent / "tiny" / "state") in problem["message"] and "Nothing was copied" in problem["message"]
    made = sorted(str(p.relative_to(stack.parent / "tiny")) for p in (stack.parent / "tiny").rglob("*"))
    assert made in ([], ["state", "state/lock"]), f"nothing but the lock may be created on the target: {made}"
    assert run_cli(*lb, "status", "--on", "old").envelope["data"]["healthy"] is True


def test_a_disk_that_fills_up_mid_copy_stops_cleanly_and_resume_completes(stack):
    lb = ["-c", str(stack), "-o", "json", "--yes"]
    mount = stack.parent / "roomy"
    filler = mount / "filler"
    def fill_the_disk() -> None:  # someone else fills the disk meanwhile
        with open(filler, "wb") as out:
            while shutil.disk_usage(mount).free > (256 << 10):
                try:
                    out.write(b"\0" * (1 << 20))
                    out.flush()
                except OSError:
                    break

    failed = run_cli_stalled(*lb, "migrate", "--from", "old", "--to", "roomy", point="media:mid",
                             meanwhile=fill_the_disk, seconds=3)
    assert failed.code == 1, failed
    problem = failed.envelope["errors"][0]
    assert problem["code"] == "migrate.no_space" and "ran out of space" in problem["message"], problem
    assert "--resume" in problem["hint"]
    assert run_cli(*lb, "status", "--on", "old").envelope["data"]["healthy"] is True, "the source must keep serving"
    assert not list(mount.rglob(".tmp/w-*")), "the failed write must not stay behind"

    filler.unlink()
    resumed = run_cli(*lb, "migrate", "--from", "old", "--to", "roomy", "--resume")
    assert resumed.code == 0, resumed
    engine = Engine(stackfile.load(stack))
    old, roomy = engine.provider("old"), engine.provider("roomy")
    assert rows(old) == rows(roomy)
    assert objects(old.objects()) == objects(roomy.objects()) and len(objects(roomy.objects())) == 6
