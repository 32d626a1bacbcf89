"""Schema and connections. The schema is created idempotently under an advisory lock."""

import threading

import psycopg

from . import config

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id bigserial PRIMARY KEY,
    handle text UNIQUE NOT NULL,
    display_name text NOT NULL,
    bio text NOT NULL DEFAULT '',
    avatar bytea,
    settings jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS posts (
    id bigserial PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES users(id),
    body text NOT NULL,
    media_key text,
    meta jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS posts_user_created ON posts (user_id, created_at DESC);
CREATE INDEX IF NOT EXISTS posts_created ON posts (created_at DESC, id DESC);
CREATE TABLE IF NOT EXISTS follows (
    follower_id bigint NOT NULL REFERENCES users(id),
    followee_id bigint NOT NULL REFERENCES users(id),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (follower_id, followee_id)
);
CREATE INDEX IF NOT EXISTS follows_followee ON follows (followee_id);
CREATE TABLE IF NOT EXISTS media (
    key text PRIMARY KEY,
    size bigint NOT NULL,
    sha256 text NOT NULL,
    content_type text NOT NULL DEFAULT 'application/octet-stream',
    uploaded_by bigint REFERENCES users(id),
    created_at timestamptz NOT NULL DEFAULT now()
);
"""

TRGM_INDEX = "CREATE INDEX IF NOT EXISTS posts_body_trgm ON posts USING gin (body gin_trgm_ops)"

_local = threading.local()


def connect() -> psycopg.Connection:
    return psycopg.connect(config.database_url(), autocommit=True, connect_timeout=10)


def conn() -> psycopg.Connection:
    """One connection per thread, reopened when it broke."""
    current = getattr(_local, "conn", None)
    if current is None or current.closed or current.broken:
        current = connect()
        _local.conn = current
    return current


def migrate() -> None:
    with connect() as c:
        c.execute("SELECT pg_advisory_lock(4242)")
        try:
            c.execute(SCHEMA)
            has_trgm = c.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'").fetchone()
            if has_trgm:
                c.execute(TRGM_INDEX)
        finally:
            c.execute("SELECT pg_advisory_unlock(4242)")
