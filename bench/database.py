"""Database move benchmark: Lifeboat's database copy (the database step of `migrate`: pg_dump streamed
into pg_restore, then row counts and per-table digests on both sides) against what an engineer would type:
`pg_dump -Fc | pg_restore` and `pg_dump -Fd -j N` + `pg_restore -j N`, same source and target clusters,
same run, medians over BENCH_RUNS (5), reported as ratios. Not a test: nothing asserts a time.

The two clusters are two `local` targets of a small stack (Lifeboat starts them); the source is filled
with chirp-like rows (text, unicode, jsonb, bytea, an index) up to BENCH_DB_MB (200; the issue's 1 GB with
BENCH_PROFILE=full). Writes bench/results/database.json (database-PROFILE.json for another profile).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import measure, save_results  # noqa: E402 - after the path is set

RUNS = int(os.environ.get("BENCH_RUNS", "5"))
JOBS = 4

STACK = """version: 1
name: dbbench
domain: dbbench.lifeboat.test
services:
  web: {{role: web, build: {app}, command: ["python3", "serve.py"], port: 8000}}
postgres: {{version: 15, database: bench}}
providers:
  a: {{type: local, state_dir: state/a}}
  b: {{type: local, state_dir: state/b}}
"""

FILL = """
CREATE TABLE IF NOT EXISTS users (id bigserial PRIMARY KEY, name text NOT NULL, bio text, prefs jsonb);
CREATE TABLE IF NOT EXISTS posts (id bigserial PRIMARY KEY, user_id bigint NOT NULL REFERENCES users(id),
    body text NOT NULL, meta jsonb, thumb bytea, created timestamptz NOT NULL DEFAULT now());
CREATE INDEX IF NOT EXISTS posts_user ON posts (user_id, created);
INSERT INTO users (name, bio, prefs)
    SELECT 'user ' || i || ' Zoë ☕', repeat('bio text ', 8), jsonb_build_object('lang', 'fr', 'n', i)
    FROM generate_series(1, 10000) i;
"""

BATCH = """
INSERT INTO posts (user_id, body, meta, thumb)
    SELECT 1 + (i % 10000), 'post ' || i || ' — naïve café 日本 😀 ' || md5(i::text) || repeat(' lorem', 20),
           jsonb_build_object('likes', i % 97, 'tags', jsonb_build_array('a', 'b', i % 7)),
           decode(md5(i::text) || md5((i + 1)::text), 'hex')
    FROM generate_series({start}, {end}) i;
"""


def main() -> int:
    import psycopg

    from toolkit.config import stackfile
    from toolkit.run.engine import Engine

    size_mb = int(os.environ.get("BENCH_DB_MB", "1024" if os.environ.get("BENCH_PROFILE") == "full" else "200"))
    work = Path(tempfile.mkdtemp(prefix="lifeboat-dbbench-", dir="/tmp"))
    work.chmod(0o755)
    app = work / "app"
    app.mkdir()
    (app / "serve.py").write_text((REPO / "bench" / "tiny_app.py").read_text())
    stack = work / "lifeboat.yml"
    stack.write_text(STACK.format(app=app))
    lifeboat = [sys.executable, "-m", "toolkit.cli", "-c", str(stack), "-o", "json", "--yes"]
    results: dict = {"runs": RUNS, "jobs": JOBS}
    try:
        for target in ("a", "b"):
            subprocess.run([*lifeboat, "up", "--on", target], check=True, capture_output=True, cwd=REPO)
        engine = Engine(stackfile.load(stack))
        src_url = engine.provider("a").database().connection_url().reveal_text()
        dst_url = engine.provider("b").database().connection_url().reveal_text()
        with psycopg.connect(src_url, autocommit=True) as conn:
            conn.execute(FILL)
            start, step = 1, 200_000
            while conn.execute("SELECT pg_database_size(current_database())").fetchone()[0] < size_mb << 20:
                conn.execute(BATCH.format(start=start, end=start + step - 1))
                start += step
            conn.execute("ANALYZE")
            size, rows = conn.execute("SELECT pg_database_size(current_database()), (SELECT count(*) FROM posts)"
                                      ).fetchone()
        results["database"] = {"bytes": size, "posts": rows}
        print(f"bench: source database {size / 1e6:.0f} MB, {rows} posts", file=sys.stderr)
        bindir = Path(subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True).stdout.strip() or
                      "/usr/lib/postgresql/15/bin")
        if not (bindir / "pg_dump").exists():
            bindir = Path("/usr/lib/postgresql/15/bin")
        dumpdir = work / "dumpdir"
        cases = {
            "lifeboat": [sys.executable, str(REPO / "bench" / "lbdb.py"), str(stack)],
            "pg_dump -Fc | pg_restore": ["sh", "-c", f'"{bindir}/pg_dump" -Fc -d "$1" | "{bindir}/pg_restore" '
                                                     '--clean --if-exists --no-owner -d "$2"', "sh", src_url, dst_url],
            f"pg_dump -Fd -j {JOBS} + pg_restore -j {JOBS}": [
                "sh", "-c", f'rm -rf "$3" && "{bindir}/pg_dump" -Fd -j {JOBS} -f "$3" -d "$1" && '
                            f'"{bindir}/pg_restore" --clean --if-exists --no-owner -j {JOBS} -d "$2" "$3" && rm -rf "$3"',
                "sh", src_url, dst_url, str(dumpdir)],
        }
        samples: dict[str, list] = {name: [] for name in cases}
        for run in range(RUNS):
            names = list(cases)
            for name in names[run % len(names):] + names[:run % len(names)]:  # alternate, each first in turn
                sample = measure(cases[name])
                samples[name].append(sample)
                print(f"bench: {name} run {run + 1}: {sample['wall']:.2f} s", file=sys.stderr)
        out = {}
        for name, got in samples.items():
            out[name] = {"wall_s": round(statistics.median(s["wall"] for s in got), 3),
                         "cpu_s": round(statistics.median(s["cpu"] for s in got), 3),
                         "peak_rss_mb": round(max(s["rss_mb"] for s in got), 1)}
        fastest_raw = min(v["wall_s"] for k, v in out.items() if k != "lifeboat")
        results["tools"] = out
        results["ratio_to_fastest_raw"] = round(out["lifeboat"]["wall_s"] / fastest_raw, 2)
        results["lifeboat_report"] = json.loads(samples["lifeboat"][-1]["stdout"])
    finally:
        for target in ("b", "a"):
            subprocess.run([*lifeboat, "destroy", "--on", target], capture_output=True, cwd=REPO)
        shutil.rmtree(work, ignore_errors=True)
    profile = os.environ.get("BENCH_PROFILE", "quick")
    save_results("database" if profile == "quick" else f"database-{profile}", results,
                 {k: results[k] for k in ("database", "tools", "ratio_to_fastest_raw")})
    return 0


if __name__ == "__main__":
    sys.exit(main())
