"""python -m chirp web|worker|migrate|seed|stats"""

import argparse
import json
import os
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="chirp")
    sub = parser.add_subparsers(dest="cmd", required=True)
    web = sub.add_parser("web", help="migrate, then serve HTTP with gunicorn on $PORT")
    web.add_argument("--workers", type=int, default=int(os.environ.get("CHIRP_WORKERS", "2")))
    sub.add_parser("worker", help="fan new posts out to cached timelines")
    sub.add_parser("migrate", help="create the schema")
    seed = sub.add_parser("seed", help="fill the database and the media store")
    seed.add_argument("--users", type=int, default=50)
    seed.add_argument("--posts", type=int, default=500)
    seed.add_argument("--media", type=int, default=20)
    seed.add_argument("--seed", type=int, default=1)
    seed.add_argument("--max-kb", type=int, default=256)
    seed.add_argument("--large-mb", type=int, default=0, help="make one media object this many MB")
    sub.add_parser("stats", help="row counts as JSON")
    args = parser.parse_args(argv)

    if args.cmd == "web":
        from . import db

        db.migrate()
        bind = f"{os.environ.get('CHIRP_HOST') or os.environ.get('LIFEBOAT_BIND', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
        gunicorn = [sys.executable, "-m", "gunicorn", "--bind", bind, "--workers", str(args.workers),
                    "--access-logfile", "-", "--graceful-timeout", "10", "chirp.web:app"]
        os.execv(sys.executable, gunicorn)
    if args.cmd == "worker":
        from . import worker

        return worker.main()
    if args.cmd == "migrate":
        from . import db

        db.migrate()
        return 0
    if args.cmd == "seed":
        from . import seed as seeding

        print(json.dumps(seeding.run(args.users, args.posts, args.media, args.seed, args.max_kb, args.large_mb)))
        return 0
    if args.cmd == "stats":
        from . import db

        c = db.conn()
        out = {t: c.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # noqa: S608 - fixed names
               for t in ("users", "posts", "follows", "media")}
        print(json.dumps(out))
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
