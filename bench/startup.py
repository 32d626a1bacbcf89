"""Start-up benchmark: `lifeboat --help`, `lifeboat validate`, `lifeboat plan --on here` against a bare
Python interpreter start (the floor any Python CLI pays), side by side in the same run.

Reports medians over N runs and the ratio to the floor; writes bench/results/startup.json. This is a
measurement, not a test: nothing here asserts a time.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RUNS = int(os.environ.get("BENCH_RUNS", "15"))


def timed(argv: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    elapsed = time.perf_counter() - start
    if proc.returncode not in (0,):
        raise SystemExit(f"bench: {' '.join(argv)} exited with {proc.returncode}")
    return elapsed


def main() -> int:
    lifeboat = str(Path(sys.executable).with_name("lifeboat"))
    with tempfile.TemporaryDirectory() as tmp:
        stack = Path(tmp) / "lifeboat.yml"
        text = (REPO / "examples" / "chirp" / "lifeboat.yml").read_text()
        stack.write_text(text.replace("build: .", f"build: {REPO / 'examples' / 'chirp'}"))
        cases = {
            "python -c pass (floor)": [sys.executable, "-c", "pass"],
            "lifeboat --help": [lifeboat, "--help"],
            "lifeboat validate": [lifeboat, "-c", str(stack), "validate"],
            "lifeboat plan --on here": [lifeboat, "-c", str(stack), "plan", "--on", "here"],
        }
        results = {}
        for name, argv in cases.items():
            timed(argv, Path(tmp))  # warm the page cache
            samples = [timed(argv, Path(tmp)) for _ in range(RUNS)]
            results[name] = {"median_s": statistics.median(samples), "min_s": min(samples),
                             "max_s": max(samples), "runs": RUNS}
    floor = results["python -c pass (floor)"]["median_s"]
    print(f"{'command':<28} {'median':>9} {'min':>9} {'x floor':>8}")
    for name, r in results.items():
        r["ratio_to_floor"] = r["median_s"] / floor
        print(f"{name:<28} {r['median_s'] * 1000:8.1f}ms {r['min_s'] * 1000:8.1f}ms {r['ratio_to_floor']:7.2f}x")
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "startup.json").write_text(json.dumps({
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count()},
        "results": results}, indent=2))
    print(f"written to {out / 'startup.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
