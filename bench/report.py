"""Write BENCHMARKS.md from bench/results/*.json (what `make bench` measured on this machine)."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"


def load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def failover_section(failover: dict) -> list[str]:
    counts = failover["data"]["stats"]
    shown = ", ".join(f"{v} {k}" for k, v in counts.items())
    size = failover["data"].get("database_bytes")
    lines = [f"## Failover RTO: chirp restored from its backup alone (profile {failover['profile']})", "",
             f"chirp on the embedded default ({shown}"
             + (f"; database {size / 1e6:.0f} MB on disk" if size else "")
             + "), backed up from one local target into the other's object store (sealed); the first target "
             "destroyed; `lifeboat failover` then restores, verifies, deploys and switches DNS. "
             + (f"Medians over {failover['runs']} runs" if failover["runs"] > 1 else "One run")
             + f" from the same backup (taken in {failover['data']['backup_seconds']:.1f} s).", "",
             "| step | seconds |", "|---|---|"]
    lines += [f"| {step} | {seconds} |" for step, seconds in failover["steps"].items()]
    lines += ["", f"**RTO {failover['rto_s']} s** (the command: {failover['command_s']} s; goal < 120 s for a "
              "1 GB database and 10,000 media objects).", ""]
    return lines


def main() -> int:
    lines = ["# Benchmarks", "",
             "Measured by `make bench` (bench/*.py) on one machine, every tool in the same run on the same data;",
             "medians over the runs given. Ratios, not absolute numbers, are the point: they compare Lifeboat",
             "with what an engineer would otherwise use. Nothing here is a timed test.", "",
             f"Machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}.", ""]
    objects = load("objects")
    if objects:
        data = objects["data"]
        lines += ["## Object copy: Lifeboat vs `rclone copy --checksum`", "",
                  f"{data['objects']} objects, {data['bytes'] / 1e6:.0f} MB (profile {objects['profile']}: small "
                  "1-64 KB, medium 1-8 MB, large), into an empty target each run; "
                  f"{objects['transfers']} transfers for both; {objects['rclone']}; {objects['runs']} runs.", "",
                  "| pair | tool | wall s | MB/s | CPU s | CPU s/GB | peak RSS MB |", "|---|---|---|---|---|---|---|"]
        for pair, got in objects["pairs"].items():
            for tool in ("lifeboat", "rclone"):
                r = got[tool]
                lines.append(f"| {pair} | {tool} | {r['wall_s']} | {r['mb_per_s']} | {r['cpu_s']} | "
                             f"{r['cpu_s_per_gb']} | {r['peak_rss_mb']} |")
        lines += ["", "| pair | throughput vs rclone (higher is better) | client CPU per GB vs rclone (lower is better) |",
                  "|---|---|---|"]
        for pair, got in objects["pairs"].items():
            lines.append(f"| {pair} | {got['throughput_ratio']}x | {got['cpu_per_gb_ratio']}x |")
        lines.append("")
    for name in ("database", "database-full"):
        database = load(name)
        if not database:
            continue
        db = database["database"]
        lines += [f"## Database move: Lifeboat vs the PostgreSQL tools ({db['bytes'] / 1e6:.0f} MB)", "",
                  f"Source {db['bytes'] / 1e6:.0f} MB ({db['posts']} chirp-like posts: text, unicode, jsonb, bytea, an "
                  f"index) on one local cluster, target another; {database['runs']} runs. Lifeboat's time includes "
                  "verifying every table (row counts and digests on both sides).", "",
                  "| tool | wall s | CPU s (client processes) | peak RSS MB |", "|---|---|---|---|"]
        for tool, r in database["tools"].items():
            shown = tool.replace("|", "\\|")
            lines.append(f"| {shown} | {r['wall_s']} | {r['cpu_s']} | {r['peak_rss_mb']} |")
        lines += ["", f"Lifeboat / fastest raw variant: **{database['ratio_to_fastest_raw']}x** (goal <= 1.1x).", ""]
    for name in ("failover", "failover-full"):
        failover = load(name)
        if failover:
            lines += failover_section(failover)
    memory = load("memory")
    if memory:
        lines += ["## Peak memory with one large object", "",
                  f"One object of {memory['object_bytes'] / 1e6:.0f} MB copied into an empty target, each tool as its "
                  "own process (peak RSS from wait4, one run). Goal: under 200 MB.", "",
                  "| pair | lifeboat peak RSS MB | rclone peak RSS MB | lifeboat wall s | rclone wall s |",
                  "|---|---|---|---|---|"]
        for pair, got in memory["pairs"].items():
            lb, rc = got["lifeboat"], got["rclone"]
            lines.append(f"| {pair} | {lb['peak_rss_mb']} | {rc['peak_rss_mb']} | {lb['wall_s']} | {rc['wall_s']} |")
        lines.append("")
    startup = load("startup")
    if startup:
        lines += ["## Start-up", "", "| command | median ms | x `python -c pass` |", "|---|---|---|"]
        for name, r in startup["results"].items():
            lines.append(f"| {name} | {r['median_s'] * 1000:.0f} | {r['ratio_to_floor']:.2f} |")
        lines.append("")
    notes = REPO / "bench" / "NOTES.md"
    if notes.exists():
        lines += [notes.read_text().strip(), ""]
    (REPO / "BENCHMARKS.md").write_text("\n".join(lines))
    print(f"written {REPO / 'BENCHMARKS.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
