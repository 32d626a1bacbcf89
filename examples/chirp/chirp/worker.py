"""The background worker: fans new posts out to followers' cached timelines."""

import json
import signal
import sys
import time

from . import db, timeline

running = True


def stop(*_):
    global running
    running = False


def main() -> int:
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    db.migrate()
    client = timeline.redis()
    print("chirp worker: ready", flush=True)
    while running:
        if client is None:
            time.sleep(1)
            continue
        try:
            item = client.brpop(timeline.FANOUT_QUEUE, timeout=1)
        except Exception as exc:  # redis restarting: wait and retry
            print(f"chirp worker: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            time.sleep(1)
            continue
        if item is None:
            continue
        job = json.loads(item[1])
        timeline.fanout(int(job["post"]))
    print("chirp worker: stopped", flush=True)
    return 0
