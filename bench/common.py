"""What the benchmark scripts share: running one tool as its own process and measuring it."""

from __future__ import annotations

import os
import subprocess
import time


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
