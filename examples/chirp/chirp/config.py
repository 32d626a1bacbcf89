import os


def database_url() -> str:
    url = os.environ.get("DATABASE_URL")
    if not url:
        raise SystemExit("chirp: DATABASE_URL is not set")
    return url


def redis_url() -> str | None:
    return os.environ.get("REDIS_URL") or None


def media_url() -> str:
    url = os.environ.get("BUCKET_MEDIA_URL")
    if not url:
        raise SystemExit("chirp: BUCKET_MEDIA_URL is not set")
    return url
