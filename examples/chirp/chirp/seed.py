"""Seed chirp with deterministic, awkward data: unicode, jsonb, bytea, media of mixed sizes and names."""

import io
import json
import random
from datetime import UTC, datetime, timedelta

from . import db, storage

NAMES = ["Ada", "Zoë", "José", "Björk", "Søren", "Наталья", "李雷", "さくら", "Ωmega", "O'Brien", "Dr. \"Quote\"",
         "emoji 🐦", "tab\there", "back\\slash"]
WORDS = ["hello", "world", "chirp", "lifeboat", "über", "naïve", "café", "日本", "😀", "🚀", "<b>bold</b>",
         "'quoted'", "%s", "NULL", "\\N", "line\nbreak", "tab\tchar", "—", "∑", "a" * 40]
MEDIA_NAMES = ["photo.jpg", "my photo.png", "café ☕.jpg", "レポート.pdf", "emoji 🐦 bird.gif", "a+b=c.txt",
               "percent%20name.bin", "semi;colon.dat", "#hash?.txt", "empty.bin"]


def media_sizes(count: int, rng: random.Random, max_kb: int, large_mb: int) -> list[int]:
    sizes = []
    for i in range(count):
        if i == 0:
            sizes.append(0)
        elif i == 1:
            sizes.append(1)
        elif i == 2 and large_mb:
            sizes.append(large_mb << 20)
        else:
            sizes.append(rng.randint(1, max_kb << 10))
    return sizes


def random_bytes(rng: random.Random, size: int) -> io.BytesIO:
    return io.BytesIO(rng.randbytes(size))


class Stream:
    """Deterministic bytes without holding a large object in memory."""

    def __init__(self, rng: random.Random, size: int):
        self.rng, self.left = rng, size

    def read(self, n: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        n = self.left if n is None or n < 0 else min(n, self.left)
        self.left -= n
        return self.rng.randbytes(n)


def run(users: int, posts: int, media: int, seed: int = 1, max_kb: int = 256, large_mb: int = 0) -> dict:
    rng = random.Random(seed)
    db.migrate()
    c = db.conn()
    existing = c.execute("SELECT count(*) FROM users").fetchone()[0]
    if existing:
        return {"seeded": False, "reason": f"already has {existing} users"}
    base = datetime(2021, 1, 9, tzinfo=UTC)
    with c.transaction():
        with c.cursor() as cur, cur.copy(
                "COPY users (handle, display_name, bio, avatar, settings, created_at) FROM STDIN") as copy:
            for i in range(users):
                name = f"{rng.choice(NAMES)} {i}"
                bio = " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 12)))
                avatar = rng.randbytes(rng.randint(0, 64)) if i % 3 else None
                settings = {"lang": rng.choice(["en", "de", "ja", "ru"]), "n": i, "nested": {"x": [1, "ü", None]},
                            "flags": rng.sample(["a", "b", "c", "d"], 2)}
                copy.write_row((f"user{i:05d}", name, bio, avatar, json.dumps(settings, ensure_ascii=False),
                                base + timedelta(seconds=i)))
        ids = [r[0] for r in c.execute("SELECT id FROM users ORDER BY id").fetchall()]
        follows = set()
        for uid in ids:
            for other in rng.sample(ids, min(len(ids), 6)):
                if other != uid:
                    follows.add((uid, other))
        with c.cursor() as cur, cur.copy("COPY follows (follower_id, followee_id) FROM STDIN") as copy:
            for pair in sorted(follows):
                copy.write_row(pair)
        store = storage.media()
        media_keys = []
        for i, size in enumerate(media_sizes(media, rng, max_kb, large_mb)):
            name = MEDIA_NAMES[i % len(MEDIA_NAMES)] if size else "empty.bin"
            key = f"media/seed-{i:05d}/{name}"
            got_size, sha = store.put(key, Stream(rng, size))
            owner = rng.choice(ids) if ids else None
            c.execute("INSERT INTO media (key, size, sha256, content_type, uploaded_by) VALUES (%s, %s, %s, %s, %s)",
                      (key, got_size, sha, "application/octet-stream", owner))
            media_keys.append(key)
        with c.cursor() as cur, cur.copy(
                "COPY posts (user_id, body, media_key, meta, created_at) FROM STDIN") as copy:
            for i in range(posts):
                body = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 20)))
                mkey = media_keys[i % len(media_keys)] if media_keys and i % 4 == 0 else None
                meta = {"client": rng.choice(["web", "ios", "android"]), "i": i, "tags": [rng.choice(WORDS)]}
                copy.write_row((rng.choice(ids), body, mkey, json.dumps(meta, ensure_ascii=False),
                                base + timedelta(minutes=i)))
    return {"seeded": True, "users": users, "posts": posts, "follows": len(follows), "media": len(media_keys)}
