"""What the benchmark scripts share: running one tool as its own process and measuring it."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
REPO = RESULTS.parent.parent


def byte_compile() -> None:
    """Lifeboat's own modules byte-compiled, as an installed copy has them (pip compiles what it installs).
    A checkout run with PYTHONDONTWRITEBYTECODE set (this machine's environment does) compiles toolkit/
    and providers/ from source in every process it starts otherwise: 60 ms of each start-up, measured."""
    import compileall

    for folder in ("toolkit", "providers", "bench"):
        compileall.compile_dir(REPO / folder, quiet=1)


byte_compile()  # (every benchmark script imports this module before it starts anything)


def measure(argv: list[str], env: dict | None = None) -> dict:
    """Run ``argv``; its wall time, user+sys CPU and peak RSS (its own and its children's, from wait4)."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    out, err = proc.stdout.read(), proc.stderr.read()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"bench: {' '.join(argv[:3])} exited {code}: {err.decode(errors='replace')[-4000:]}")
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss_mb": usage.ru_maxrss / 1024,
            "stdout": out.decode(errors="replace")}


def empty_host_target(root: Path, user: str) -> None:
    """An SSH host's target as both tools find it before a run: nothing in it but the folder each one
    writes into, owned by the lab's user: Lifeboat's bucket in its layout (lb/), rclone's folder (rc/).
    migrate's prepare step makes the target's buckets before its media step, as the S3 targets' bucket is
    made before each run."""
    import shutil

    from toolkit.stores.dirstore import DirectoryStore

    for child in root.iterdir():
        shutil.rmtree(child)
    DirectoryStore(root / "lb").create_bucket("media")  # (the lab's host is this machine)
    (root / "rc").mkdir()
    subprocess.run(["chown", "-R", user, str(root)], check=True)
    os.sync()  # what the clearing wrote (and the blocks it freed) goes to disk now, not during the next run


def save_results(name: str, results: dict, shown: dict | None = None) -> None:
    """Write ``results`` to bench/results/NAME.json (bench/report.py reads them) and print ``shown`` (default:
    all of it)."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results if shown is None else shown, indent=2))
