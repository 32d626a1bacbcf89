"""Home timelines: post ids per user in Redis lists, rebuilt from PostgreSQL on a miss."""

import json

from . import config, db

TIMELINE_LEN = 400
FANOUT_QUEUE = "chirp:fanout"

_client = None


def redis():
    global _client
    url = config.redis_url()
    if url is None:
        return None
    if _client is None:
        import redis as redis_lib

        _client = redis_lib.Redis.from_url(url, socket_timeout=5)
    return _client


def key(user_id: int) -> str:
    return f"chirp:timeline:{user_id}"


def rebuild(user_id: int) -> list[int]:
    rows = db.conn().execute(
        "SELECT p.id FROM posts p JOIN follows f ON f.followee_id = p.user_id "
        "WHERE f.follower_id = %s ORDER BY p.created_at DESC, p.id DESC LIMIT %s",
        (user_id, TIMELINE_LEN)).fetchall()
    ids = [r[0] for r in rows]
    client = redis()
    if client is not None:
        pipe = client.pipeline()
        pipe.delete(key(user_id))
        if ids:
            pipe.rpush(key(user_id), *ids)
        pipe.set(key(user_id) + ":built", "1")
        pipe.execute()
    return ids


def home(user_id: int, limit: int = 50) -> tuple[list[int], bool]:
    """Post ids of the home timeline and whether they came from the cache."""
    client = redis()
    if client is not None and client.exists(key(user_id) + ":built"):
        return [int(x) for x in client.lrange(key(user_id), 0, limit - 1)], True
    return rebuild(user_id)[:limit], False


def enqueue_fanout(post_id: int) -> None:
    client = redis()
    if client is not None:
        client.lpush(FANOUT_QUEUE, json.dumps({"post": post_id}))


def fanout(post_id: int) -> int:
    """Push a new post onto the cached timelines of its author's followers."""
    client = redis()
    if client is None:
        return 0
    rows = db.conn().execute(
        "SELECT f.follower_id FROM posts p JOIN follows f ON f.followee_id = p.user_id WHERE p.id = %s",
        (post_id,)).fetchall()
    pipe = client.pipeline()
    for (follower,) in rows:
        if client.exists(key(follower) + ":built"):
            pipe.lpush(key(follower), post_id)
            pipe.ltrim(key(follower), 0, TIMELINE_LEN - 1)
    pipe.execute()
    return len(rows)
